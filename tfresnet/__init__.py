"""tfresnet: fine-tune ResNet50 image classifiers with Keras 3 on TensorFlow.

The public API, flat: data loaders (`from_folder`, `from_csv`, `from_tfds`, `from_arrays`) and
`show_batch`, the classifier and its recipe (`build_classifier`, `build_head`,
`compile_classifier`, `freeze`, `eval_crop_fraction`), training (`fine_tune`, `find_lr`), the
dataset check (`check_dataset`, `check_csv`, with `LabelIssueOptions` and `apply_label_fixes`),
evaluation and the report (`evaluate`, with test-time augmentation, `write_report`, `grad_cam`)
and the export (`export_saved_model`). The search lives in
`tfresnet.tuning`, the commands in `tfresnet.finetune` and `tfresnet.check`.

Names resolve on first use (PEP 562). `import tfresnet` also imports `tfresnet.models`, so
that Keras knows the custom layers of a saved `.keras` model (`ImageNormalization`,
`HubLayer`). It imports TensorFlow first, keeping the lines TensorFlow's native libraries print
while they load (`tfresnet.startup`): the commands keep the terminal to their own lines.

Example:
    import tfresnet
    model = tfresnet.build_classifier(3, weights=None, image_size=64)
"""

from __future__ import annotations

import importlib

from tfresnet import lazy, startup

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "BACKBONES": "tfresnet.models.backbones",
    "Backbone": "tfresnet.models.backbones",
    "FineTuneResult": "tfresnet.training",
    "HubLayer": "tfresnet.models.hub",
    "ImageData": "tfresnet.data",
    "ImageNormalization": "tfresnet.models.layers",
    "LabelIssueOptions": "tfresnet.insight.label_issues",
    "apply_label_fixes": "tfresnet.insight.label_fixes",
    "build_backbone": "tfresnet.models",
    "build_classifier": "tfresnet.models",
    "build_head": "tfresnet.models",
    "check_csv": "tfresnet.insight.dataset_check",
    "check_dataset": "tfresnet.insight.dataset_check",
    "compile_classifier": "tfresnet.models",
    "classification_report": "tfresnet.insight.report",
    "decode_for_eval": "tfresnet.data",
    "eval_crop_fraction": "tfresnet.models.backbones",
    "evaluate": "tfresnet.insight.evaluation",
    "export_saved_model": "tfresnet.export",
    "export_litert": "tfresnet.export",
    "export_onnx": "tfresnet.export",
    "load_predictor": "tfresnet.export.predictor",
    "fine_tune": "tfresnet.training",
    "find_lr": "tfresnet.training.lr_finder",
    "freeze": "tfresnet.models.freezing",
    "from_arrays": "tfresnet.data",
    "from_csv": "tfresnet.data",
    "from_folder": "tfresnet.data",
    "from_tfds": "tfresnet.data",
    "grad_cam": "tfresnet.insight.gradcam",
    "resolve_strategy": "tfresnet.training.distribute",
    "show_batch": "tfresnet.insight.batch_grid",
    "write_report": "tfresnet.insight.report",
}

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy.attach(__name__, _EXPORTS, submodules=True)

startup.import_tensorflow()
importlib.import_module("tfresnet.models")
