"""Hyper-parameter search over the classification head, the learning rate and where to freeze.

`search(data)` runs a keras-tuner search and returns the best values, ready for
`build_classifier(..., head_units=best["head_units"], dropout=best["dropout"])` and an optimizer
at `best["learning_rate"]`. The space (`ClassifierHyperModel`, `HeadHyperModel`):

- `head_units`: units of the hidden ReLU layer, one of `HEAD_UNITS` (0: no hidden layer);
- `dropout`: the rate before the predictions, `DROPOUT_RANGE` in steps of `DROPOUT_STEP`;
- `learning_rate`: Adam's, log-uniform in `LEARNING_RATE_RANGE`;
- `freeze_until` (only with `freeze_until_choices`): where the backbone starts to train.

One recipe. Trials optimise what `fine_tune` optimises: every model is compiled by
`compile_classifier` (Adam, categorical cross-entropy on one-hot labels with
`label_smoothing`, accuracy) and trained with the class weights of `class_weight`
(`training.class_weights` of the training set's class counts). Both default as in
`fine_tune` (0.1 and `"balanced"`).

Multi-label data (`data.multi_label`: multi-hot label rows, an image may have several labels or
none) gets multi-label trials: a sigmoid per label (`build_head(..., multi_label=True)`), the
labels fed as they are, and `compile_classifier(..., multi_label=True)`'s loss, binary
cross-entropy with each label's positives and negatives weighed by `class_weight`
(`models.label_weights`, as `fine_tune` weighs them; no Keras `class_weight`). The objective
that ranks trials is by default the data's metric (`label_kinds`): `"val_accuracy"` for
single-label data, `"val_mean_average_precision"` for multi-label data (the mean over labels
of the area under each label's precision-recall curve); `"val_loss"` serves both.

Tuners: `"hyperband"` (default), `"random"` and `"bayesian"` (needs scikit-learn and scipy).
Every tuner stops after `max_trials` trials; Hyperband's brackets span `tune_epochs` epochs.

Fast path. While the backbone stays frozen, every trial would push the same images through the
same backbone. `search` computes the pooled backbone features of the training and validation
sets once (`extract_features`), keeps them in the search directory, and trains the head alone
on them: a model of `build_head`'s layers (`head_dense`, `output_dropout`, `predictions`, the
head of `build_classifier`), initialised the same way from `seed`, so a head trained on features
computes what the same head trains to on top of the frozen backbone. The training features are
those of `data.train_evaluation`, the training images under the evaluation transform, whatever
augmentation `data.train` has. A search of `freeze_until_choices`
trains the full model in every trial (on `data` as given, augmentation included).

Directory. `directory` holds everything: keras-tuner's `oracle.json` and `trial_*/`, the
feature cache (`features-*.npz`, 4 bytes per feature, the backbone's `feature_size` features
per image: 2048 for ResNet50, beside each image's labels: a class index, or a multi-hot row,
keyed apart), `search.json` (the settings: space, tuner, objective, epochs, seed, backbone,
weights, label smoothing, class weighting, multi-label or not, and the data's class names,
counts and a digest of its validation images), `best_hyperparameters.json`, `trials.csv` (a
column of the objective's values) and `trials.png`. Running the same search again continues
it: a finished search runs no new trial, and a larger `max_trials` adds trials. Different
settings (multi-label data in a search of single-label data too) are refused with a ValueError
(keras-tuner would silently mix the old trials into the new search); pass `overwrite=True`
(`--overwrite` on the command line) to start afresh.

Memory and disk. Each full-model trial starts from `keras.backend.clear_session()` and drops
its model when it ends; head trials share a session, 25 at a time (a clear would cost a head's
trial more than its training, and changes none of its numbers), so a long search does not grow
until it dies. Within a session, a head trial reuses the model of an earlier trial with the same
`head_units` (and dropout or none: the head's `HeadDropout` reads its rate from a variable),
re-initialised, and with it the train and test steps Keras traced (tracing is most of a head's
trial); a reused model trains to the same numbers as a new one.

Keras session and random seeds: running trials in fresh sessions is part of what `search` does.
It calls `keras.backend.clear_session()` after checking a `freeze_until_choices` name that it
had to build the backbone for, after computing the features, at the start and at the end of
every full-model trial and of every session of head trials, and once the trials are over.
Keras's global state (layer-name counters) starts afresh each time; the clears after building
the backbone, after the features and at the end of a session also collect the memory of models
no longer referenced. Every full-model trial's build and the feature extraction call
`keras.utils.set_random_seed(seed)` (0 when `seed` is None), which seeds Python's `random`,
NumPy and TensorFlow globally. A head trial's build sets TensorFlow's global seed to `seed` only
if it holds another value (its shuffles read it; setting it clears TensorFlow's kernel caches,
which the next steps would rebuild): its weights and dropout masks are drawn from `seed` alone.
After `search` returns, the global random state is the one the last trial left. It touches
neither at any other point.

Checkpoints. keras-tuner saves the weights of every trial at every
improving epoch (about 100 MB for a ResNet50) and continues a trial promoted by Hyperband with
`load_weights` alone, losing the optimizer's state. Here only a trial that Hyperband may
promote saves a checkpoint (`continuation.npz`: the trainable variables and the optimizer's
variables at its last epoch, so a promoted trial continues where it stopped, Adam moments and
step count included), and each is deleted once its continuation has run or the search has
ended. A search stopped and resumed in the middle of a Hyperband bracket may find a checkpoint
gone: that continuation then trains from scratch, with a warning. With a frozen backbone a
checkpoint holds the head only; with `freeze_until` it holds the unfrozen stages, three times
over (weights and Adam's two moments).

Devices. Trials run under `distribution_strategy`, by default the strategy whose scope is
active: `tf.distribute.MirroredStrategy`, `OneDeviceStrategy` or `TPUStrategy`, the strategies
keras-tuner runs trials under. `MultiWorkerMirroredStrategy` and `ParameterServerStrategy` are
refused: to use several machines, share trials between them as below. Set the mixed-precision
policy before calling (`keras.mixed_precision.set_global_policy("mixed_float16")` on a GPU):
models and features follow it, predictions stay float32.

Several machines. keras-tuner shares one search between processes: one chief holds the oracle
and hands out trials, each worker runs trials and reports back. Start the same `search(...)`
call (same data, settings and `directory`) in every process, the directory on a file system
that all of them share (NFS or similar), each with:

    KERASTUNER_TUNER_ID      "chief" for the chief, a distinct name per worker ("tuner0", ...)
    KERASTUNER_ORACLE_IP     the address the chief listens on and the workers connect to
    KERASTUNER_ORACLE_PORT   its port

Start the chief first: it checks or writes `search.json`, applies `overwrite` (workers ignore
it), serves trials until the budget is spent and every worker has stopped, then writes the
summary files and returns the best values. Workers compute the features (the first one to
finish writes the shared cache), run trials, record who ran each one (`worker.json` in the trial
directory, the `worker` column of `trials.csv`) and return the best values among the trials
finished when they stop. The chief's gRPC server has no TLS and no authentication: it listens
only on the interface named by `KERASTUNER_ORACLE_IP`; name a private interface (127.0.0.1 on
one machine), never 0.0.0.0 on a network that others reach.

Layout. `label_kinds` (what single- or multi-label data decides: the objective, the labels),
`hypermodels` (the space and the two hypermodels), `features` (the feature cache), `tuner`
(oracles, the tuner that runs trials, devices and processes) and `trials` (the summary) sit
below `search`, which puts them together. The names below are re-exported here.
Note that `tfresnet.tuning.search` is the function; the module is
`importlib.import_module("tfresnet.tuning.search")`.
"""

from tfresnet.tuning.features import Features, extract_features
from tfresnet.tuning.hypermodels import (
    DEFAULT_DROPOUT,
    DEFAULT_HEAD_UNITS,
    DEFAULT_LEARNING_RATE,
    DROPOUT_RANGE,
    DROPOUT_STEP,
    FROZEN,
    HEAD_UNITS,
    LEARNING_RATE_RANGE,
    ClassifierHyperModel,
    HeadHyperModel,
)
from tfresnet.tuning.search import BEST_FILE, SETTINGS_FILE, search
from tfresnet.tuning.trials import TRIALS_PLOT, TRIALS_TABLE
from tfresnet.tuning.tuner import CHECKPOINT_FILE, OBJECTIVES, TUNERS, WORKER_FILE

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "DEFAULT_DROPOUT",
    "DEFAULT_HEAD_UNITS",
    "DEFAULT_LEARNING_RATE",
    "DROPOUT_RANGE",
    "DROPOUT_STEP",
    "FROZEN",
    "HEAD_UNITS",
    "LEARNING_RATE_RANGE",
    "OBJECTIVES",
    "SETTINGS_FILE",
    "TRIALS_PLOT",
    "TRIALS_TABLE",
    "TUNERS",
    "WORKER_FILE",
    "ClassifierHyperModel",
    "Features",
    "HeadHyperModel",
    "extract_features",
    "search",
]
