"""The keras-tuner machinery: oracles, the tuner that runs trials, devices and shared searches.

`SearchTuner` runs the trials of any oracle (`make_oracle`): in fresh Keras sessions,
Hyperband continuations with the optimizer's state, checkpoints only where a promotion needs
one, and the worker that ran each trial recorded. `check_strategy` and `role` say where trials
run: under which `tf.distribute` strategy, and as which process of a shared search.

The search's state files (`oracle.json`, `trial_*/trial.json`, `tuner0.json`) are written
whole, through `tfresnet.files`, on any file system TensorFlow has: keras-tuner writes them in
place, so a search killed during a write would leave a file its resume cannot read (and
`ram://` appends a file written again to the old one).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import socket
import warnings

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfresnet import internals, paths
from tfresnet.files import save_arrays, write_json
from tfresnet.tuning.hypermodels import HeadHyperModel
from tfresnet.tuning.label_kinds import VAL_ACCURACY, VAL_LOSS, VAL_MEAN_AVERAGE_PRECISION

TUNERS = ("hyperband", "random", "bayesian")
# What trials may be ranked by, and which way (`label_kinds`: which fit which data).
OBJECTIVES = {VAL_ACCURACY: "max", VAL_LOSS: "min", VAL_MEAN_AVERAGE_PRECISION: "max"}
HYPERBAND_FACTOR = 3
# The oracle's seed for `seed=0`, which keras-tuner would take for "no seed".
ZERO_SEED = 2**31 - 1
WORKER_FILE = "worker.json"
CHECKPOINT_FILE = "continuation.npz"
# keras-tuner's variables of a search shared by several processes: all three, or none.
SHARED_SEARCH_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


class SearchTuner(internals.DeclaredSpace, internals.WholeTunerFile, keras_tuner.Tuner):
    """Runs trials for any oracle: fresh Keras sessions, Hyperband continuations that keep the
    optimizer's state, checkpoints only where a promotion needs one, the worker recorded.

    Args:
        oracle: A keras-tuner oracle (`make_oracle`).
        hypermodel: A `ClassifierHyperModel` or `HeadHyperModel`.
        max_epochs: The most epochs of a trial: a Hyperband trial with fewer may be promoted,
            so it keeps a checkpoint.
        trials_per_session: Trials run in one Keras session: the first starts from
            `keras.backend.clear_session()`, the last ends with one (garbage collection
            included). 1 (a fresh session per trial) for full models; more for heads, whose
            trials a clear would mostly slow down (see `run_trial`).
        **kwargs: Passed to `keras_tuner.Tuner` (`directory`, `project_name`,
            `distribution_strategy`, ...).

    Example:
        tuner = SearchTuner(make_oracle("random", objective="val_accuracy", max_trials=3,
                                        tune_epochs=2, seed=0),
                            HeadHyperModel(3, feature_dim=128), max_epochs=2, directory="runs")
        tuner.search(features, labels, epochs=2, validation_data=(val_features, val_labels))
    """

    def __init__(self, oracle, hypermodel, *, max_epochs: int, trials_per_session: int = 1, **kwargs):
        super().__init__(oracle, hypermodel, **kwargs)
        self.max_epochs = max_epochs
        self.trials_per_session = trials_per_session
        self._session_trials = 0  # trials run since the last clear_session

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        epochs = hp.values.get("tuner/epochs", kwargs.pop("epochs", 1))
        initial_epoch = hp.values.get("tuner/initial_epoch", 0)
        parent = hp.values.get("tuner/trial_id")
        callbacks = copy.deepcopy(list(kwargs.pop("callbacks", None) or []))
        self._record_worker(trial.trial_id)

        # A clear costs a head's trial more than its training: a full garbage collection
        # (0.2-0.5 s, growing with the objects in the process) and TensorFlow's kernel cache,
        # rebuilt by the next steps. A head's results do not depend on the session (its build
        # seeds everything), and a process grows about as fast with a clear after every head
        # trial as without, so heads share a session for `trials_per_session` trials.
        if self._session_trials == 0:
            keras.backend.clear_session(free_memory=False)  # the last clear collected the garbage
        with scope(self.distribution_strategy):
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
            paths.remove(self._checkpoint_path(parent))
        results = _best_epoch(history.history, self.oracle.objective)
        del model, history
        self._session_trials += 1
        if self._session_trials >= self.trials_per_session:
            if isinstance(self.hypermodel, HeadHyperModel):
                self.hypermodel.clear_models()  # a fresh session builds fresh models
            keras.backend.clear_session()
            self._session_trials = 0
        return results

    def _checkpoint_path(self, trial_id: str) -> str:
        return paths.join(self.project_dir, f"trial_{trial_id}", CHECKPOINT_FILE)

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
        save_arrays(self._checkpoint_path(trial_id), **arrays)

    def _restore(self, model: keras.Model, trial_id: str) -> bool:
        path = self._checkpoint_path(trial_id)
        if not paths.exists(path):
            warnings.warn(
                f"Hyperband promoted trial {trial_id}, but its checkpoint {path} is gone (the "
                f"search was stopped and resumed?): its continuation trains from scratch.",
                stacklevel=2,
            )
            return False
        with paths.open_file(path, "rb") as file, np.load(file) as stored:
            for i, variable in enumerate(model.trainable_variables):
                variable.assign(stored[f"model_{i}"])
            for i, variable in enumerate(model.optimizer.variables):
                variable.assign(stored[f"optimizer_{i}"])
        return True

    def _record_worker(self, trial_id: str) -> None:
        path = paths.join(self.get_trial_dir(trial_id), WORKER_FILE)
        write_json(path, {"worker": self.tuner_id, "host": socket.gethostname()})


# === Oracles that write their state files whole (see the module's note) ===


class _HyperbandOracle(internals.WholeOracleFiles, keras_tuner.oracles.HyperbandOracle):
    pass


class _RandomSearchOracle(internals.WholeOracleFiles, keras_tuner.oracles.RandomSearchOracle):
    pass


class _BayesianOptimizationOracle(internals.WholeOracleFiles, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


def _best_epoch(history: dict, objective: keras_tuner.Objective) -> dict:
    """The metrics of the epoch with the best objective (not the History: it holds the model)."""
    scores = history[objective.name]
    pick = np.argmax if objective.direction == "max" else np.argmin
    best = int(pick(scores))
    return {name: float(values[best]) for name, values in history.items()}


def make_oracle(tuner: str, *, objective: str, max_trials: int, tune_epochs: int, seed: int | None):
    """The keras-tuner oracle of `tuner`, which stops after `max_trials` trials (and writes its
    state files whole).

    Example:
    >>> make_oracle("hyperband", objective="val_loss", max_trials=20, tune_epochs=9, seed=0).max_trials
    20
    """
    goal = keras_tuner.Objective(objective, direction=OBJECTIVES[objective])
    if seed == 0:  # keras-tuner's oracles read a seed of 0 as no seed at all
        seed = ZERO_SEED
    if tuner == "hyperband":
        oracle = _HyperbandOracle(
            goal,
            max_epochs=tune_epochs,
            factor=HYPERBAND_FACTOR,
            hyperband_iterations=None,
            seed=seed,
        )
        oracle.max_trials = max_trials  # brackets repeat until the trial budget is spent
        return oracle
    if tuner == "random":
        return _RandomSearchOracle(goal, max_trials=max_trials, seed=seed)
    return _BayesianOptimizationOracle(goal, max_trials=max_trials, seed=seed)


def remove_checkpoints(project_dir: str) -> None:
    """Deletes every trial's continuation checkpoint: the search has ended.

    Example:
    >>> remove_checkpoints("runs/tuning")
    """
    for trial_dir in trial_dirs(project_dir):
        paths.remove(paths.join(trial_dir, CHECKPOINT_FILE))


def trial_dirs(project_dir: str) -> list[str]:
    """The trial folders (`trial_<id>`) of the search in `project_dir` (on any file system
    TensorFlow has), by trial number: keras-tuner pads trial ids to the width of `max_trials`,
    so a resumed search with more trials writes `trial_010` beside `trial_09`, which a sort by
    name would put first.

    Example:
    >>> trial_dirs("runs/no-search-here")
    []
    """
    if not paths.isdir(project_dir):
        return []
    names = [name for name in paths.listdir(project_dir) if name.startswith("trial_")]
    numbered = sorted((int(name[len("trial_") :]), name) for name in names if name[len("trial_") :].isdigit())
    return [paths.join(project_dir, name) for _, name in numbered]


# === Devices and processes ===


@contextlib.contextmanager
def scope(strategy: tf.distribute.Strategy | None):
    """`strategy.scope()`, or nothing for None.

    Example:
        with scope(None):
            model = build_classifier(3, backbone="resnet-tiny", weights=None, image_size=32)
    """
    if strategy is None:
        yield
    else:
        with strategy.scope():
            yield


def check_strategy(strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy | None:
    """The strategy to run trials under: `strategy`, else the active one; multi-worker refused.

    Example:
    >>> check_strategy(tf.distribute.OneDeviceStrategy("/cpu:0")).num_replicas_in_sync
    1
    """
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


def role() -> str:
    """`"local"`, or `"chief"` / `"worker"` of a search shared through keras-tuner's oracle.

    A shared search needs all three of keras-tuner's variables (`SHARED_SEARCH_VARIABLES`),
    a search of one process none of them: keras-tuner would run a search of its own in the
    shared folder with only some of them set.

    Example:
    >>> role()  # none of KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT set
    'local'
    """
    present = [name for name in SHARED_SEARCH_VARIABLES if os.environ.get(name)]
    if not present:
        return "local"
    missing = [name for name in SHARED_SEARCH_VARIABLES if name not in present]
    if missing:
        raise ValueError(
            f"{' and '.join(present)} {'is' if len(present) == 1 else 'are'} set but "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not: a shared search needs "
            f"all three of {', '.join(SHARED_SEARCH_VARIABLES)} (KERASTUNER_TUNER_ID 'chief' on the "
            f"chief, a distinct name per worker; the chief's address and port), a search of one "
            f"process none of them. Set the missing ones or unset the others."
        )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def warn_if_exposed() -> None:
    """Warns a chief told to listen on every interface: its server has no TLS, no authentication.

    Example:
    >>> warn_if_exposed()  # KERASTUNER_ORACLE_IP=127.0.0.1: silent
    """
    if os.environ.get("KERASTUNER_ORACLE_IP") in ("0.0.0.0", "::", "[::]"):
        warnings.warn(
            "The chief's oracle listens on every interface, without TLS or authentication: "
            "set KERASTUNER_ORACLE_IP to a private address.",
            stacklevel=3,
        )


def require_bayesian() -> None:
    """Fails unless scikit-learn and scipy, which the Bayesian oracle needs, are installed.

    Example:
    >>> require_bayesian()
    """
    missing = [name for name in ("sklearn", "scipy") if not _importable(name)]
    if missing:
        raise ImportError(
            f"tuner='bayesian' needs scikit-learn and scipy ({', '.join(missing)} missing): "
            'pip install "tfresnet[bayesian]". Or use tuner="hyperband" or "random".'
        )


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
