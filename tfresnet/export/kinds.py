"""The export formats and LiteRT's quantizations, as data, in one place: the exporters, the
runtimes, the flags of `finetune` and of `python -m tfresnet.export` all read them here.

No TensorFlow is imported, so `--help` and a bad flag answer before it loads.

Example:
>>> FILE_FORMATS["litert"].suffix, FILE_FORMATS["litert"].file_name
('.tflite', 'model.tflite')
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FileFormat:
    """A format written as one file: its suffix, and its file's name in a run's output folder."""

    suffix: str

    @property
    def file_name(self) -> str:
        return "model" + self.suffix


# The formats written as one file beside the SavedModel, by name.
FILE_FORMATS = {"litert": FileFormat(".tflite"), "onnx": FileFormat(".onnx")}
# Every format a run can export: the SavedModel folder, then the files.
FORMATS = ("saved_model", *FILE_FORMATS)
# LiteRT's weights: float32 ("none"), float16, int8 weights with float activations ("dynamic"),
# or full integer ("int8", calibrated on training images).
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
