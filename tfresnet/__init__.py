"""tfresnet: fine-tune ResNet50 image classifiers with Keras 3 on TensorFlow."""

from tfresnet.backbones import BACKBONES, Backbone
from tfresnet.freezing import freeze
from tfresnet.hub import HubLayer
from tfresnet.models import ImageNormalization, build_backbone, build_classifier

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "Backbone",
    "HubLayer",
    "ImageNormalization",
    "build_backbone",
    "build_classifier",
    "freeze",
    "__version__",
]
