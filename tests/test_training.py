import os

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet import training


def _tiny_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    colours = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], dtype="float32")
    images = colours[labels][:, None, None, :] + rng.normal(0, 20, (24, 32, 32, 3))
    return tfresnet.from_arrays(
        np.clip(images, 0, 255).astype("uint8"), labels, image_size=32, batch_size=8, val_split=0.25, seed=0
    )


@pytest.fixture
def tiny_data():
    return _tiny_data()


def _fresh_backbone(seed):
    keras.utils.set_random_seed(seed)
    return tfresnet.build_classifier(3, weights=None, image_size=32).get_layer("backbone")


def test_class_weights_balance_the_classes():
    weights = training.class_weights([30, 10, 20])
    assert weights == pytest.approx({0: 60 / 90, 1: 2.0, 2: 1.0})
    assert training.class_weights([5, 5], "none") is None
    with pytest.raises(ValueError, match="class_weight must be one of"):
        training.class_weights([5, 5], "inverse")


def test_fine_tune_schedule_warms_up_then_decays():
    schedule = training.fine_tune_schedule(1e-3, steps=100, warmup_steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] == pytest.approx(0.0)
    assert rates[1] == pytest.approx(5e-4, rel=1e-3)
    assert rates[2] == pytest.approx(1e-3, rel=1e-3)
    assert rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0.0, abs=1e-7)


def test_head_phase_leaves_the_backbone_untouched(tiny_data, tmp_path):
    result = training.fine_tune(
        tiny_data, weights=None, head_epochs=2, epochs=0, seed=3, output_dir=str(tmp_path), verbose=0
    )
    fresh = _fresh_backbone(3)
    for expected, actual in zip(fresh.weights, result.model.get_layer("backbone").weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    assert result.history["phase"] == [1, 1]
    assert len(result.history["val_accuracy"]) == 2
    for name in ("best.weights.h5", "config.json", "log_head.csv"):
        assert os.path.exists(tmp_path / name)


def test_fine_tune_phase_trains_from_freeze_until_and_keeps_batch_norm(tiny_data):
    result = training.fine_tune(
        tiny_data, weights=None, head_epochs=1, epochs=1, freeze_until="conv5", seed=3, verbose=0
    )
    fresh, trained = _fresh_backbone(3), result.model.get_layer("backbone")
    same = {
        layer.name: all(
            np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(layer.weights, trained.get_layer(layer.name).weights)
        )
        for layer in fresh.layers
        if layer.weights
    }
    assert same["conv1_conv"] and same["conv4_block6_3_conv"]
    assert not same["conv5_block3_3_conv"]
    assert all(same[name] for name in same if name.endswith("_bn"))
    assert result.history["phase"] == [1, 2]
    assert result.config["fine_tune_learning_rate"] == pytest.approx(1e-4)


def test_same_seed_same_result():
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(1)  # the same starting state, as in two fresh processes
        runs.append(
            training.fine_tune(_tiny_data(), weights=None, head_epochs=1, epochs=0, seed=7, verbose=0)
        )
    np.testing.assert_allclose(runs[0].history["loss"], runs[1].history["loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head_epochs": 0, "epochs": 0}, "Nothing to train"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"resume": True}, "resume=True needs the output_dir"),
        ({"freeze_until": 500}, "out of range"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"mixed_precision": "yes"}, "mixed_precision must be one of"),
    ],
)
def test_bad_settings_fail_before_training(tiny_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.fine_tune(tiny_data, weights=None, verbose=0, **kwargs)


def test_resolve_strategy_without_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = training.resolve_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert training.is_chief(strategy)


def test_find_lr_sweeps_and_restores_the_model(tiny_data, tmp_path):
    model = tfresnet.build_classifier(3, weights=None, image_size=32)
    model.compile("sgd", "categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    sweep = training.find_lr(
        model, tiny_data.train, steps=12, end_lr=10.0, output_path=str(tmp_path / "lr.png")
    )

    rates = np.array(sweep["learning_rates"])
    assert len(rates) == len(sweep["losses"]) <= 12
    np.testing.assert_allclose(rates[1:] / rates[:-1], (10.0 / 1e-7) ** (1 / 11), rtol=1e-6)
    assert sweep["suggested_learning_rate"] in sweep["learning_rates"]
    for expected, actual in zip(before, model.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


def test_steepest_descent_picks_the_fastest_fall():
    rates = list(np.logspace(-6, 0, 13))
    losses = [2.0, 2.0, 2.0, 1.99, 1.9, 1.5, 0.9, 0.6, 0.5, 0.45, 0.6, 2.0, 9.0]
    suggested = training._steepest_descent(rates, losses)
    assert rates[4] <= suggested <= rates[7]
