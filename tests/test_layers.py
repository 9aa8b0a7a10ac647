"""Tests of tfresnet.models.layers: ImageNormalization's numbers and config, HeadDropout's rate."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfresnet
from tfresnet.models.layers import HeadDropout

# === ImageNormalization ===


@pytest.mark.parametrize(
    "mode, expected",
    [
        # RGB (0, 128, 255) -> BGR (255, 128, 0) minus the BGR means (103.939, 116.779, 123.68)
        ("caffe", [151.061, 11.221, -123.68]),
        ("tf", [-1.0, 128 / 127.5 - 1, 1.0]),
        ("unit", [0.0, 128 / 255, 1.0]),
        # ([0, 0.50196, 1] - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
        ("torch", [-2.1179039, 0.2051821, 2.64]),
    ],
)
def test_normalization_numbers(mode, expected):
    pixels = np.array([[[[0, 128, 255]]]], dtype="uint8")  # also: uint8 is cast before arithmetic
    out = tfresnet.ImageNormalization(mode)(pixels)
    assert out.dtype == "float32"
    assert tuple(out.shape) == (1, 1, 1, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0, 0, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("tf", keras.applications.resnet_v2.preprocess_input),
    ],
)
def test_normalization_matches_keras_preprocess_input(mode, reference, images):
    layer = tfresnet.ImageNormalization(mode)
    np.testing.assert_allclose(layer(images), reference(images.copy()), atol=1e-4)


@pytest.mark.parametrize("mode", ["caffe", "tf", "unit", "torch"])
def test_normalization_config_round_trip(mode, images):
    layer = tfresnet.ImageNormalization(mode, name="preprocessing")
    restored = tfresnet.ImageNormalization.from_config(layer.get_config())
    assert (restored.mode, restored.name) == (mode, "preprocessing")
    np.testing.assert_array_equal(restored(images), layer(images))


def test_unknown_normalization_mode():
    with pytest.raises(ValueError, match=r"mode must be one of \('caffe', 'tf', 'unit', 'torch'\)"):
        tfresnet.ImageNormalization("imagenet")


# === HeadDropout ===


def test_head_dropout_reads_its_rate_from_a_variable_in_one_traced_step():
    layer = HeadDropout(0.25, seed=0)
    ones = np.ones((200, 50), "float32")
    layer.build(ones.shape)  # as in a model, built before the step is traced
    step = tf.function(lambda x: layer(x, training=True))

    dropped = step(ones).numpy()
    layer.set_rate(0.75)
    dropped_more = step(ones).numpy()

    assert step.experimental_get_tracing_count() == 1
    for output, rate in ((dropped, 0.25), (dropped_more, 0.75)):
        assert set(np.unique(output)) == {0.0, np.float32(1 / (1 - rate))}
        assert abs((output == 0).mean() - rate) < 0.02
    np.testing.assert_array_equal(layer(ones, training=False), ones)
    with pytest.raises(ValueError, match="Received: rate=1.0"):
        layer.set_rate(1.0)
