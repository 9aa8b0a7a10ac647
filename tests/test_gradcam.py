"""Grad-CAM: heatmaps where the evidence is, from each backbone's last convolutional stage."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels

import tfresnet
from tfresnet.insight.gradcam import GradCamUnavailable, grad_cam
from tfresnet.models.layers import ImageNormalization

SIZE = 64


def _colour_model() -> keras.Model:
    """A classifier shaped like tfresnet's whose "backbone" averages 16x16 patches: its feature
    map is the image's colour on a 4x4 grid, and class k is the amount of colour channel k."""
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    pixels = keras.Input((SIZE, SIZE, 3))
    backbone = keras.Model(pixels, keras.layers.AveragePooling2D(16)(pixels), name="backbone")
    x = backbone(ImageNormalization("unit", name="preprocessing")(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="pooler")(x)
    predictions = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, predictions(x))
    predictions.set_weights([10 * np.eye(3, dtype="float32"), np.zeros(3, "float32")])
    return model


def _red_and_green() -> np.ndarray:
    """Black, with a large red square at the top left and a smaller green one at the bottom right
    (on the backbone's grid: red fills 2x2 of its cells, green 1)."""
    image = np.zeros((SIZE, SIZE, 3), "float32")
    image[:32, :32, 0] = 255
    image[48:, 48:, 1] = 255
    return image[None]


def test_the_heatmap_is_where_the_evidence_for_the_class_is():
    model, image = _colour_model(), _red_and_green()
    assert model.predict(image, verbose=0).argmax() == 0  # more red than green
    predicted, green = grad_cam(model, image)[0], grad_cam(model, image, class_index=1)[0]
    assert predicted.shape == green.shape == (SIZE, SIZE)
    assert predicted[:24, :24].min() == 1 and predicted[40:, :].max() == predicted[:, 40:].max() == 0
    assert green[52:, 52:].mean() > 0.9 and green[:40, :].max() == green[:, :40].max() == 0
    both = grad_cam(model, np.concatenate([image, image]), class_index=np.array([0, 1]))
    assert_close_across_kernels(both, np.stack([predicted, green]))  # a batch of 2 against 1
    assert not grad_cam(model, image, class_index=2).any()  # no blue anywhere: all zeros


@pytest.mark.parametrize(
    "backbone, last_stage",
    [
        ("resnet50", "conv5_block3_out"),
        ("resnet-tiny", "conv5_block3_out"),
        ("resnet-test", "conv5_block1_out"),
        ("resnet50v2", "post_relu"),
        ("resnet50-torchvision", "layer4_2_out"),
    ],
)
def test_grad_cam_weighs_the_last_convolutional_stage(backbone, last_stage, images):
    """With a linear head on average pooling, Grad-CAM is the class activation map
    relu(sum_k W[k, c] A_k) of the last stage's activations A: computed here from that named
    layer through a model of its own."""
    model = tfresnet.build_classifier(3, backbone=backbone, weights=None, image_size=SIZE, dropout=0.5)
    pixels = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    network = model.get_layer("backbone")
    stage = keras.Model(network.inputs, network.get_layer(last_stage).output)
    activations = stage(model.get_layer("preprocessing")(pixels)).numpy()
    kernel = model.get_layer("predictions").kernel.numpy()
    shown = 0
    for class_index in range(3):
        cam = np.maximum(np.einsum("bhwk,k->bhw", activations, kernel[:, class_index]), 0)
        cam = tf.image.resize(cam[..., None], (SIZE, SIZE))[..., 0].numpy()
        cam /= np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
        heatmaps = grad_cam(model, pixels, class_index=class_index)
        np.testing.assert_allclose(heatmaps, cam, atol=1e-4)
        shown += int((heatmaps.max(axis=(1, 2)) == 1).sum())
    assert shown > 0  # some maps are not all zeros


def test_heatmaps_of_a_hidden_head_lie_in_0_1(images):
    model = tfresnet.build_classifier(4, backbone="resnet-test", weights=None, image_size=SIZE, head_units=8)
    pixels = tf.image.resize(images, (SIZE, SIZE)).numpy()
    heatmaps = grad_cam(model, pixels)
    assert heatmaps.shape == (4, SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0 and set(np.round(heatmaps.max(axis=(1, 2)), 6)) <= {0.0, 1.0}


def _save_tiny_hub_module(path: str) -> str:
    """A reusable SavedModel that pools itself: mean colour times a matrix, 8 features."""
    weights = tf.Variable(tf.ones([3, 8]) / 3.0, name="dense/kernel")

    @tf.function
    def call(images, training=False):
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), weights)

    root = tf.train.Checkpoint()
    root.variables = [weights]
    root.trainable_variables = [weights]
    root.regularization_losses = []
    root.__call__ = call
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    tf.saved_model.save(root, path)
    return path


def test_an_opaque_hub_module_says_in_one_line_that_grad_cam_is_not_available(tmp_path, images):
    module = _save_tiny_hub_module(str(tmp_path / "module"))
    model = tfresnet.build_classifier(3, backbone=f"hub:{module}", image_size=32)
    with pytest.raises(GradCamUnavailable, match="not available for a TF Hub backbone") as raised:
        grad_cam(model, images)
    assert "\n" not in str(raised.value)


def test_a_model_without_a_backbone_and_a_bad_class_are_refused(images):
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    with pytest.raises(GradCamUnavailable, match="'backbone'"):
        grad_cam(plain, images)
    with pytest.raises(ValueError, match="class_index"):
        grad_cam(_colour_model(), _red_and_green(), class_index=3)
