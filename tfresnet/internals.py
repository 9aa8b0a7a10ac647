"""Every use of a private API of Keras, TensorFlow, keras-tuner or LiteRT in tfresnet, in one
place, each with the reason no public one does.

Each is pinned by a test in `tests/test_internals.py` that fails when the library changes
under it: upgrade Keras or keras-tuner, run those tests, and this module says what to mend.
Nothing here is imported at the top (the callers already hold the objects), so every layer
of tfresnet can use it.

Example:
    set_initial_epoch(model, 3)  # the next model.fit() starts at epoch 3
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import keras


# === Keras: where fit() starts ===


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Makes the next `model.fit()` start at `epoch` (None: at the epoch `fit()` is given).

    Why private: a callback cannot change `fit()`'s `initial_epoch` once `fit()` has begun;
    Keras's own `BackupAndRestore` sets `model._initial_epoch` in `on_train_begin`, which
    `fit()` reads right after. A resumed run's backup does the same.
    """
    model._initial_epoch = epoch


def initial_epoch(model: keras.Model) -> int:
    """The epoch the running `fit()` started at, as a backup set it (0 when none did)."""
    return getattr(model, "_initial_epoch", None) or 0


def count_epoch_seen(stopping: keras.callbacks.EarlyStopping, value: float) -> None:
    """Counts an epoch whose monitored metric was `value` in an `EarlyStopping`'s patience, as
    if its `fit()` had run it (call it in `on_train_begin`, after Keras's own).

    Why private: `EarlyStopping` counts only the epochs of its own `fit()`; its comparison
    (`_is_improvement`, which `_set_monitor_op` sets up on the first epoch) is private.
    """
    if stopping.monitor_op is None:
        stopping._set_monitor_op()
    stopping.wait += 1
    if stopping._is_improvement(value, stopping.best):
        stopping.best, stopping.wait = value, 0


# === Keras: the moving average of the weights ===


class StepMomentumAverage:
    """For a Keras optimizer: the moving average of the weights (`use_ema`) at a momentum that
    the subclass's `average_momentum()` computes at each step.

    Why private: Keras's average has one fixed momentum and no public hook;
    `BaseOptimizer._backend_apply_gradients` calls `_update_model_variables_moving_average`
    after each update step, before the step count goes up, and the averages live in
    `_model_variables_moving_average`.
    """

    def average_momentum(self):
        raise NotImplementedError

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        momentum = self.average_momentum()
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                import keras

                m = keras.ops.cast(momentum, variable.dtype)
                average.assign(m * average + (1.0 - m) * variable)


def set_averaged_weights_in_model(callback: keras.callbacks.SwapEMAWeights, in_model: bool) -> None:
    """Tells a `SwapEMAWeights(swap_on_epoch=True)` whether the model holds the averaged weights.

    Why private: the callback assumes each `fit()` starts with the trained weights in the model
    (`_ema_weights_in_model` False); a fit resumed from a backup of an averaged epoch starts
    with the averaged ones, and must swap back first.
    """
    callback._ema_weights_in_model = in_model


# === Keras: fit() under MultiWorkerMirroredStrategy ===


def forget_distribute_strategy(model: keras.Model) -> None:
    """Stops `fit()` from averaging one batch across workers eagerly to build the model.

    Why private: Keras 3 does that when `model._distribute_strategy` is set, which
    `MultiWorkerMirroredStrategy` cannot do (keras-team/keras#20585); with the attribute None,
    `fit()` finds the strategy of the scope it runs in.
    """
    model._distribute_strategy = None


# === Keras: deserialization ===


def in_safe_mode() -> bool | None:
    """Whether Keras is deserializing in safe mode (None outside a deserialization scope).

    Why private: `from_config` is not told the `safe_mode` of `keras.saving.load_model`;
    Keras's own layers that run code read it here.
    """
    from keras.src.saving import serialization_lib

    return serialization_lib.in_safe_mode()


def reloaded_signatures(layer: keras.layers.TFSMLayer) -> dict:
    """The signatures of the SavedModel a `keras.layers.TFSMLayer` loaded.

    Why private: `TFSMLayer` keeps the loaded object in `_reloaded_obj` only; loading the
    folder again to read an input shape would double the time and memory.
    """
    return layer._reloaded_obj.signatures


# === keras-tuner: declaring the search space ===


class DeclaredSpace:
    """For a `keras_tuner.Tuner` whose hypermodel declares its space without building a model
    (`hypermodel.declare_hyperparameters(hp)`).

    Why private: keras-tuner's `_populate_initial_space` declares the space and then builds the
    model at least once (to discover conditional parameters), which for a full classifier
    means a ResNet50 and its weights before the first trial, on a search's chief too. This
    space has no conditional parameters: declaring it is enough.
    """

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)


# === keras-tuner: its state files written whole ===


def write_state(path: str, stateful) -> None:
    """What keras-tuner's `Stateful.save` writes (`json.dumps(get_state())`), written whole."""
    import json

    from tfresnet.files import write_text

    write_text(path, json.dumps(stateful.get_state()))


class WholeOracleFiles:
    """For a keras-tuner oracle: `oracle.json` and each `trial_*/trial.json` are written whole
    (a temporary file renamed over them, on any file system `tfresnet.paths` reaches).

    Why private: keras-tuner's `Oracle` writes them in place in `save` and `_save_trial`, its
    only writers, and takes no writer to use instead: a search killed during a write leaves a
    file its resume cannot read (and `ram://` appends a file written again to the old one).
    The names come from `_get_oracle_fname` and `_get_trial_dir`.
    """

    def save(self):
        write_state(self._get_oracle_fname(), self)

    def _save_trial(self, trial):
        import os

        write_state(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial)


class WholeTunerFile:
    """For a keras-tuner tuner: its `tuner0.json` is written whole, as `WholeOracleFiles` writes
    the oracle's.

    Why private: `BaseTuner.save` writes it in place; its name comes from `_get_tuner_fname`,
    and only the chief saves the oracle (`_is_worker`).
    """

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_state(self._get_tuner_fname(), self)


# === TensorFlow: the global seed tf.data's seeded operations mix in ===


@contextlib.contextmanager
def global_seed(seed: int | None) -> Iterator[None]:
    """Sets TensorFlow's global seed to `seed` inside the block, then puts the previous one back
    (nothing changes when `seed` is None).

    tf.data's seeded operations (`shuffle(seed=...)`, `Dataset.random(seed=...)`, the stateful
    random ops of a traced `map`) take the pair (global seed, their seed), the global seed as it
    is when they are built: without this block, one loader seed would give other batches after
    `tf.random.set_seed` or `keras.utils.set_random_seed` (which `fine_tune(seed=...)` calls).

    Why private: TensorFlow has no public getter of the global seed to put back
    (`context.global_seed()`).
    """
    if seed is None:
        yield
        return
    import tensorflow as tf
    from tensorflow.python.eager import context

    previous = context.global_seed()
    tf.random.set_seed(seed)
    try:
        yield
    finally:
        tf.random.set_seed(previous)


# === LiteRT ===


def litert_op_names(interpreter) -> set[str]:
    """The operators in a LiteRT interpreter's model (`CONV_2D`, ...; Flex ops start with `Flex`).

    Why private: `ai_edge_litert`'s `Interpreter` lists them only in `_get_ops_details`.
    """
    return {op["op_name"] for op in interpreter._get_ops_details()}
