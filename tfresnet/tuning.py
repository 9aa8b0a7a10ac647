"""Hyper-parameter search over the classification head, the learning rate and where to freeze.

`search(data)` runs a keras-tuner search and returns the best values, ready for
`build_classifier(..., head_units=best["head_units"], dropout=best["dropout"])` and an optimizer
at `best["learning_rate"]`. The space (`ClassifierHyperModel`, `HeadHyperModel`):

- `head_units`: units of the hidden ReLU layer, one of `HEAD_UNITS` (0: no hidden layer);
- `dropout`: the rate before the predictions, `DROPOUT_RANGE` in steps of `DROPOUT_STEP`;
- `learning_rate`: Adam's, log-uniform in `LEARNING_RATE_RANGE`;
- `freeze_until` (only with `freeze_until_choices`): where the backbone starts to train.

Tuners: `"hyperband"` (default), `"random"` and `"bayesian"` (needs scikit-learn and scipy).
Every tuner stops after `max_trials` trials; Hyperband's brackets span `tune_epochs` epochs.

Fast path. While the backbone stays frozen, every trial would push the same images through the
same backbone. `search` computes the pooled backbone features of the training and validation
sets once (`extract_features`), keeps them in the search directory, and trains the head alone
on them: a model with the layers of `build_classifier`'s head (`head_dense`, `output_dropout`,
`predictions`), initialised the same way from `seed`, so a head trained on features computes
what the same head trains to on top of the frozen backbone. Build `data` without augmentation
(`from_folder(..., augmentation="none")`): features are computed once, so an augmented set would
freeze one random view of each image. A search of `freeze_until_choices` trains the full model
in every trial (on `data` as given, augmentation included).

Directory. `directory` holds everything: keras-tuner's `oracle.json` and `trial_*/`, the
feature cache (`features-*.npz`, 4 bytes per feature, 2048 features per image for ResNet50),
`search.json` (the settings: space, tuner, objective, epochs, seed, backbone, weights, and the
data's class names, counts and a digest of its validation images), `best_hyperparameters.json`,
`trials.csv` and `trials.png`. Running the same search again continues it: a finished search
runs no new trial, and a larger `max_trials` adds trials. Different settings are refused with a
ValueError (keras-tuner would silently mix the old trials into the new search); pass
`overwrite=True` (`--overwrite` on the command line) to start afresh.

Memory and disk. Each trial starts from `keras.backend.clear_session()` and drops its model when
it ends, so a long search does not grow until it dies. keras-tuner saves the weights of every
trial at every improving epoch (about 100 MB for a ResNet50) and continues a trial promoted by
Hyperband with `load_weights` alone, losing the optimizer's state. Here only a trial that
Hyperband may promote saves a checkpoint (`continuation.npz`: the trainable variables and the
optimizer's variables at its last epoch, so a promoted trial continues where it stopped, Adam
moments and step count included), and each is deleted once its continuation has run or the
search has ended. A search stopped and resumed in the middle of a Hyperband bracket may find a
checkpoint gone: that continuation then trains from scratch, with a warning. With a frozen backbone
a checkpoint holds the head only; with `freeze_until` it holds the unfrozen stages, three times
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
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import socket
import warnings
from typing import Sequence

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfresnet.data import ImageData
from tfresnet.freezing import freeze
from tfresnet.models import build_classifier

# === Facts ===

TUNERS = ("hyperband", "random", "bayesian")
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}
HEAD_UNITS = (0, 128, 256, 512)
DROPOUT_RANGE = (0.0, 0.5)
DROPOUT_STEP = 0.1
LEARNING_RATE_RANGE = (1e-5, 1e-2)
# Defaults of the space: build_classifier's head, and Adam's usual rate.
DEFAULT_HEAD_UNITS = 0
DEFAULT_DROPOUT = 0.2
DEFAULT_LEARNING_RATE = 1e-3
HYPERBAND_FACTOR = 3
# The oracle's seed for `seed=0`, which keras-tuner would take for "no seed".
ZERO_SEED = 2**31 - 1
# Validation features are scored in one batch of up to this many: one graph to trace, not two.
VALIDATION_BATCH = 4096
# `freeze_until=None` (the whole backbone frozen) travels through keras-tuner as this string.
FROZEN = "none"
HEAD_LAYERS = ("head_dense", "predictions")

SETTINGS_FILE = "search.json"
BEST_FILE = "best_hyperparameters.json"
TRIALS_TABLE = "trials.csv"
TRIALS_PLOT = "trials.png"
WORKER_FILE = "worker.json"
CHECKPOINT_FILE = "continuation.npz"


# === Search space ===


def _declare_space(hp: keras_tuner.HyperParameters, freeze_until_choices: Sequence[str] = ()) -> dict:
    """Declares the space in `hp` (always in this order, so seeded tuners sample alike)."""
    values = {
        "head_units": hp.Choice("head_units", list(HEAD_UNITS), default=DEFAULT_HEAD_UNITS),
        "dropout": hp.Float("dropout", *DROPOUT_RANGE, step=DROPOUT_STEP, default=DEFAULT_DROPOUT),
        "learning_rate": hp.Float(
            "learning_rate", *LEARNING_RATE_RANGE, sampling="log", default=DEFAULT_LEARNING_RATE
        ),
    }
    if freeze_until_choices:
        values["freeze_until"] = hp.Choice(
            "freeze_until", list(freeze_until_choices), default=freeze_until_choices[0]
        )
    return values


def _encode_freeze_choices(choices: Sequence[int | str | None] | None) -> tuple[str, ...]:
    if not choices:
        return ()
    if isinstance(choices, (str, int)) or not isinstance(choices, Sequence):
        raise ValueError(
            f"freeze_until_choices must be a list of layer indices, layer or stage names, or "
            f"None (whole backbone frozen), e.g. [None, 'conv5', 'conv4']. "
            f"Received: freeze_until_choices={choices!r}"
        )
    encoded = []
    for choice in choices:
        if choice is None:
            encoded.append(FROZEN)
        elif isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            encoded.append(str(int(choice)))
        elif isinstance(choice, str) and choice and choice != FROZEN and not _is_index(choice):
            encoded.append(choice)
        else:
            raise ValueError(
                f"Each freeze_until choice must be a layer index, a layer or stage name, or "
                f"None. Received: {choice!r} in freeze_until_choices={list(choices)!r}"
            )
    if len(set(encoded)) != len(encoded):
        raise ValueError(f"freeze_until_choices repeats a choice. Received: {list(choices)!r}")
    return tuple(encoded)


def _is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _decode_freeze(value: str) -> int | str | None:
    if value == FROZEN:
        return None
    return int(value) if _is_index(value) else value


def _initialize_head(model: keras.Model, seed: int) -> None:
    """Draws the head's weights and dropout masks from `seed` alone.

    The full model and the head on features then start identical, whatever was built before.
    """
    for offset, name in enumerate(HEAD_LAYERS):
        layer = _find_layer(model, name)
        if layer is None:
            continue
        initializer = keras.initializers.GlorotUniform(seed=seed + offset)
        layer.kernel.assign(initializer(layer.kernel.shape, layer.kernel.dtype))
        layer.bias.assign(keras.ops.zeros(layer.bias.shape, layer.bias.dtype))
    dropout = _find_layer(model, "output_dropout")
    if dropout is not None:
        state = dropout.seed_generator.state
        state.assign(keras.ops.convert_to_tensor([seed, 0], dtype=state.dtype))


def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    return next((layer for layer in model.layers if layer.name == name), None)


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Built now, not inside the first training step, which would then be traced twice.
    model.optimizer.build(model.trainable_variables)


class ClassifierHyperModel(keras_tuner.HyperModel):
    """The full classifier of `build_classifier`, its head, learning rate and freezing tuned.

    Every build seeds Keras with `seed` first, so a randomly initialised backbone
    (`weights=None`) is the same in every trial and in `extract_features`, and the head starts
    from weights drawn from `seed` alone. Models come compiled: Adam at `learning_rate`, sparse
    categorical cross-entropy, accuracy.

    Args:
        num_classes: Number of classes, at least 2.
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"`.
        weights: `"imagenet"`, None or the path of a weights file (see `build_classifier`).
        image_size: Side of the input images, in pixels.
        freeze_until_choices: Where the backbone may start to train: layer indices, layer or
            stage names (`"conv4"`, `"conv5"`; ResNet50 stages start at 39, 81 and 143), None
            for the whole backbone frozen. None or empty: always frozen, not tuned.
        seed: Seeds the backbone's random initialisation, the head's and the dropout masks.
        **kwargs: Passed to `keras_tuner.HyperModel` (`name`, `tunable`).

    Example:
    >>> hypermodel = ClassifierHyperModel(3, weights=None, image_size=32)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    >>> [layer.name for layer in model.layers][-2:]
    ['output_dropout', 'predictions']
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        weights: str | None = "imagenet",
        image_size: int = 224,
        freeze_until_choices: Sequence[int | str | None] | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.freeze_until_choices = _encode_freeze_choices(freeze_until_choices)
        self.seed = seed

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        _declare_space(hp, self.freeze_until_choices)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = _declare_space(hp, self.freeze_until_choices)
        keras.utils.set_random_seed(self.seed)
        model = build_classifier(
            self.num_classes,
            backbone=self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            head_units=values["head_units"] or None,
            dropout=values["dropout"],
            freeze_until=_decode_freeze(values.get("freeze_until", FROZEN)),
        )
        _initialize_head(model, self.seed)
        _compile(model, values["learning_rate"])
        return model


class HeadHyperModel(keras_tuner.HyperModel):
    """`build_classifier`'s head alone, on pooled backbone features; same space and layers.

    The model maps `(batch, feature_dim)` features (input `"features"`) through `"head_dense"`
    (when `head_units > 0`), `"output_dropout"` (when `dropout > 0`) and `"predictions"`
    (softmax, float32), initialised from `seed` exactly as `ClassifierHyperModel` initialises
    its head, and compiled the same way.

    Args:
        num_classes: Number of classes, at least 2.
        feature_dim: Length of a feature vector (2048 for ResNet50 and ResNet50V2).
        seed: Seeds the head's initialisation and the dropout masks.
        **kwargs: Passed to `keras_tuner.HyperModel` (`name`, `tunable`).

    Example:
    >>> hp = keras_tuner.HyperParameters()
    >>> hp.Fixed("head_units", 128)
    128
    >>> model = HeadHyperModel(5, feature_dim=2048).build(hp)
    >>> [layer.name for layer in model.layers]
    ['features', 'head_dense', 'output_dropout', 'predictions']
    """

    def __init__(self, num_classes: int, *, feature_dim: int = 2048, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer. Received: feature_dim={feature_dim!r}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.seed = seed

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        _declare_space(hp)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = _declare_space(hp)
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input((self.feature_dim,), name="features")
        x = inputs
        if values["head_units"]:
            x = keras.layers.Dense(values["head_units"], activation="relu", name="head_dense")(x)
        if values["dropout"]:
            x = keras.layers.Dropout(values["dropout"], name="output_dropout")(x)
        outputs = keras.layers.Dense(
            self.num_classes, activation="softmax", dtype="float32", name="predictions"
        )(x)
        model = keras.Model(inputs, outputs, name="head")
        _initialize_head(model, self.seed)
        _compile(model, values["learning_rate"])
        return model

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        **kwargs,
    ):
        """Trains `model` on features `x` and labels `y`; returns the `History`.

        The arrays are fed as `tf.data` batches, shuffled from `seed` afresh in every trial,
        so a trial traces one training graph (not one per batch shape) and its batches do not
        depend on the trials before it. Validation features go in one batch (up to
        `VALIDATION_BATCH`). Other keyword arguments go to `model.fit`.
        """
        train = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            train = train.shuffle(len(y), seed=self.seed, reshuffle_each_iteration=True)
        if validation_data is not None:
            features, labels = validation_data
            validation_data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(
                min(len(labels), VALIDATION_BATCH)
            )
        return model.fit(train.batch(batch_size), validation_data=validation_data, shuffle=False, **kwargs)


# === Features ===


@dataclasses.dataclass
class Features:
    """Pooled backbone features of a training and a validation set.

    Attributes:
        train_features: `(num_train, feature_dim)` float32.
        train_labels: `(num_train,)` int32 class indices.
        validation_features: `(num_validation, feature_dim)` float32.
        validation_labels: `(num_validation,)` int32.
        batch_size: The batch size of the data they were computed from.

    Example:
    >>> features = extract_features(data, weights=None)
    >>> features.train_features.shape
    (80, 2048)
    """

    train_features: np.ndarray
    train_labels: np.ndarray
    validation_features: np.ndarray
    validation_labels: np.ndarray
    batch_size: int

    @property
    def feature_dim(self) -> int:
        return int(self.train_features.shape[-1])


def extract_features(
    data: ImageData,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    distribution_strategy: tf.distribute.Strategy | None = None,
) -> Features:
    """Computes the pooled backbone features of `data`'s training and validation sets once.

    The features are the output of `build_classifier`'s `"pooler"` layer (a Hub module's own
    output), computed by the same layers in inference mode, so a head trained on them computes
    what it would on top of the frozen backbone. Build `data` with `augmentation="none"`.

    Args:
        data: An `ImageData` with a validation set.
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"`.
        weights: `"imagenet"`, None (random, drawn from `seed`) or a weights file path.
        seed: Seeds a random backbone (`weights=None`), as `ClassifierHyperModel` does.
        cache_dir: A folder to keep the features in (`features-<key>.npz`, the key naming the
            data, backbone, weights, seed and dtype policy); a later call finds them there.
            None keeps them in memory only.
        distribution_strategy: Computes the features under this strategy (default: the
            active one).

    Returns:
        A `Features`.

    Example:
    >>> data = from_folder("flowers/", image_size=224, augmentation="none", seed=0)
    >>> features = extract_features(data, cache_dir="runs/tuning")
    >>> features.feature_dim
    2048
    """
    _check_data(data)
    return _extract_features(
        data,
        key=_features_key(_describe_data(data), backbone, weights, seed),
        backbone=backbone,
        weights=weights,
        seed=seed,
        cache_dir=cache_dir,
        strategy=_check_strategy(distribution_strategy),
    )


def _features_key(description: dict, backbone: str, weights, seed: int) -> str:
    policy = keras.mixed_precision.dtype_policy().name
    return _digest([description, backbone, _describe_weights(weights), seed, policy])


def _extract_features(data, *, key, backbone, weights, seed, cache_dir, strategy) -> Features:
    path = None if cache_dir is None else os.path.join(os.fspath(cache_dir), f"features-{key}.npz")
    if path is not None and os.path.exists(path):
        with np.load(path) as stored:
            return Features(
                **{name: stored[name] for name in stored.files if name != "batch_size"},
                batch_size=int(stored["batch_size"]),
            )

    with _scope(strategy):
        extractor = _feature_extractor(
            len(data.class_names),
            backbone=backbone,
            weights=weights,
            image_size=data.image_size,
            seed=seed,
        )
    batch_sizes = _BatchSizes()
    train_features, train_labels = extractor.predict(
        data.train.map(_pack_inputs), verbose=0, callbacks=[batch_sizes]
    )
    validation_features, validation_labels = extractor.predict(data.validation.map(_pack_inputs), verbose=0)
    features = Features(
        train_features=train_features.astype(np.float32),
        train_labels=train_labels.astype(np.int32),
        validation_features=validation_features.astype(np.float32),
        validation_labels=validation_labels.astype(np.int32),
        batch_size=batch_sizes.largest,
    )
    del extractor
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as file:
            np.savez(file, **dataclasses.asdict(features))
        os.replace(partial, path)  # atomic: workers sharing the folder never read half a file
    return features


@tf.autograph.experimental.do_not_convert
def _pack_inputs(images, labels):
    return ((images, labels),)


def _feature_extractor(num_classes: int, *, backbone, weights, image_size, seed) -> keras.Model:
    """Maps `(images, labels)` to `(pooled features, labels)`: one pass keeps them aligned."""
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(
        num_classes, backbone=backbone, weights=weights, image_size=image_size, dropout=0.0
    )
    pooler = _find_layer(classifier, "pooler")  # Hub modules pool themselves
    pooled = (classifier.get_layer("backbone") if pooler is None else pooler).output
    labels = keras.Input((), dtype="int32", name="labels")
    return keras.Model([classifier.input, labels], [pooled, labels], name="feature_extractor")


class _BatchSizes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def on_predict_batch_end(self, batch, logs=None):
        self.largest = max(self.largest, int(logs["outputs"][1].shape[0]))


def _feature_dim(backbone: str, weights, image_size: int) -> int:
    extractor = _feature_extractor(2, backbone=backbone, weights=weights, image_size=image_size, seed=0)
    dim = int(extractor.outputs[0].shape[-1])
    del extractor
    keras.backend.clear_session()
    return dim


# === Tuner ===


class _Tuner(keras_tuner.Tuner):
    """Runs trials for any oracle: fresh session per trial, Hyperband continuations that keep
    the optimizer's state, checkpoints only where a promotion needs one, the worker recorded."""

    def __init__(self, oracle, hypermodel, *, max_epochs: int, **kwargs):
        super().__init__(oracle, hypermodel, **kwargs)
        self.max_epochs = max_epochs

    def _populate_initial_space(self):
        # The space has no conditional parameters: declaring it is enough, no model is built.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        epochs = hp.values.get("tuner/epochs", kwargs.pop("epochs", 1))
        initial_epoch = hp.values.get("tuner/initial_epoch", 0)
        parent = hp.values.get("tuner/trial_id")
        callbacks = copy.deepcopy(list(kwargs.pop("callbacks", None) or []))
        self._record_worker(trial.trial_id)

        keras.backend.clear_session(free_memory=False)  # the last trial collected its garbage
        with _scope(self.distribution_strategy):
            model = self.hypermodel.build(hp)
            if parent is not None and not self._restore(model, parent):
                initial_epoch = 0
        history = self.hypermodel.fit(
            hp,
            model,
            *args,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            **kwargs,
        )
        if "tuner/epochs" in hp.values and epochs < self.max_epochs:
            self._save(model, trial.trial_id)
        if parent is not None:
            _remove(self._checkpoint_path(parent))
        results = _best_epoch(history.history, self.oracle.objective)
        del model, history
        keras.backend.clear_session()
        return results

    def _checkpoint_path(self, trial_id: str) -> str:
        return os.path.join(self.project_dir, f"trial_{trial_id}", CHECKPOINT_FILE)

    def _save(self, model: keras.Model, trial_id: str) -> None:
        arrays = {
            f"model_{i}": keras.ops.convert_to_numpy(variable)
            for i, variable in enumerate(model.trainable_variables)
        }
        arrays.update(
            {
                f"optimizer_{i}": keras.ops.convert_to_numpy(variable)
                for i, variable in enumerate(model.optimizer.variables)
            }
        )
        path = self._checkpoint_path(trial_id)
        partial = f"{path}.partial"
        with open(partial, "wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)

    def _restore(self, model: keras.Model, trial_id: str) -> bool:
        path = self._checkpoint_path(trial_id)
        if not os.path.exists(path):
            warnings.warn(
                f"Hyperband promoted trial {trial_id}, but its checkpoint {path} is gone (the "
                f"search was stopped and resumed?): its continuation trains from scratch.",
                stacklevel=2,
            )
            return False
        with np.load(path) as stored:
            for i, variable in enumerate(model.trainable_variables):
                variable.assign(stored[f"model_{i}"])
            for i, variable in enumerate(model.optimizer.variables):
                variable.assign(stored[f"optimizer_{i}"])
        return True

    def _record_worker(self, trial_id: str) -> None:
        with open(os.path.join(self.get_trial_dir(trial_id), WORKER_FILE), "w") as file:
            json.dump({"worker": self.tuner_id, "host": socket.gethostname()}, file)


def _best_epoch(history: dict, objective: keras_tuner.Objective) -> dict:
    """The metrics of the epoch with the best objective (not the History: it holds the model)."""
    scores = history[objective.name]
    pick = np.argmax if objective.direction == "max" else np.argmin
    best = int(pick(scores))
    return {name: float(values[best]) for name, values in history.items()}


def _make_oracle(tuner: str, *, objective: str, max_trials: int, tune_epochs: int, seed):
    goal = keras_tuner.Objective(objective, direction=OBJECTIVES[objective])
    if seed == 0:  # keras-tuner's oracles read a seed of 0 as no seed at all
        seed = ZERO_SEED
    if tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            goal,
            max_epochs=tune_epochs,
            factor=HYPERBAND_FACTOR,
            hyperband_iterations=None,
            seed=seed,
        )
        oracle.max_trials = max_trials  # brackets repeat until the trial budget is spent
        return oracle
    if tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(goal, max_trials=max_trials, seed=seed)
    return keras_tuner.oracles.BayesianOptimizationOracle(goal, max_trials=max_trials, seed=seed)


@contextlib.contextmanager
def _scope(strategy: tf.distribute.Strategy | None):
    if strategy is None:
        yield
    else:
        with strategy.scope():
            yield


def _check_strategy(strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy | None:
    if strategy is None:
        return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(
            f"distribution_strategy must be a tf.distribute.Strategy or None. "
            f"Received: distribution_strategy={strategy!r}"
        )
    multi_worker = (
        tf.distribute.MultiWorkerMirroredStrategy,
        tf.distribute.experimental.ParameterServerStrategy,
    )
    if isinstance(strategy, multi_worker):
        raise ValueError(
            f"keras-tuner runs trials under single-machine strategies only (MirroredStrategy, "
            f"OneDeviceStrategy, TPUStrategy). To search on several machines, run one chief and "
            f"a worker per machine (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, "
            f"KERASTUNER_ORACLE_PORT; see tfresnet.tuning), each with a MirroredStrategy over "
            f"its own GPUs. Received: distribution_strategy={type(strategy).__name__}"
        )
    return strategy


# === Settings ===


def _role() -> str:
    """`"local"`, or `"chief"` / `"worker"` of a search shared through keras-tuner's oracle."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "local"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"KERASTUNER_ORACLE_IP is set, so this process joins a shared search, but "
            f"{' and '.join(missing)} is not. Set KERASTUNER_TUNER_ID ('chief' on the chief, a "
            f"distinct name per worker) and KERASTUNER_ORACLE_PORT, or unset KERASTUNER_ORACLE_IP."
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _check_data(data) -> None:
    if not isinstance(data, ImageData):
        raise ValueError(
            f"data must be a tfresnet.data.ImageData (from from_folder, from_arrays or "
            f"from_tfds). Received: data of type {type(data).__name__}"
        )
    if data.validation is None:
        raise ValueError(
            "The search scores trials on a validation set, and data has none. Load it with "
            "val_split > 0 or a validation_directory."
        )


def _describe_data(data: ImageData) -> dict:
    digest = hashlib.sha1()
    for images, labels in data.validation:
        digest.update(np.asarray(images).tobytes())
        digest.update(np.asarray(labels).tobytes())
    return {
        "class_names": list(data.class_names),
        "class_counts": [int(count) for count in data.class_counts],
        "num_train": int(data.num_train),
        "num_validation": int(data.num_validation),
        "image_size": int(data.image_size),
        "validation_digest": digest.hexdigest()[:16],
    }


def _describe_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    path = os.path.abspath(os.fspath(weights))
    return {"path": path, "bytes": os.path.getsize(path) if os.path.exists(path) else None}


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _check_settings(project_dir: str, settings: dict, *, overwrite: bool, role: str) -> None:
    """Refuses to continue a search made with other settings (keras-tuner would mix them)."""
    path = os.path.join(project_dir, SETTINGS_FILE)
    is_search = any(
        os.path.exists(os.path.join(project_dir, name)) for name in (SETTINGS_FILE, "oracle.json")
    )
    if overwrite and role != "worker":
        if os.path.isdir(project_dir) and os.listdir(project_dir) and not is_search:
            raise ValueError(
                f"overwrite=True would delete {project_dir!r}, which holds files but no search "
                f"(no {SETTINGS_FILE} or oracle.json). Give the search a directory of its own."
            )
        shutil.rmtree(project_dir, ignore_errors=True)
        return
    if os.path.exists(path):
        with open(path) as file:
            stored = json.load(file)
        if stored == settings:
            return
        changed = "; ".join(
            f"{key}: {_short(stored.get(key))} -> {_short(settings.get(key))}"
            for key in sorted(set(stored) | set(settings))
            if stored.get(key) != settings.get(key)
        )
        raise ValueError(
            f"The search in {project_dir!r} was made with other settings ({changed}); "
            f"continuing it would mix its trials into this search. Pass overwrite=True "
            f"(--overwrite on the command line) to start afresh, or choose another directory."
        )
    if os.path.exists(os.path.join(project_dir, "oracle.json")):
        raise ValueError(
            f"{project_dir!r} holds a keras-tuner search without {SETTINGS_FILE}, so its "
            f"settings are unknown. Pass overwrite=True (--overwrite on the command line) to "
            f"start afresh, or choose another directory."
        )


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# === Search ===


def search(
    data: ImageData,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    tuner: str = "hyperband",
    max_trials: int = 10,
    tune_epochs: int = 5,
    directory: str | os.PathLike = "tuning",
    overwrite: bool = False,
    seed: int | None = None,
    fast: bool = True,
    freeze_until_choices: Sequence[int | str | None] | None = None,
    objective: str = "val_accuracy",
    distribution_strategy: tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> dict:
    """Searches the head size, dropout, learning rate (and where to freeze) for a classifier.

    Trials train on `data.train` and are scored on `data.validation`. With `fast` and no
    `freeze_until_choices`, the backbone's features are computed once and trials train the
    head alone on them (see the module documentation, also for resuming and for sharing a
    search between machines).

    Args:
        data: An `ImageData` with a validation set; for the fast path, loaded with
            `augmentation="none"`.
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"`.
        weights: `"imagenet"`, None (random backbone, drawn from `seed`) or a weights file.
        tuner: `"hyperband"`, `"random"` or `"bayesian"` (needs scikit-learn and scipy).
        max_trials: Trials to run in all (a Hyperband continuation counts as a trial).
        tune_epochs: Epochs per trial; Hyperband's largest number of epochs for one trial.
        directory: The search's own directory, created if needed; running again resumes it
            (`overwrite=True` deletes it, and refuses to delete one that holds no search).
        overwrite: Delete the search in `directory` first and start afresh.
        seed: Seeds the tuner's choices and every trial's initialisation (0 when None; the
            tuner's choices are then random).
        fast: Train heads on features computed once while the backbone is frozen.
        freeze_until_choices: Also search where the backbone starts to train, e.g.
            `[None, "conv5", "conv4"]` (None: frozen). Trials then train the full model.
        objective: `"val_accuracy"` (maximised) or `"val_loss"` (minimised).
        distribution_strategy: Strategy to run trials under (default: the active one);
            multi-worker strategies are refused.
        callbacks: Keras callbacks for every trial's `fit` (copied per trial), e.g.
            `keras.callbacks.EarlyStopping`.
        verbose: 0 silent, 1 keras-tuner's trial reports and progress bars, 2 one line per
            epoch.

    Returns:
        The best trial's values: `{"head_units": int or None, "dropout": float,
        "learning_rate": float}`, plus `"freeze_until"` when searched; also written to
        `directory/best_hyperparameters.json`, with `trials.csv` and `trials.png` beside it.
        A worker of a shared search returns the best of the trials finished when it stops
        and writes no file.

    Raises:
        ValueError: An invalid argument, data without a validation set, or a search in
            `directory` made with other settings (pass `overwrite=True`).

    Example:
    >>> data = from_folder("flowers/", image_size=224, augmentation="none", seed=0)
    >>> best = search(data, tuner="hyperband", max_trials=20, directory="runs/tuning")
    >>> model = build_classifier(len(data.class_names), head_units=best["head_units"],
    ...                          dropout=best["dropout"])
    """
    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {TUNERS}. Received: tuner={tuner!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}. Received: objective={objective!r}")
    for name, value in (("max_trials", max_trials), ("tune_epochs", tune_epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32
    ):
        raise ValueError(f"seed must be an integer in [0, 2**32) or None. Received: seed={seed!r}")
    if tuner == "bayesian":
        _require_bayesian()
    _check_data(data)
    strategy = _check_strategy(distribution_strategy)
    choices = _encode_freeze_choices(freeze_until_choices)
    if choices:
        _check_freeze_choices(choices, backbone=backbone, image_size=data.image_size)
    role = _role()
    if role == "chief" and os.environ["KERASTUNER_ORACLE_IP"] in ("0.0.0.0", "::", "[::]"):
        warnings.warn(
            "The chief's oracle listens on every interface, without TLS or authentication: "
            "set KERASTUNER_ORACLE_IP to a private address.",
            stacklevel=2,
        )

    use_fast = fast and not choices
    init_seed = 0 if seed is None else int(seed)
    num_classes = len(data.class_names)
    project_dir = os.path.abspath(os.fspath(directory))
    description = _describe_data(data)
    space = keras_tuner.HyperParameters()
    _declare_space(space, choices)
    settings = json.loads(
        json.dumps(
            {
                "tuner": tuner,
                "objective": objective,
                "tune_epochs": int(tune_epochs),
                "fast": use_fast,
                "seed": seed,
                "backbone": backbone,
                "weights": _describe_weights(weights),
                "space": space.get_config()["space"],
                "data": description,
            }
        )
    )
    _check_settings(project_dir, settings, overwrite=overwrite, role=role)
    if role != "worker":
        os.makedirs(project_dir, exist_ok=True)
        with open(os.path.join(project_dir, SETTINGS_FILE), "w") as file:
            json.dump(settings, file, indent=2)

    fit_kwargs = {"epochs": tune_epochs, "callbacks": list(callbacks), "verbose": verbose}
    if not use_fast:
        hypermodel = ClassifierHyperModel(
            num_classes,
            backbone=backbone,
            weights=weights,
            image_size=data.image_size,
            freeze_until_choices=[_decode_freeze(choice) for choice in choices],
            seed=init_seed,
        )
        fit_args = (data.train,)  # shuffled by its loader
        fit_kwargs.update(validation_data=data.validation, shuffle=False)
    elif role == "chief":  # the chief only hands out trials
        feature_dim = _feature_dim(backbone, weights, data.image_size)
        hypermodel, fit_args = HeadHyperModel(num_classes, feature_dim=feature_dim, seed=init_seed), ()
    else:
        features = _extract_features(
            data,
            key=_features_key(description, backbone, weights, init_seed),
            backbone=backbone,
            weights=weights,
            seed=init_seed,
            cache_dir=project_dir,
            strategy=strategy,
        )
        keras.backend.clear_session()
        hypermodel = HeadHyperModel(num_classes, feature_dim=features.feature_dim, seed=init_seed)
        fit_args = (features.train_features, features.train_labels)
        fit_kwargs.update(
            batch_size=features.batch_size,
            shuffle=True,
            validation_data=(features.validation_features, features.validation_labels),
        )

    keras_tuner_search = _Tuner(
        _make_oracle(tuner, objective=objective, max_trials=max_trials, tune_epochs=tune_epochs, seed=seed),
        hypermodel,
        max_epochs=tune_epochs,
        distribution_strategy=strategy,
        directory=os.path.dirname(project_dir),
        project_name=os.path.basename(project_dir),
    )
    keras_tuner_search.search(*fit_args, **fit_kwargs)
    del keras_tuner_search
    keras.backend.clear_session()

    trials = _read_trials(project_dir)
    best = _best_values(trials, objective, project_dir)
    if role != "worker":
        for path in glob.glob(os.path.join(project_dir, "trial_*", CHECKPOINT_FILE)):
            _remove(path)
        with open(os.path.join(project_dir, BEST_FILE), "w") as file:
            json.dump(best, file, indent=2)
        _write_summary(project_dir, trials, objective)
    return best


def _require_bayesian() -> None:
    missing = [name for name in ("sklearn", "scipy") if not _importable(name)]
    if missing:
        raise ImportError(
            f"tuner='bayesian' needs scikit-learn and scipy ({', '.join(missing)} missing): "
            'pip install "tfresnet[bayesian]". Or use tuner="hyperband" or "random".'
        )


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _check_freeze_choices(choices: Sequence[str], *, backbone: str, image_size: int) -> None:
    """Fails now, not in some trial hours from now, on a choice the backbone does not have."""
    model = build_classifier(2, backbone=backbone, weights=None, image_size=image_size)
    try:
        for choice in choices:
            freeze(model, until=_decode_freeze(choice))
    finally:
        del model
        keras.backend.clear_session()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# === Summary ===


def _read_trials(project_dir: str) -> list[dict]:
    """The trials recorded in `project_dir`, in the order they were created."""
    trials = []
    for path in sorted(glob.glob(os.path.join(project_dir, "trial_*", "trial.json"))):
        with open(path) as file:
            trial = json.load(file)
        worker_path = os.path.join(os.path.dirname(path), WORKER_FILE)
        worker = None
        if os.path.exists(worker_path):
            with open(worker_path) as file:
                worker = json.load(file)["worker"]
        trials.append(
            {
                "trial_id": trial["trial_id"],
                "status": trial["status"],
                "score": trial.get("score"),
                "values": trial["hyperparameters"]["values"],
                "message": trial.get("message"),
                "worker": worker,
            }
        )
    return trials


def _classifier_values(values: dict) -> dict:
    best = {
        "head_units": int(values["head_units"]) or None,
        "dropout": round(float(values["dropout"]), 10),
        "learning_rate": float(values["learning_rate"]),
    }
    if "freeze_until" in values:
        best["freeze_until"] = _decode_freeze(values["freeze_until"])
    return best


def _best_values(trials: list[dict], objective: str, project_dir: str) -> dict:
    completed = [trial for trial in trials if trial["status"] == "COMPLETED" and trial["score"] is not None]
    if not completed:
        failed = next((trial for trial in trials if trial["message"]), None)
        reason = f" The first failure: {failed['message']}" if failed else ""
        raise RuntimeError(f"No trial of the search in {project_dir!r} completed.{reason}")
    pick = max if OBJECTIVES[objective] == "max" else min
    return _classifier_values(pick(completed, key=lambda trial: trial["score"])["values"])


def _readable(value):
    # Hides float noise from stepped ranges: 0.30000000000000004 is written 0.3.
    return float(f"{value:.10g}") if isinstance(value, float) else value


def _write_summary(project_dir: str, trials: list[dict], objective: str) -> None:
    """Writes `trials.csv` (one row per trial) and `trials.png` (score by trial)."""
    searched = ["head_units", "dropout", "learning_rate"]
    if any("freeze_until" in trial["values"] for trial in trials):
        searched.append("freeze_until")
    with open(os.path.join(project_dir, TRIALS_TABLE), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["trial_id", "status", objective, *searched, "epochs", "continues", "worker"])
        for trial in trials:
            values = trial["values"]
            writer.writerow(
                [
                    trial["trial_id"],
                    trial["status"],
                    trial["score"],
                    *(_readable(values.get(name)) for name in searched),
                    values.get("tuner/epochs"),
                    values.get("tuner/trial_id"),
                    trial["worker"],
                ]
            )

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [
        (number, trial["score"])
        for number, trial in enumerate(trials, 1)
        if trial["status"] == "COMPLETED" and trial["score"] is not None
    ]
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if scored:
        numbers, scores = zip(*scored)
        running = np.maximum.accumulate if OBJECTIVES[objective] == "max" else np.minimum.accumulate
        axes.plot(numbers, scores, "o", label="trial")
        axes.step(numbers, running(np.array(scores)), where="post", label="best so far")
        axes.legend()
    axes.set_xlabel("trial")
    axes.set_ylabel(objective)
    axes.set_title(f"{len(scored)} of {len(trials)} trials completed")
    figure.tight_layout()
    figure.savefig(os.path.join(project_dir, TRIALS_PLOT), dpi=100)
