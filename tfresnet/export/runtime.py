"""Running an exported classifier: a SavedModel folder, a LiteRT `.tflite` or an `.onnx` file.

Each runtime takes a batch of raw RGB pixels in [0, 255], float32 `(batch, size, size, 3)`,
and returns the probabilities: SavedModels through their `serve_images` signature, LiteRT
files with `ai-edge-litert`, ONNX files with `onnxruntime`. Class names come from `labels.txt`
inside the SavedModel folder, and from `<file>.labels.txt` beside a `.tflite` or `.onnx` file;
the crop and a multi-label classifier's thresholds from its `tfresnet_config.json`, and from
`<file>.json` beside a file.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from tfresnet import internals, paths
from tfresnet.data.transforms import CROP_FRACTION
from tfresnet.export.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    PIXELS_SIGNATURE,
    labels_path,
    read_labels,
    read_settings,
    settings_thresholds,
)
from tfresnet.export.kinds import FILE_FORMATS
from tfresnet.export.saved_model import CONFIG_FILE, LABELS_FILE
from tfresnet.files import read_json

# The file format of each suffix.
SUFFIXES = {kind.suffix: name for name, kind in FILE_FORMATS.items()}
# The package each format runs with, and the extra that installs it.
RUNTIME_PACKAGES = {
    "litert": ("ai_edge_litert.interpreter", "pip install 'tfresnet[litert]' (ai-edge-litert)"),
    "onnx": ("onnxruntime", "pip install 'tfresnet[onnx]' (onnxruntime)"),
}


def model_format(path: str | os.PathLike) -> str:
    """`"saved_model"`, `"litert"` or `"onnx"`: what the model at `path` is.

    Raises:
        FileNotFoundError: Nothing at `path`.
        ValueError: Neither a SavedModel folder nor a `.tflite` or `.onnx` file.

    Example:
        model_format("models/flowers/model.tflite")
        # 'litert'
    """
    path = os.fspath(path)
    if not paths.exists(path):
        raise FileNotFoundError(
            f"Model not found: {path!r}. Pass a SavedModel folder, a .tflite or an .onnx file."
        )
    if paths.isdir(path):
        if not paths.isfile(paths.join(path, "saved_model.pb")):
            raise ValueError(f"{path!r} is a folder without saved_model.pb: not a SavedModel folder.")
        return "saved_model"
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"Unknown model format {suffix or 'without a suffix'!s} of {path!r}: pass a SavedModel "
            f"folder, a .tflite (LiteRT) or an .onnx file."
        )
    return SUFFIXES[suffix]


def import_runtime(format: str):
    """The module that runs `format` files; an ImportError naming the extra when it is missing."""
    module, install = RUNTIME_PACKAGES[format]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"Running {format} models needs {module.split('.')[0]}: {install}") from None


class Runtime:
    """An exported classifier: `probabilities(images)`, its `class_names`, `image_size`, the
    central crop its images are evaluated at (`crop_fraction`), and for a multi-label
    classifier (`multi_label`) the decision threshold of each label (`thresholds`, else None)."""

    format = ""
    crop_fraction = CROP_FRACTION
    thresholds: list[float] | None = None

    def __init__(self, path: str | None, class_names: list[str], image_size: int, num_classes: int):
        if len(class_names) != num_classes:
            raise ValueError(
                f"The class names of {path!r} are {len(class_names)} but the model predicts "
                f"{num_classes} classes. Write one name per class, in label order."
            )
        self.path = path
        self.class_names = class_names
        self.image_size = image_size

    @property
    def multi_label(self) -> bool:
        """Whether the classifier gives a sigmoid probability per label (it has thresholds)."""
        return self.thresholds is not None

    def _use_settings(self, settings: dict) -> None:
        """The crop and the thresholds that the export recorded (`tfresnet_config.json` or
        `<file>.json`); an export from before they were recorded: 0.875, single-label."""
        self.crop_fraction = settings.get("crop_fraction", CROP_FRACTION)
        self.thresholds = settings_thresholds(settings, len(self.class_names), self.path)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities `(batch, classes)` of raw pixels `(batch, size, size, 3)` in [0, 255]."""
        images = np.asarray(images, dtype=np.float32)
        expected = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"images must have shape (batch, {', '.join(map(str, expected))}). Received: {images.shape}"
            )
        if not len(images):
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.asarray(self._run(images), dtype=np.float32)

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SavedModelRuntime(Runtime):
    """A SavedModel of `export_saved_model`, through its `serve_images` signature."""

    format = "saved_model"

    def __init__(self, path: str):
        import tensorflow as tf

        if not paths.isfile(paths.join(path, "variables", "variables.index")):
            raise ValueError(
                f"The SavedModel at {path!r} has no variables/ (its weights): it was copied or "
                f"written only in part. Copy the whole folder, or export the model again."
            )
        try:
            self._loaded = tf.saved_model.load(path)
        except (tf.errors.OpError, OSError, IndexError) as error:  # IndexError: a cut data file
            message = error.message if isinstance(error, tf.errors.OpError) else str(error)
            raise ValueError(
                f"The SavedModel at {path!r} cannot be loaded ({message.splitlines()[0][:300]}): its "
                f"files are damaged or incomplete. Export the model again."
            ) from None
        if PIXELS_SIGNATURE not in self._loaded.signatures:
            raise ValueError(
                f"The SavedModel at {path!r} has no {PIXELS_SIGNATURE!r} signature: export it with "
                f"export_saved_model."
            )
        self._serve = self._loaded.signatures[PIXELS_SIGNATURE]
        spec = self._serve.structured_input_signature[1][INPUT_NAME]
        num_classes = self._serve.structured_outputs[OUTPUT_NAME].shape[-1]
        super().__init__(path, read_labels(paths.join(path, LABELS_FILE)), int(spec.shape[1]), num_classes)
        self._use_settings(read_json(paths.join(path, CONFIG_FILE)) or {})

    def _run(self, images):
        return self._serve(images=images)[OUTPUT_NAME].numpy()


class LiteRTRuntime(Runtime):
    """A LiteRT flatbuffer, run by `ai_edge_litert`'s interpreter on every core."""

    format = "litert"

    def __init__(
        self, path: str | None = None, *, content: bytes | None = None, class_names: list[str] | None = None
    ):
        interpreter_module = import_runtime("litert")
        local, self._content = _local_or_content(path, content)
        self._interpreter = interpreter_module.Interpreter(
            model_path=local, model_content=self._content, num_threads=len(os.sched_getaffinity(0))
        )
        runner = self._interpreter.get_signature_runner()
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        details = inputs.get(INPUT_NAME) or next(iter(inputs.values()))
        output = outputs.get(OUTPUT_NAME) or next(iter(outputs.values()))
        self._input, self._output = details["index"], output["index"]
        self._batch = None
        names = read_labels(labels_path(path)) if class_names is None else class_names
        super().__init__(path, names, int(details["shape"][1]), int(output["shape"][-1]))
        self._use_settings(read_settings(path))

    def _run(self, images):
        if self._batch != len(images):
            self._interpreter.resize_tensor_input(self._input, images.shape)
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def op_names(self) -> set[str]:
        """The names of the operators in the file (`CONV_2D`, ...; Flex ops start with `Flex`)."""
        return internals.litert_op_names(self._interpreter)


class OnnxRuntime(Runtime):
    """An ONNX file, run by `onnxruntime` on the CPU."""

    format = "onnx"

    def __init__(
        self, path: str | None = None, *, content: bytes | None = None, class_names: list[str] | None = None
    ):
        onnxruntime = import_runtime("onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        local, content = _local_or_content(path, content)
        self._session = onnxruntime.InferenceSession(
            content if content is not None else local, options, providers=["CPUExecutionProvider"]
        )
        (image_input,) = self._session.get_inputs()
        self._input = image_input.name
        output = self._session.get_outputs()[0]
        names = read_labels(labels_path(path)) if class_names is None else class_names
        super().__init__(path, names, int(image_input.shape[1]), int(output.shape[-1]))
        self._use_settings(read_settings(path))

    def _run(self, images):
        return self._session.run(None, {self._input: images})[0]


def _local_or_content(path: str | None, content: bytes | None) -> tuple[str | None, bytes | None]:
    """What a runtime that reads local files or bytes is given: a local path as it is, the
    bytes of a file on a store (`gs://...`), or the bytes given."""
    if content is not None or path is None or paths.is_local(path):
        return path, content
    return None, paths.read_bytes(path)


def load_runtime(path: str | os.PathLike) -> Runtime:
    """Loads an exported classifier, whatever its format (see `model_format`), from a local path
    or a store (`gs://...`).

    Raises:
        FileNotFoundError: No model, or no class names (`labels.txt` in a SavedModel folder,
            `<file>.labels.txt` beside a file).
        ValueError: An unknown format, or labels that do not fit the model.
        ImportError: The package that runs the format is not installed.

    Example:
        runtime = load_runtime("models/flowers/model.onnx")
        runtime.probabilities(np.zeros((1, 224, 224, 3), np.float32)).shape
        # (1, 3)
    """
    path = os.fspath(path)
    format = model_format(path)
    if format == "saved_model":
        return SavedModelRuntime(path)
    if format == "litert":
        return LiteRTRuntime(path)
    return OnnxRuntime(path)
