"""tfresnet: fine-tune ResNet50 image classifiers with Keras 3 on TensorFlow."""

from tfresnet.backbones import BACKBONES, Backbone
from tfresnet.data import ImageData, decode_for_eval, from_arrays, from_folder, from_tfds
from tfresnet.export import classification_report, export_saved_model, write_report
from tfresnet.freezing import freeze
from tfresnet.hub import HubLayer
from tfresnet.models import ImageNormalization, build_backbone, build_classifier
from tfresnet.training import FineTuneResult, fine_tune, resolve_strategy

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "Backbone",
    "FineTuneResult",
    "HubLayer",
    "ImageData",
    "ImageNormalization",
    "build_backbone",
    "build_classifier",
    "classification_report",
    "decode_for_eval",
    "export_saved_model",
    "fine_tune",
    "freeze",
    "from_arrays",
    "from_folder",
    "from_tfds",
    "resolve_strategy",
    "write_report",
    "__version__",
]
