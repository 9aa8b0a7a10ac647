"""Grad-CAM: where in an image a classifier found the evidence for a class.

`grad_cam(model, images)` weighs the feature maps of the backbone's last convolutional stage
(`conv5_block3_out` of Keras's ResNet50 and of `resnet-tiny`, `post_relu` of ResNet50V2,
`layer4_2_out` of torchvision's: each backbone's output) by the gradient of the class score (the
logit before the softmax) averaged over their positions, sums them, keeps the positive part and
scales it to the image (Selvaraju et al., 2017). The model runs layer by layer under a
`tf.GradientTape`, from the input through the backbone to the predictions, so the backbone's
output is at hand without rebuilding the nested backbone. A TF Hub backbone is opaque: it
returns pooled features, so there is no feature map to weigh.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfresnet.models.hub import HubLayer

BACKBONE_LAYER = "backbone"


class GradCamUnavailable(ValueError):
    """The model has no convolutional feature map that Grad-CAM can weigh."""


def _split(model: keras.Model) -> tuple[list, keras.layers.Layer, list]:
    """The layers before the backbone, the backbone, and the layers after it, in order."""
    names = [layer.name for layer in model.layers]
    if BACKBONE_LAYER not in names:
        raise GradCamUnavailable(
            f"Grad-CAM is not available: it needs a classifier built by tfresnet.build_classifier, with a "
            f"layer named {BACKBONE_LAYER!r}. Received model {model.name!r} with layers {names}."
        )
    backbone = model.get_layer(BACKBONE_LAYER)
    if isinstance(backbone, HubLayer):
        raise GradCamUnavailable(
            "Grad-CAM is not available for a TF Hub backbone: the module is opaque and returns "
            "pooled features, with no convolutional feature map to weigh."
        )
    index = names.index(BACKBONE_LAYER)
    before = [layer for layer in model.layers[:index] if not isinstance(layer, keras.layers.InputLayer)]
    return before, backbone, model.layers[index + 1 :]


def _logits(layers: list, features: tf.Tensor) -> tf.Tensor:
    """Runs the layers after the backbone; the last one's softmax is left out (class scores)."""
    x = features
    for layer in layers[:-1]:
        x = layer(x, training=False)
    last = layers[-1]
    if isinstance(last, keras.layers.Dense):
        return tf.matmul(tf.cast(x, last.kernel.dtype), last.kernel) + (last.bias if last.use_bias else 0.0)
    return last(x, training=False)


def _class_indices(class_index, shape) -> np.ndarray:
    """`class_index` as one index per image, checked against the number of classes."""
    indices = np.broadcast_to(np.asarray(class_index), (shape[0],))
    if indices.dtype.kind not in "iu" or indices.min() < 0 or indices.max() >= shape[-1]:
        raise ValueError(
            f"class_index must be None, or an integer (or one per image) in [0, {shape[-1]}). "
            f"Received: class_index={class_index!r}"
        )
    return indices


def grad_cam(model: keras.Model, images, class_index: int | np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM heatmaps of `images` for the predicted class or a given one.

    Args:
        model: A classifier from `tfresnet.build_classifier` (a Keras, V2, torchvision or tiny
            backbone; not a TF Hub module).
        images: A batch of raw [0, 255] RGB images, `(batch, height, width, 3)`.
        class_index: The class to explain: None for each image's predicted class, an int for
            all images, or one index per image.

    Returns:
        float32 heatmaps `(batch, height, width)` in [0, 1]: each map divided by its maximum
        (all zeros where no position speaks for the class).

    Raises:
        GradCamUnavailable: A TF Hub backbone, or a model without a `"backbone"` layer.

    Example:
        heatmaps = grad_cam(model, images[:4])
        heatmaps.shape, float(heatmaps.max())
        # ((4, 224, 224), 1.0)
    """
    before, backbone, after = _split(model)
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must be a batch (batch, height, width, 3). Received shape {images.shape}.")
    x = images
    for layer in before:
        x = layer(x, training=False)
    features = tf.cast(backbone(x, training=False), tf.float32)  # no tape: its activations go
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = _logits(after, features)
        if class_index is None:
            chosen = tf.argmax(logits, axis=1, output_type=tf.int32)
        else:
            chosen = tf.constant(_class_indices(class_index, logits.shape), tf.int32)
        scores = tf.gather(logits, chosen, axis=1, batch_dims=1)
    if features.shape.rank != 4:
        raise GradCamUnavailable(
            f"The backbone's output has shape {features.shape}: Grad-CAM needs a feature map."
        )
    gradients = tape.gradient(scores, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    maps = tf.image.resize(maps, images.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, peak).numpy().astype(np.float32)
