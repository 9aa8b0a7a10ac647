"""Pins of the private APIs tfresnet uses (`tfresnet.internals`): each test fails when the
library changes what tfresnet relies on."""

import json

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import internals
from tfresnet.models.classifier import WarmedUpAdam
from tfresnet.tuning import HeadHyperModel
from tfresnet.tuning.tuner import SearchTuner, make_oracle


def _dense_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def _xy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 2, 16)


class _StartAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.seen = epoch, []

    def on_train_begin(self, logs=None):
        internals.set_initial_epoch(self.model, self.epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


# === Keras: where fit() starts ===


def test_fit_starts_at_the_epoch_a_callback_sets_when_training_begins():
    model, start = _dense_model(), _StartAt(3)
    seen_by_later_callbacks = []
    later = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen_by_later_callbacks.append(internals.initial_epoch(model))
    )
    history = model.fit(*_xy(), epochs=5, verbose=0, callbacks=[start, later])
    assert start.seen == [3, 4] and len(history.history["loss"]) == 2
    assert seen_by_later_callbacks == [3]

    start.epoch, start.seen = None, []
    model.fit(*_xy(), epochs=2, verbose=0, callbacks=[start])
    assert start.seen == [0, 1] and internals.initial_epoch(model) == 0


def test_an_epoch_counted_before_fit_uses_up_early_stoppings_patience():
    """A best value counted before `fit()` that no epoch beats: patience 2 stops after 2 epochs
    (without it, the first epoch would be the best and the run would last 3)."""

    class Counted(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            internals.count_epoch_seen(self, -1.0)  # a loss no epoch reaches

    lengths = []
    for stopping in (Counted("loss", patience=2), keras.callbacks.EarlyStopping("loss", patience=2)):
        model = _dense_model()
        model.compile(keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")  # loss flat
        lengths.append(len(model.fit(*_xy(), epochs=10, verbose=0, callbacks=[stopping]).history["loss"]))
    assert lengths == [2, 3]


# === Keras: the moving average of the weights ===


def test_swap_ema_weights_swaps_back_first_when_told_the_model_holds_the_average():
    variable_values = np.array([1.0, 2.0], "float32")
    model = _dense_model()
    model.compile(keras.optimizers.SGD(0.1, use_ema=True), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    kernel = model.trainable_variables[1]  # the bias, 2 values
    kernel.assign(variable_values)
    average = model.optimizer._model_variables_moving_average[1]
    average.assign([5.0, 6.0])
    for told, expected in ((False, [1.0, 2.0]), (True, [5.0, 6.0])):
        callback = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
        callback.set_model(model)
        internals.set_averaged_weights_in_model(callback, told)
        callback.on_epoch_begin(0)
        np.testing.assert_array_equal(kernel.numpy(), expected)
        kernel.assign(variable_values)
        average.assign([5.0, 6.0])


# === Keras: fit() under MultiWorkerMirroredStrategy ===


def test_a_model_built_under_a_strategy_keeps_it_where_forget_looks():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _dense_model()
    assert model._distribute_strategy is strategy
    internals.forget_distribute_strategy(model)
    with strategy.scope():
        history = model.fit(*_xy(), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# === Keras: deserialization ===


@keras.saving.register_keras_serializable(package="tfresnet_tests")
class _RecordsSafeMode(keras.layers.Layer):
    seen: list = []

    @classmethod
    def from_config(cls, config):
        cls.seen.append(internals.in_safe_mode())
        return cls(**config)

    def call(self, inputs):
        return inputs


def test_from_config_sees_the_safe_mode_load_model_was_given(tmp_path):
    inputs = keras.Input((2,))
    path = str(tmp_path / "model.keras")
    keras.Model(inputs, _RecordsSafeMode()(inputs)).save(path)
    _RecordsSafeMode.seen = []
    keras.saving.load_model(path)
    keras.saving.load_model(path, safe_mode=False)
    assert _RecordsSafeMode.seen == [True, False]
    assert internals.in_safe_mode() is None


def test_a_tfsm_layer_keeps_the_signatures_it_loaded(tmp_path):
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.serve = tf.function(
        lambda images: {"out": images * module.scale},
        input_signature=[tf.TensorSpec([None, 7, 7, 3], tf.float32, name="images")],
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serve_images": module.serve})
    layer = keras.layers.TFSMLayer(str(tmp_path), call_endpoint="serve_images")
    spec = internals.reloaded_signatures(layer)["serve_images"].structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 7, 7, 3]


# === LiteRT ===


def test_the_litert_interpreter_lists_its_operators(tmp_path):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    model = _dense_model()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interpreter = interpreter_module.Interpreter(model_content=converter.convert())
    assert {"FULLY_CONNECTED", "SOFTMAX"} <= internals.litert_op_names(interpreter)


# === Keras: the optimizer's average, keras-tuner: the search space ===


class CountingHeadHyperModel(HeadHyperModel):
    builds = 0

    def build(self, hp):
        CountingHeadHyperModel.builds += 1
        return super().build(hp)


class PlainTuner(keras_tuner.Tuner):
    """keras-tuner's own Tuner, nothing overridden but the trial."""

    def run_trial(self, trial, *args, **kwargs):
        raise NotImplementedError


class CountingSearchTuner(SearchTuner):
    populated = 0

    def _populate_initial_space(self):
        CountingSearchTuner.populated += 1
        super()._populate_initial_space()


def test_keras_tuner_calls_the_private_hook_that_search_tuner_overrides(tmp_path):
    """Pins `DeclaredSpace`: keras-tuner calls `_populate_initial_space` while a tuner is
    created and, left alone, builds the model there; overridden, no model is built."""
    assert "_populate_initial_space" in vars(keras_tuner.engine.base_tuner.BaseTuner)

    def oracle():
        return make_oracle("random", objective="val_accuracy", max_trials=1, tune_epochs=1, seed=0)

    CountingHeadHyperModel.builds = 0
    PlainTuner(oracle(), CountingHeadHyperModel(3, feature_dim=8), directory=tmp_path, project_name="plain")
    assert CountingHeadHyperModel.builds >= 1  # why the override exists

    CountingHeadHyperModel.builds = CountingSearchTuner.populated = 0
    tuner = CountingSearchTuner(
        oracle(),
        CountingHeadHyperModel(3, feature_dim=8),
        max_epochs=1,
        directory=tmp_path,
        project_name="ours",
    )
    assert CountingSearchTuner.populated == 1
    assert CountingHeadHyperModel.builds == 0
    assert [p.name for p in tuner.oracle.get_space().space] == ["head_units", "dropout", "learning_rate"]


def test_warmed_up_adam_averages_with_a_momentum_that_grows_with_the_step():
    """Pins `StepMomentumAverage`: if Keras stops calling `_update_model_variables_moving_average`
    after each step, or keeps the averages elsewhere, the average stops following."""
    assert hasattr(keras.optimizers.Optimizer, "_update_model_variables_moving_average")
    variable = keras.Variable(np.zeros(3, "float32"))
    optimizer = WarmedUpAdam(0.1, use_ema=True, ema_momentum=0.9)
    optimizer.build([variable])

    expected, values = None, []
    for step in range(30):
        optimizer.apply_gradients([(keras.ops.ones(3), variable)])
        values.append(variable.numpy().copy())
        momentum = 0.0 if step == 0 else min(0.9, (1 + step) / (10 + step))
        expected = values[-1] if expected is None else momentum * expected + (1 - momentum) * values[-1]
        np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), expected, rtol=1e-5)


def test_keras_tuner_writes_its_state_where_the_whole_file_writers_write_it(tmp_path):
    """Pins `WholeOracleFiles` and `WholeTunerFile`: keras-tuner writes `oracle.json` and each
    `trial.json` through the oracle's `save` and `_save_trial` (and `tuner0.json` through the
    tuner's `save`), at the names `_get_oracle_fname`, `_get_trial_dir` and `_get_tuner_fname`
    give; the overrides write the same JSON there, and no file else."""
    assert {"save", "_save_trial", "_get_oracle_fname", "_get_trial_dir"} <= set(
        vars(keras_tuner.engine.oracle.Oracle)
    )
    assert {"save", "_get_tuner_fname", "_is_worker"} <= set(vars(keras_tuner.engine.base_tuner.BaseTuner))

    class WholeRandomSearchOracle(internals.WholeOracleFiles, keras_tuner.oracles.RandomSearchOracle):
        pass

    written = {}
    for name, kind in (("plain", keras_tuner.oracles.RandomSearchOracle), ("whole", WholeRandomSearchOracle)):
        oracle = kind(objective="val_loss", max_trials=2, seed=1)
        oracle.get_space().Float("learning_rate", 0.1, 1.0)
        oracle._set_project_dir(str(tmp_path), name)
        oracle.create_trial("tuner0")  # writes the trial's trial.json
        oracle.save()
        root = tmp_path / name
        written[name] = {
            str(path.relative_to(root)): json.loads(path.read_text()) for path in root.rglob("*.json")
        }
    assert sorted(written["whole"]) == sorted(written["plain"]) == ["oracle.json", "trial_0/trial.json"]
    assert written["whole"]["trial_0/trial.json"] == written["plain"]["trial_0/trial.json"]
    assert written["whole"]["oracle.json"].keys() == written["plain"]["oracle.json"].keys()


def test_global_seed_sets_tensorflows_seed_inside_the_block_and_puts_back_the_previous_one():
    from tensorflow.python.eager import context

    tf.random.set_seed(3)
    with internals.global_seed(11):
        assert context.global_seed() == 11
    assert context.global_seed() == 3
    tf.random.set_seed(None)
    with internals.global_seed(None):
        assert context.global_seed() is None  # no seed: nothing set
    with pytest.raises(RuntimeError), internals.global_seed(5):
        raise RuntimeError("failed inside")
    assert context.global_seed() is None
