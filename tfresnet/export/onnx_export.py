"""ONNX export, through Keras's own `model.export(format="onnx")` (tf2onnx underneath).

The file's input is `images` (float32 raw pixels, any batch size) and its output
`probabilities`, as in the LiteRT export; it is checked against its source on a probe batch
before it is written.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import keras

from tfresnet.export.common import (
    OUTPUT_NAME,
    Source,
    check_conversion,
    check_output_path,
    classifier_source,
    probe_images,
    write_model_and_labels,
)
from tfresnet.export.runtime import OnnxRuntime, import_runtime

# Opset 17 runs on every onnxruntime of the last years (1.13 and later).
OPSET = 17
# Largest difference of probabilities from the source allowed on the probe batch.
TOLERANCE = 1e-3
CONVERTER_PACKAGES = ("tf2onnx", "onnx")


def export_onnx(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    crop_fraction: float | None = None,
    thresholds: list[float] | None = None,
) -> str:
    """Writes a classifier as an ONNX file (float32), then beside it its settings (`<path>.json`:
    the central crop its images are evaluated at, and a multi-label classifier's thresholds)
    and its class names, one a line in `<path>.labels.txt`.

    Input `images`: float32 raw RGB pixels in [0, 255], `(batch, image_size, image_size, 3)`,
    any batch size (the normalisation is in the file); output `probabilities`, float32
    `(batch, classes)`. Run it with `onnxruntime`.

    Args:
        model: A Keras classifier, or a SavedModel folder written by `export_saved_model` (local
            or on a store).
        path: The `.onnx` file to write (replaced whole, or left as it was on failure), local or
            on a store (`gs://...`).
        class_names: Written to `<path>.labels.txt`; needed for a Keras model (a SavedModel
            has its own).
        crop_fraction: The evaluation transform's central crop, recorded for the predictor
            (default: a SavedModel's own, else 0.875; a run passes its data's).
        thresholds: A multi-label classifier's decision threshold of each label, recorded
            beside the file with `"multi_label": true` (default: a SavedModel's own, else the
            `thresholds` a run chose, passed here, else 0.5 each). The file itself outputs
            the probabilities; the predictor applies the thresholds.

    Returns:
        `path`.

    Raises:
        ImportError: tf2onnx, onnx or onnxruntime is missing (`pip install 'tfresnet[onnx]'`).
        RuntimeError: The converted model does not compute what the source computes.

    Example:
        export_onnx("models/flowers/1", "models/flowers/model.onnx")
        onnxruntime.InferenceSession("models/flowers/model.onnx").run(None, {"images": pixels})
    """
    path = check_output_path(path, ".onnx")
    require_converter()
    import_runtime("onnx")
    source = classifier_source(model, class_names, crop_fraction, thresholds)
    content = convert(source)
    probe = probe_images(source.image_size)
    converted = OnnxRuntime(content=content, class_names=source.class_names).probabilities(probe)
    expected = source.model.predict_on_batch(probe)
    check_conversion(expected, converted, tolerance=TOLERANCE, what="ONNX", multi_label=source.multi_label)
    write_model_and_labels(path, content, source)
    return path


def convert(source: Source) -> bytes:
    """The ONNX bytes of `source`, its input named `images` and its output `probabilities`."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="tfresnet-onnx-") as folder:
        converted = os.path.join(folder, "model.onnx")
        with warnings.catch_warnings():
            # Keras's numpy-2 patch of tf2onnx touches `np.object`.
            warnings.filterwarnings("ignore", message=r".*np\.object", category=FutureWarning)
            source.model.export(
                converted,
                format="onnx",
                input_signature=source.input_signature(),
                opset_version=OPSET,
                verbose=False,
            )
        graph_model = onnx.load(converted)
    _tidy_interface(graph_model.graph)
    onnx.checker.check_model(graph_model)
    return graph_model.SerializeToString()


def _tidy_interface(graph) -> None:
    """Names the output `probabilities` and the batch axis `batch`; drops unused inputs.

    A SavedModel's `serve_images` also returns labels: its captured label strings stay a graph
    input of the converted file, unused once only the probabilities are kept.
    """
    used = {name for node in graph.node for name in node.input}
    for unused in [value for value in graph.input if value.name not in used]:
        graph.input.remove(unused)
    (output,) = graph.output
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if name == output.name else name for name in node.output]
        node.input[:] = [OUTPUT_NAME if name == output.name else name for name in node.input]
    output.name = OUTPUT_NAME
    for value in (*graph.input, output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def require_converter() -> None:
    """Raises an ImportError naming the extra to install when tf2onnx or onnx is missing."""
    import importlib.util

    missing = [name for name in CONVERTER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"The ONNX export needs {' and '.join(missing)}, which is not installed: "
            f"pip install 'tfresnet[onnx]' (tf2onnx, onnx, onnxruntime)"
        )
