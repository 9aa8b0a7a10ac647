"""Exports of a trained classifier: a SavedModel for TensorFlow Serving.

`export_saved_model(model, export_dir, class_names=...)` writes a SavedModel whose signatures
take encoded image bytes or raw pixels, with `labels.txt` and `tfresnet_config.json` beside it.
"""

from tfresnet.export.saved_model import CONFIG_FILE, LABELS_FILE, export_saved_model

__all__ = ["CONFIG_FILE", "LABELS_FILE", "export_saved_model"]
