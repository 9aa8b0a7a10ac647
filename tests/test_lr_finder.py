"""`find_lr` on the tiny backbone's head: a sweep that finds the fall and leaves no trace."""

import types

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet.training.lr_finder import _steepest_descent, find_lr

STEPS, START, END = 30, 1e-5, 10.0


def _data():
    """One batch of 18 images in 3 colours: every step sees the same batch, so the loss
    depends on the rate alone."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    colours = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], dtype="float32")
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (24, 32, 32, 3)), 0, 255)
    return tfresnet.from_arrays(
        images.astype("uint8"), labels, image_size=32, batch_size=32, augmentation="none", seed=0
    )


def _head_model() -> keras.Model:
    model = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=32, dropout=0.0)
    tfresnet.freeze(model, until=None)  # the head phase: a quick sweep
    return model


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep of an uncompiled model."""
    keras.utils.set_random_seed(0)
    data, model = _data(), _head_model()
    before = model.get_weights()
    plot = tmp_path_factory.mktemp("lr") / "lr_find.png"
    found = find_lr(model, data.train, start_lr=START, end_lr=END, steps=STEPS, output_path=str(plot))
    return types.SimpleNamespace(model=model, data=data, before=before, found=found, plot=plot)


def test_the_suggestion_lies_in_the_sweep_before_the_loss_minimum(sweep):
    rates, losses = sweep.found["learning_rates"], sweep.found["losses"]
    suggested = sweep.found["suggested_learning_rate"]
    assert suggested in rates
    assert rates[0] < suggested < rates[int(np.argmin(losses))]
    assert losses[rates.index(suggested)] < losses[0]  # the loss already falls there


def test_the_sweep_rises_geometrically_and_stops_when_the_loss_diverges(sweep):
    rates, losses = np.array(sweep.found["learning_rates"]), sweep.found["losses"]
    np.testing.assert_allclose(rates[1:] / rates[:-1], (END / START) ** (1 / (STEPS - 1)), rtol=1e-6)
    assert rates[0] == pytest.approx(START)
    assert len(losses) < STEPS and losses[-1] > 4 * min(losses)
    assert sweep.plot.read_bytes()[:4] == b"\x89PNG"


def test_an_uncompiled_model_is_left_uncompiled_with_its_weights(sweep):
    for expected, actual in zip(sweep.before, sweep.model.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    assert not sweep.model.compiled
    with pytest.raises(ValueError, match="compile"):
        sweep.model.fit(sweep.data.train, epochs=1, verbose=0)


def test_a_compiled_model_gets_its_compile_settings_and_weights_back():
    model = _head_model()
    model.compile(keras.optimizers.SGD(0.05), "categorical_crossentropy", metrics=["accuracy"])
    config, before = model.get_compile_config(), model.get_weights()
    find_lr(model, _data().train, steps=6, end_lr=10.0)

    assert model.get_compile_config() == config
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    for expected, actual in zip(before, model.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_steepest_descent_picks_the_fastest_fall_before_the_minimum():
    rates = list(np.logspace(-6, 0, 13))
    losses = [2.0, 2.0, 2.0, 1.99, 1.9, 1.5, 0.9, 0.6, 0.5, 0.45, 0.6, 2.0, 9.0]
    suggested = _steepest_descent(rates, losses)
    assert rates[4] <= suggested <= rates[7]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_lr": 1.0, "end_lr": 0.1}, "Need 0 < start_lr < end_lr"),
        ({"start_lr": 0.0}, "Need 0 < start_lr < end_lr"),
        ({"steps": 4}, "steps must be at least 5"),
    ],
)
def test_bad_sweeps_fail_before_training(kwargs, message):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=message):
        find_lr(model, None, **kwargs)


def test_a_multi_label_model_sweeps_on_its_multi_hot_rows(multi_label_data):
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        3, backbone="resnet-test", weights=None, image_size=32, dropout=0.0, multi_label=True
    )
    tfresnet.freeze(model, until=None)
    found = find_lr(model, multi_label_data.train, start_lr=START, end_lr=END, steps=STEPS)
    assert min(found["losses"]) < found["losses"][0]
