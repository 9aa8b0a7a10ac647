"""Exports of a trained classifier: a SavedModel for TensorFlow Serving, LiteRT and ONNX files.

`export_saved_model(model, export_dir, class_names=...)` writes a SavedModel whose signatures
take encoded image bytes or raw pixels, with `labels.txt` and `tfresnet_config.json` beside it.
`export_litert(model, "model.tflite", quantization=...)` and `export_onnx(model, "model.onnx")`
convert a Keras classifier or such a SavedModel, with the class names in `<file>.labels.txt`.
A multi-label classifier's exports keep its decision threshold of each label: the SavedModel
applies them (its `predicted` output), the files record them in `<file>.json`.

Names are imported on first use (PEP 562): the converters load only for the formats asked for.
"""

from __future__ import annotations

from tfresnet import lazy

# Public name -> the module that defines it.
_EXPORTS = {
    "CONFIG_FILE": "tfresnet.export.saved_model",
    "LABELS_FILE": "tfresnet.export.saved_model",
    "export_saved_model": "tfresnet.export.saved_model",
    "export_litert": "tfresnet.export.litert",
    "export_onnx": "tfresnet.export.onnx_export",
    "export_formats": "tfresnet.export.formats",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy.attach(__name__, _EXPORTS)
