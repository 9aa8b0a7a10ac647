"""`build_classifier`: normalisation layer -> backbone -> named classification head.

Models take raw RGB pixels in [0, 255]. Each backbone's own normalisation is the model's first
layer, so the data pipeline, evaluation and the exported SavedModel all feed the backbone
exactly what it was trained on.
"""

from __future__ import annotations

import os

import h5py
import keras
from keras import ops

from tfresnet.backbones import Backbone, get_backbone
from tfresnet.freezing import freeze
from tfresnet.hub import HubLayer

# ImageNet channel means in BGR order, subtracted by "caffe"-style normalisation.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
NORMALIZATIONS = ("caffe", "tf", "unit")
MIN_IMAGE_SIZE = 32


# === Layers ===


@keras.saving.register_keras_serializable(package="tfresnet")
class ImageNormalization(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to the range a backbone was trained on.

    It always computes in float32, also under mixed precision.

    Args:
        mode: `"caffe"` (RGB to BGR, minus the ImageNet mean: Keras's ResNet50), `"tf"`
            ([-1, 1]: Keras's ResNet50V2) or `"unit"` ([0, 1]: TF Hub image modules).
        **kwargs: Passed to `keras.layers.Layer`.

    Example:
    >>> ImageNormalization("tf")(np.full((1, 2, 2, 3), 255.0))[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"mode must be one of {NORMALIZATIONS}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x / 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# === Weights ===


def _weights_cache_dir() -> str:
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def _imagenet_weights_path(backbone: Backbone) -> str:
    """The cached ImageNet weight file of `backbone`, downloaded by Keras when missing."""
    cache_dir = os.path.dirname(_weights_cache_dir())
    try:
        return keras.utils.get_file(
            backbone.weights_file,
            backbone.weights_url,
            cache_subdir="models",
            cache_dir=cache_dir,
            file_hash=backbone.weights_hash,
        )
    except Exception as error:  # Keras raises a bare Exception on a failed fetch
        raise OSError(
            f"Could not download the ImageNet weights of {backbone.name} "
            f"({backbone.weights_file}): {error}. Without network access, download that file "
            f"elsewhere and put it in {_weights_cache_dir()} (the Keras cache; KERAS_HOME moves "
            "it), or pass weights='/path/to/file.h5', or weights=None for random initialisation."
        ) from None


def _load_weights(network: keras.Model, path: str, backbone_name: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Weights file not found: {path!r}. Pass 'imagenet', None, or the path of an "
            ".h5 or .weights.h5 file saved from a Keras backbone."
        )
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path!r} is not a weights file: Keras weights are HDF5 files (.h5 or "
            ".weights.h5), e.g. the ones keras.applications caches in ~/.keras/models."
        )
    try:
        network.load_weights(path)
    except Exception as error:  # Keras reports mismatches with several exception types
        raise ValueError(
            f"The weights in {path!r} do not fit the {backbone_name} backbone "
            f"(saved from another architecture or input shape?): {error}"
        ) from None


# === Builder ===


def build_backbone(
    backbone: str = "resnet50", *, weights: str | None = "imagenet", image_size: int = 224
) -> tuple[keras.layers.Layer, ImageNormalization]:
    """Builds a backbone without its top and the normalisation layer it expects.

    Args:
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"` (a TF Hub / Kaggle URL or
            a local SavedModel directory).
        weights: `"imagenet"`, None (random), or the path of an `.h5` / `.weights.h5` file.
            Ignored for Hub modules, which carry their weights.
        image_size: Height and width of the input images.

    Returns:
        `(backbone_layer, normalization_layer)`, the backbone named `"backbone"`.

    Example:
    >>> network, normalization = build_backbone("resnet50v2", weights=None, image_size=64)
    >>> normalization.mode
    'tf'
    """
    row, handle = get_backbone(backbone)
    normalization = ImageNormalization(row.normalization, name="preprocessing")
    if handle is not None:
        return HubLayer(handle, name="backbone"), normalization
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', None or a file path. Received: weights={weights!r}")
    network = row.builder(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        name="backbone",
    )
    if weights == "imagenet":
        _load_weights(network, _imagenet_weights_path(row), row.name)
    elif weights is not None:
        _load_weights(network, os.fspath(weights), row.name)
    return network, normalization


def build_classifier(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    image_size: int = 224,
    head_units: int | None = None,
    dropout: float = 0.2,
    freeze_until: int | str | None = None,
) -> keras.Model:
    """Builds a ResNet50 image classifier that takes raw RGB pixels in [0, 255].

    Layers, by name: `"preprocessing"` (the backbone's normalisation), `"backbone"`,
    `"pooler"` (global average pooling; absent for Hub modules, which pool themselves),
    `"head_dense"` (when `head_units`), `"output_dropout"` (when `dropout > 0`) and
    `"predictions"` (softmax probabilities, float32 also under mixed precision). The backbone
    is called in inference mode, so its BatchNormalization layers keep their statistics.

    Args:
        num_classes: Number of classes, at least 2.
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"`.
        weights: `"imagenet"` (downloaded once into the Keras cache), None, or the path of an
            `.h5` / `.weights.h5` file of the backbone without its top.
        image_size: Height and width of the input images, at least 32.
        head_units: Units of an optional hidden ReLU layer in the head.
        dropout: Dropout rate before the predictions (0 for none).
        freeze_until: Index or name of the first trainable backbone layer (see
            `tfresnet.freeze`); None freezes the whole backbone, 0 trains all of it.

    Returns:
        An uncompiled `keras.Model`.

    Example:
    >>> model = build_classifier(5, weights=None, image_size=64, head_units=128)
    >>> model.output_shape
    (None, 5)
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer >= {MIN_IMAGE_SIZE}. Received: image_size={image_size!r}"
        )
    if head_units is not None and (not isinstance(head_units, int) or head_units < 1):
        raise ValueError(
            f"head_units must be None or a positive integer. Received: head_units={head_units!r}"
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")

    network, normalization = build_backbone(backbone, weights=weights, image_size=image_size)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = normalization(inputs)
    if isinstance(network, HubLayer):
        x = network(x)
    else:
        x = network(x, training=False)
        x = keras.layers.GlobalAveragePooling2D(name="pooler")(x)
    if head_units:
        x = keras.layers.Dense(head_units, activation="relu", name="head_dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="output_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"{get_backbone(backbone)[0].name}_classifier")
    freeze(model, until=freeze_until)
    return model
