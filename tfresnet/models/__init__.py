"""The networks: the backbone table, weights, TF Hub and torchvision backbones, the tiny
network, the classifier with its one recipe, and freezing.

Each backbone is one row of `BACKBONES` (`backbones`); `weights` resolves and loads its
weights, `hub` and `torchvision_resnet` build the backbones that are not Keras applications,
`tiny_resnet` the small network of the tests; `layers` holds the layers tfresnet adds,
`classifier` puts the head on a backbone and holds the recipe (`compile_classifier`);
`freezing` chooses where training starts.

Example:
    from tfresnet import models
    model = models.build_classifier(3, weights=None, image_size=64)
"""

from tfresnet.models.backbones import BACKBONES, Backbone, eval_crop_fraction, get_backbone
from tfresnet.models.classifier import (
    HEAD_LAYERS,
    MIN_IMAGE_SIZE,
    WarmedUpAdam,
    build_backbone,
    build_classifier,
    build_head,
    check_ema_momentum,
    check_label_smoothing,
    compile_classifier,
    float32_copy,
    is_multi_label,
    one_hot_labels,
)
from tfresnet.models.freezing import freeze
from tfresnet.models.hub import HubLayer
from tfresnet.models.layers import NORMALIZATIONS, HeadDropout, ImageNormalization
from tfresnet.models.multi_label import LabelWeightedCrossentropy, label_weights
from tfresnet.models.thresholds import THRESHOLD, apply_thresholds, choose_thresholds

__all__ = [
    "BACKBONES",
    "HEAD_LAYERS",
    "MIN_IMAGE_SIZE",
    "NORMALIZATIONS",
    "THRESHOLD",
    "Backbone",
    "HeadDropout",
    "HubLayer",
    "ImageNormalization",
    "LabelWeightedCrossentropy",
    "WarmedUpAdam",
    "apply_thresholds",
    "build_backbone",
    "build_classifier",
    "build_head",
    "check_ema_momentum",
    "check_label_smoothing",
    "choose_thresholds",
    "compile_classifier",
    "eval_crop_fraction",
    "float32_copy",
    "freeze",
    "get_backbone",
    "is_multi_label",
    "label_weights",
    "one_hot_labels",
]
