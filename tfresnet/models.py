"""`build_classifier`: normalisation layer -> backbone -> named classification head.

Models take raw RGB pixels in [0, 255]. Each backbone's own normalisation is the model's first
layer, so the data pipeline, evaluation and the exported SavedModel all feed the backbone
exactly what it was trained on.
"""

from __future__ import annotations

import hashlib
import os

import h5py
import keras
from keras import ops

from tfresnet.backbones import BACKBONES, Backbone, get_backbone
from tfresnet.freezing import freeze
from tfresnet.hub import HubLayer
from tfresnet.torchvision_resnet import STATE_DICT_SUFFIXES, load_state_dict

# ImageNet channel means in BGR order, subtracted by "caffe"-style normalisation.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet channel means and standard deviations of [0, 1] RGB, as torchvision normalises.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("caffe", "tf", "unit", "torch")
MIN_IMAGE_SIZE = 32
TORCHVISION_PREFIX = "torchvision:"


# === Layers ===


@keras.saving.register_keras_serializable(package="tfresnet")
class ImageNormalization(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to the range a backbone was trained on.

    It always computes in float32, also under mixed precision.

    Args:
        mode: `"caffe"` (RGB to BGR, minus the ImageNet mean: Keras's ResNet50), `"tf"`
            ([-1, 1]: Keras's ResNet50V2), `"unit"` ([0, 1]: TF Hub image modules) or
            `"torch"` ([0, 1], minus the ImageNet mean, divided by its standard deviation:
            torchvision's models).
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
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_MEAN_RGB, "float32")
            return (x / 255.0 - mean) / ops.convert_to_tensor(TORCH_STD_RGB, "float32")
        return x / 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# === Weights ===


def _weights_cache_dir() -> str:
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def _cached_file(file_name: str, url: str, file_hash: str | None, what: str, example: str) -> str:
    """`file_name` in the Keras cache, downloaded by Keras when missing."""
    cache_dir = os.path.dirname(_weights_cache_dir())
    try:
        return keras.utils.get_file(
            file_name, url, cache_subdir="models", cache_dir=cache_dir, file_hash=file_hash
        )
    except Exception as error:  # Keras raises a bare Exception on a failed fetch
        raise OSError(
            f"Could not download {what} ({file_name}): {error}. Without network access, download "
            f"that file elsewhere and put it in {_weights_cache_dir()} (the Keras cache; KERAS_HOME "
            f"moves it), or pass weights={example!r}, or weights=None for random initialisation."
        ) from None


def _imagenet_weights_path(backbone: Backbone) -> str:
    """The cached ImageNet weight file of `backbone`, downloaded by Keras when missing."""
    return _cached_file(
        backbone.weights_file,
        backbone.weights_url,
        backbone.weights_hash,
        f"the ImageNet weights of {backbone.name}",
        "/path/to/file.h5",
    )


def _torchvision_weights_path(backbone: Backbone, version: str) -> str:
    """torchvision's `version` file of `backbone` in the Keras cache, its SHA256 checked."""
    weights = f"{TORCHVISION_PREFIX}{version}"
    if not backbone.torchvision_weights:
        takers = [name for name, row in BACKBONES.items() if row.torchvision_weights]
        raise ValueError(
            f"torchvision weights load into backbone={' or '.join(map(repr, takers))} only. "
            f"Received: backbone={backbone.name!r}, weights={weights!r}"
        )
    if version not in backbone.torchvision_weights:
        allowed = ", ".join(repr(TORCHVISION_PREFIX + name) for name in backbone.torchvision_weights)
        raise ValueError(
            f"Unknown torchvision weights. Expected one of {allowed}. Received: weights={weights!r}"
        )
    published = backbone.torchvision_weights[version]
    path = _cached_file(
        published.file,
        published.url,
        None,  # torchvision publishes the start of the SHA256 only, in the file name
        f"torchvision's {version} weights of {backbone.name}",
        f"/path/to/{published.file}",
    )
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(published.sha256_prefix):
        raise ValueError(
            f"{path!r} is not torchvision's {published.file}: its SHA256 starts with "
            f"{digest.hexdigest()[:8]}, not {published.sha256_prefix} (an interrupted download?). "
            "Delete it to download it again."
        )
    return path


def _load_weights(network: keras.Model, path: str, backbone: Backbone) -> None:
    state_dicts = " (or a .pth/.safetensors state dict)" if backbone.torchvision_weights else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Weights file not found: {path!r}. Pass 'imagenet', None, or the path of an "
            f".h5 or .weights.h5 file saved from a Keras backbone{state_dicts}."
        )
    if path.endswith(STATE_DICT_SUFFIXES):
        if not backbone.torchvision_weights:
            takers = [name for name, row in BACKBONES.items() if row.torchvision_weights]
            raise ValueError(
                f"{path!r} is a PyTorch state dict: backbone={' or '.join(map(repr, takers))} "
                f"takes those. Received: backbone={backbone.name!r}"
            )
        load_state_dict(network, path)
        return
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path!r} is not a weights file: Keras weights are HDF5 files (.h5 or "
            f".weights.h5), e.g. the ones keras.applications caches in ~/.keras/models{state_dicts}."
        )
    try:
        network.load_weights(path)
    except Exception as error:  # Keras reports mismatches with several exception types
        raise ValueError(
            f"The weights in {path!r} do not fit the {backbone.name} backbone "
            f"(saved from another architecture or input shape?): {error}"
        ) from None


# === Builder ===


def build_backbone(
    backbone: str = "resnet50", *, weights: str | None = "imagenet", image_size: int = 224
) -> tuple[keras.layers.Layer, ImageNormalization]:
    """Builds a backbone without its top and the normalisation layer it expects.

    Args:
        backbone: `"resnet50"`, `"resnet50v2"`, `"resnet50-torchvision"` or `"hub:<handle>"`
            (a TF Hub / Kaggle URL or a local SavedModel directory).
        weights: `"imagenet"`, None (random), or the path of an `.h5` / `.weights.h5` file.
            For `"resnet50-torchvision"` also `"torchvision:IMAGENET1K_V1"`,
            `"torchvision:IMAGENET1K_V2"` (what `"imagenet"` loads: torchvision's default) or
            the path of a PyTorch state dict (`.pth`, `.pt`, `.safetensors`). Ignored for Hub
            modules, which carry their weights.
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
    if weights == "imagenet" and row.torchvision_weights:
        weights = f"{TORCHVISION_PREFIX}DEFAULT"
    if isinstance(weights, str) and weights.startswith(TORCHVISION_PREFIX):
        path = _torchvision_weights_path(row, weights[len(TORCHVISION_PREFIX) :])
    elif weights == "imagenet":
        path = _imagenet_weights_path(row)
    else:
        path = None if weights is None else os.fspath(weights)
    network = row.builder(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        name="backbone",
    )
    if path is not None:
        _load_weights(network, path, row)
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
        backbone: `"resnet50"`, `"resnet50v2"`, `"resnet50-torchvision"` or `"hub:<handle>"`.
        weights: `"imagenet"` (downloaded once into the Keras cache), None, or the path of an
            `.h5` / `.weights.h5` file of the backbone without its top; for
            `"resnet50-torchvision"` also `"torchvision:IMAGENET1K_V1"` / `"..._V2"` or a
            `.pth` / `.safetensors` state dict (see `build_backbone`).
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
