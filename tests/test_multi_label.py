"""The multi-label loss: binary cross-entropy with smoothing and per-label weights."""

import keras
import numpy as np
import pytest

from tfresnet.models.multi_label import LabelWeightedCrossentropy, label_weights


def _targets_and_probabilities(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(6, 4)) < 0.4).astype("float32"), rng.uniform(0.02, 0.98, (6, 4)).astype(
        "float32"
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_without_weights_it_is_keras_binary_crossentropy(smoothing):
    targets, probabilities = _targets_and_probabilities()
    ours = LabelWeightedCrossentropy(smoothing)(targets, probabilities)
    theirs = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)(targets, probabilities)
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)


def test_each_labels_positives_and_negatives_weigh_as_asked():
    targets, probabilities = _targets_and_probabilities(1)
    positive, negative = [3.0, 1.0, 0.5, 2.0], [0.2, 1.0, 4.0, 1.0]
    loss = LabelWeightedCrossentropy(positive_weights=positive, negative_weights=negative)
    expected = -(
        targets * np.log(probabilities) * positive + (1 - targets) * np.log(1 - probabilities) * negative
    ).mean(axis=1)
    np.testing.assert_allclose(float(loss(targets, probabilities)), expected.mean(), rtol=1e-5)


def test_the_loss_travels_in_a_saved_model(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid")(inputs))
    model.compile(
        loss=LabelWeightedCrossentropy(0.1, positive_weights=[2.0, 1.0], negative_weights=[1.0, 0.5])
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.get_config() == model.loss.get_config()


def test_balanced_weights_give_each_side_of_a_label_half_the_weight():
    weights = label_weights([10, 0, 50], 50)
    assert weights["positive"][0] * 10 == pytest.approx(weights["negative"][0] * 40)
    assert weights["positive"][0] * 10 == pytest.approx(25)
    assert weights["positive"][1:] == [1.0, 1.0] and weights["negative"][1:] == [1.0, 1.0]
    assert label_weights([10, 5], 50, "none") is None
