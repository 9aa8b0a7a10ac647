"""Calibration: the expected calibration error, the fitted temperature, and the temperature baked
into a model and its export."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels

import tfresnet
from tfresnet.insight import calibration


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _sampled(temperature: float, count: int = 4000, classes: int = 5, seed: int = 0):
    """Labels drawn from softmax(z) (calibrated by construction), and the probabilities of a
    model over-confident by `temperature`: softmax(z * temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (count, classes))
    labels = np.array([rng.choice(classes, p=p) for p in _softmax(logits)])
    return _softmax(logits * temperature), labels


# === The expected calibration error ===


def test_ece_of_confidence_that_matches_accuracy_is_zero():
    # 10 images at confidence 0.7, 7 of them right; 10 at confidence 0.9, 9 of them right.
    probabilities = np.array([[0.7, 0.3]] * 10 + [[0.1, 0.9]] * 10)
    labels = np.array([0] * 7 + [1] * 3 + [1] * 9 + [0])
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0, abs=1e-12)


def test_ece_weighs_each_bins_gap_by_its_images():
    # The bin (0.867, 0.933]: 8 images at 0.9, 4 right. The bin (0.533, 0.6]: 2 images at 0.6 and
    # 10 at 0.55, 5 of the 12 right (its upper edge belongs to it).
    probabilities = np.array([[0.9, 0.1]] * 8 + [[0.6, 0.4]] * 2 + [[0.55, 0.45]] * 10)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1] + [0, 0] + [0] * 3 + [1] * 7)
    bins = calibration.reliability_bins(probabilities, labels)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 20
    assert bins["count"][8] == 12  # (0.533, 0.6]: the 0.6 and the 0.55 images
    expected = (8 * abs(0.5 - 0.9) + 12 * abs(5 / 12 - (2 * 0.6 + 10 * 0.55) / 12)) / 20
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_ece_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one label per image"):
        calibration.expected_calibration_error(np.ones((3, 2)) / 2, np.array([0, 1]))


# === Temperature ===


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_fit_temperature_recovers_the_over_or_under_confidence(temperature):
    probabilities, labels = _sampled(temperature)
    fitted = calibration.fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(temperature, rel=0.1)
    nll = calibration.negative_log_likelihood(probabilities, labels, fitted)
    for other in (fitted * 0.9, fitted * 1.1):  # the minimum
        assert nll < calibration.negative_log_likelihood(probabilities, labels, other)
    before = calibration.expected_calibration_error(probabilities, labels)
    after = calibration.expected_calibration_error(
        calibration.scale_probabilities(probabilities, fitted), labels
    )
    assert after < before / 2


def test_scaling_keeps_the_predicted_labels():
    probabilities, _ = _sampled(2.0, count=200)
    for temperature in (0.3, 4.0):
        scaled = calibration.scale_probabilities(probabilities, temperature)
        np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
        np.testing.assert_allclose(scaled.sum(axis=1), 1.0)


# === Baked into the model and its export ===


@pytest.fixture
def classifier():
    return tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=32, head_units=16)


def test_the_temperature_baked_into_a_classifier_scales_its_probabilities(classifier, images):
    before = classifier.predict(images, verbose=0)
    assert calibration.apply_temperature(classifier, 2.5) is classifier
    after = classifier.predict(images, verbose=0)
    # The same Keras predict on the same batch: the same kernels, only the last layer differs.
    np.testing.assert_allclose(after, calibration.scale_probabilities(before, 2.5), atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))


def test_the_export_serves_the_calibrated_probabilities(images, tmp_path):
    """A small model ending like every classifier (a Dense softmax layer), exported after scaling."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs / 255.0))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    before = model.predict(images, verbose=0)
    calibration.apply_temperature(model, 0.4)
    path = tfresnet.export_saved_model(model, str(tmp_path / "model" / "1"), class_names=["a", "b", "c"])
    served = tf.saved_model.load(path).signatures["serve_images"](images=tf.constant(images))
    assert_close_across_kernels(served["probabilities"].numpy(), calibration.scale_probabilities(before, 0.4))


def test_apply_temperature_refuses_what_it_cannot_scale(classifier):
    inputs = keras.Input((4,))
    no_softmax = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(inputs))
    with pytest.raises(ValueError, match="Dense softmax"):
        calibration.apply_temperature(no_softmax, 2.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        calibration.apply_temperature(classifier, 0.0)


def test_calibration_is_single_label_only():
    probabilities = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=r"single-label only.*Received: multi-hot labels of shape \(2, 3\)"):
        calibration.fit_temperature(probabilities, np.array([[1, 0, 1], [0, 1, 0]]))
    model = tfresnet.build_classifier(
        3, backbone="resnet-test", weights=None, image_size=32, multi_label=True
    )
    kernel = model.get_layer("predictions").kernel.numpy()
    with pytest.raises(ValueError, match=r"^Calibration \(temperature scaling.*\) is single-label only"):
        calibration.apply_temperature(model, 2.0)
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), kernel)  # unchanged
