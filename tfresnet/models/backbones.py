"""The backbone table: each backbone is one row of facts, not a branch in the code.

Adding a backbone adds a row: how to build it, how its inputs were normalised when it was
trained, how wide its features are, where its stages start (for freezing by index), the
central crop it was evaluated with, and which Keras weight file (or which torchvision files)
hold its ImageNet weights. Everything else reads the row; nothing builds a network to learn
one of these facts.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import keras

from tfresnet.data.transforms import CROP_FRACTION
from tfresnet.models import tiny_resnet, torchvision_resnet

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
TORCHVISION_WEIGHTS_URL = "https://download.pytorch.org/models/"
# `weights="torchvision:<version>"` names one of a backbone's `torchvision_weights`.
TORCHVISION_PREFIX = "torchvision:"

# Hub handles are recognised by these prefixes, besides an explicit "hub:" prefix.
HUB_URL_PREFIXES = ("https://tfhub.dev/", "https://www.kaggle.com/models/", "https://kaggle.com/")


@dataclasses.dataclass(frozen=True)
class TorchvisionWeights:
    """One of torchvision's published weight files, and how torchvision evaluated it.

    Attributes:
        file: File name as published; the hex digits after its last "-" start its SHA256.
        top1: ImageNet-1k top-1 accuracy (%) that torchvision reports for it.
        eval_resize: Shorter side that images are resized to (bilinear) for evaluation.
        eval_crop: Side of the central crop then evaluated.
    """

    file: str
    top1: float
    eval_resize: int
    eval_crop: int = 224

    @property
    def url(self) -> str:
        return TORCHVISION_WEIGHTS_URL + self.file

    @property
    def sha256_prefix(self) -> str:
        return self.file.rsplit("-", 1)[1].split(".")[0]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Facts about one backbone.

    Attributes:
        name: The name users pass as `backbone=`.
        builder: A constructor with the arguments of `keras.applications.ResNet50`, or None for
            a TF Hub module.
        normalization: How raw [0, 255] RGB pixels are normalised for it: `"caffe"` (RGB to
            BGR, minus the ImageNet mean), `"tf"` (scaled to [-1, 1]), `"unit"` ([0, 1]) or
            `"torch"` ([0, 1], minus the ImageNet mean, divided by its standard deviation).
        feature_size: Length of the pooled feature vector the head sees.
        pools_itself: True when the backbone returns pooled features (a TF Hub feature-vector
            module); otherwise the classifier adds a `"pooler"` layer.
        stages: First layer of each stage by stage name, as an index into the backbone's
            layers (the input layer is 0): what `freeze(model, until=name)` resolves to.
            Empty where it depends on the module (TF Hub).
        num_layers: Layers of the backbone without its top (0 where it depends on the module).
        eval_crop: Fraction of the shorter side kept by the central crop of evaluation, for
            weights that do not say otherwise (torchvision's say theirs: `eval_crop_fraction`).
        test_only: A tiny network for tests and smoke runs, without pretrained weights.
        weights_file: File name of the ImageNet weights (without the classification top).
        weights_hash: MD5 of that file, as published with Keras.
        torchvision_weights: torchvision's weight files by version (`weights="torchvision:<version>"`;
            `"DEFAULT"` is torchvision's default). A backbone with them takes PyTorch state dicts.
    """

    name: str
    builder: Callable[..., keras.Model] | None
    normalization: str
    feature_size: int = 2048
    pools_itself: bool = False
    stages: Mapping[str, int] = dataclasses.field(default_factory=dict)
    num_layers: int = 0
    eval_crop: float = CROP_FRACTION
    test_only: bool = False
    weights_file: str | None = None
    weights_hash: str | None = None
    torchvision_weights: Mapping[str, TorchvisionWeights] = dataclasses.field(default_factory=dict)

    @property
    def weights_url(self) -> str | None:
        return KERAS_WEIGHTS_URL + self.weights_file if self.weights_file else None


# Keras's ResNet50, and the tiny network that copies its structure.
RESNET50_STAGES = {"conv2": 7, "conv3": 39, "conv4": 81, "conv5": 143}

BACKBONES = {
    "resnet50": Backbone(
        name="resnet50",
        builder=keras.applications.ResNet50,
        normalization="caffe",
        stages=RESNET50_STAGES,
        num_layers=175,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="4d473c1dd8becc155b73f8504c6f6626",
    ),
    "resnet50v2": Backbone(
        name="resnet50v2",
        builder=keras.applications.ResNet50V2,
        normalization="tf",
        stages={"conv2": 5, "conv3": 40, "conv4": 86, "conv5": 154},
        num_layers=190,
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="fac2f116257151a9d068a22e544a4917",
    ),
    "resnet50-torchvision": Backbone(
        name="resnet50-torchvision",
        builder=torchvision_resnet.resnet50,
        normalization="torch",
        stages={"layer1": 7, "layer2": 42, "layer3": 88, "layer4": 156},
        num_layers=191,
        torchvision_weights={
            "IMAGENET1K_V1": TorchvisionWeights("resnet50-0676ba61.pth", top1=76.13, eval_resize=256),
            "IMAGENET1K_V2": TorchvisionWeights("resnet50-11ad3fa6.pth", top1=80.858, eval_resize=232),
            "DEFAULT": TorchvisionWeights("resnet50-11ad3fa6.pth", top1=80.858, eval_resize=232),
        },
    ),
    # resnet_v2_50/feature_vector's facts; a module's own layers are counted when it loads.
    "hub": Backbone(name="hub", builder=None, normalization="unit", pools_itself=True),
    "resnet-tiny": Backbone(
        name="resnet-tiny",
        builder=tiny_resnet.tiny_resnet,
        normalization="caffe",
        feature_size=tiny_resnet.FEATURE_SIZE,
        stages=RESNET50_STAGES,
        num_layers=175,
        test_only=True,
    ),
    "resnet-test": Backbone(
        name="resnet-test",
        builder=tiny_resnet.resnet_test,
        normalization="caffe",
        feature_size=tiny_resnet.FEATURE_SIZE,
        stages={"conv2": 7, "conv3": 19, "conv4": 31, "conv5": 43},
        num_layers=55,
        test_only=True,
    ),
}


def get_backbone(name: str) -> tuple[Backbone, str | None]:
    """Looks a backbone up by the name users pass.

    Args:
        name: `"resnet50"`, `"resnet50v2"`, `"resnet50-torchvision"`, `"resnet-tiny"` and
            `"resnet-test"` (for tests), `"hub:<handle>"` (a TF Hub or Kaggle URL or a local
            path), or a bare TF Hub / Kaggle URL.

    Returns:
        The backbone's row and, for a Hub module, its handle (None otherwise).

    Example:
    >>> get_backbone("hub:/models/resnet_v2_50")[1]
    '/models/resnet_v2_50'
    """
    if isinstance(name, str) and name.startswith("hub:"):
        handle = name[len("hub:") :]
        if not handle:
            raise ValueError("backbone='hub:' needs a handle after it, e.g. 'hub:/path/to/module'.")
        return BACKBONES["hub"], handle
    if isinstance(name, str) and name.startswith(HUB_URL_PREFIXES):
        return BACKBONES["hub"], name
    if name in BACKBONES and name != "hub":
        return BACKBONES[name], None
    allowed = ", ".join(repr(k) for k in BACKBONES if k != "hub")
    raise ValueError(
        f"Unknown backbone. Expected one of {allowed} or 'hub:<handle>'. Received: backbone={name!r}"
    )


def eval_crop_fraction(backbone: str, weights: str | os.PathLike | None = "imagenet") -> float:
    """The central crop, as a fraction of the shorter side, that `weights` were evaluated with.

    What the loaders' `crop_fraction` should be for these weights: the data's evaluation
    transform, the report and the SavedModel's `serving_default` then all crop as the weights'
    authors did. torchvision's weights say theirs (IMAGENET1K_V2, its default: resize 232,
    crop 224; V1: 256, 224), a local torchvision file by its published name; everything else
    takes the backbone's row (`Backbone.eval_crop`, 224 of 256 px).

    Example:
    >>> eval_crop_fraction("resnet50-torchvision", "torchvision:IMAGENET1K_V2")
    0.9655172413793104
    >>> eval_crop_fraction("resnet50")
    0.875
    """
    row, _ = get_backbone(backbone)
    version = _torchvision_version(row, weights)
    if version is None:
        return row.eval_crop
    published = row.torchvision_weights[version]
    return published.eval_crop / published.eval_resize


def _torchvision_version(row: Backbone, weights: str | os.PathLike | None) -> str | None:
    """The torchvision version `weights` name for `row`, or None (not torchvision's, or unknown)."""
    if not row.torchvision_weights or weights is None:
        return None
    weights = os.fspath(weights)
    if weights == "imagenet":
        return "DEFAULT"
    if weights.startswith(TORCHVISION_PREFIX):
        version = weights[len(TORCHVISION_PREFIX) :]
        return version if version in row.torchvision_weights else None
    name = os.path.basename(weights)
    return next((version for version, file in row.torchvision_weights.items() if file.file == name), None)
