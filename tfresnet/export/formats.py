"""Several exports at once, each measured against its source: the agreement figures.

`export_formats` writes `model.tflite` and `model.onnx` beside a training run's other files and
returns, for each, how often its top-1 label equals the source model's on a labelled set
(`agreement`), the largest difference of their probabilities, and both accuracies. For a
multi-label classifier the labels are those over their thresholds: `agreement` is the share of
images given the same label set, and the accuracies give way to the micro-averaged F1 of
those sets against the multi-hot labels (`f1_micro`, `reference_f1_micro`).
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from tfresnet import paths
from tfresnet.export.kinds import FILE_FORMATS, FORMATS, QUANTIZATIONS
from tfresnet.export.saved_model import decision_thresholds
from tfresnet.insight.evaluation import labelled_batches
from tfresnet.insight.multi_label_metrics import label_scores
from tfresnet.models.thresholds import apply_thresholds


def export_formats(
    model: keras.Model,
    output_dir: str,
    formats: Iterable[str],
    *,
    quantize: str = "none",
    calibration=None,
    validation: tf.data.Dataset | None = None,
    class_names: list[str],
    crop_fraction: float | None = None,
    thresholds: list[float] | None = None,
) -> dict[str, dict]:
    """Writes `OUTPUT_DIR/model.tflite` and/or `OUTPUT_DIR/model.onnx` and measures them.

    Args:
        model: The trained Keras classifier.
        output_dir: Where the files go (each with its `<file>.labels.txt`), local or on a store
            (`gs://...`).
        formats: Names among `"saved_model"` (skipped here: `export_saved_model` writes it),
            `"litert"` and `"onnx"`.
        quantize: The LiteRT file's quantization (see `export_litert`); ONNX stays float32.
        calibration: For `"int8"`: raw training images, e.g. `ImageData.train` (shuffled: its
            first 200 images cover the classes).
        validation: `(images, labels)` batches the files are compared on (None: not measured).
        class_names: The model's class names.
        crop_fraction: The central crop of the model's evaluation transform, recorded beside
            each file (default 0.875; a run passes its data's).
        thresholds: A multi-label classifier's decision threshold of each label, recorded
            beside each file (default 0.5 each; a run passes those it chose). Its
            `validation` labels are multi-hot rows.

    Returns:
        `{format: {"path", "format", "quantization", "size_bytes"}}`, plus `agreement`,
        `max_abs_difference`, `accuracy` and `reference_accuracy` (the Keras model's) when
        `validation` is given; for a multi-label classifier `f1_micro` and
        `reference_f1_micro` in place of the accuracies (see `compare`).

    Example:
        export_formats(model, "runs/flowers", ["saved_model", "litert"], quantize="int8",
                       calibration=data.train, validation=data.validation,
                       class_names=data.class_names)["litert"]["agreement"]
        # 0.995
    """
    from tfresnet.export.runtime import load_runtime

    formats = check_export_request(formats, quantize)
    settings = {
        "class_names": class_names,
        "crop_fraction": crop_fraction,
        "thresholds": decision_thresholds(model, thresholds),
    }
    written = {}
    for format in formats:
        if format == "saved_model":
            continue
        path = paths.join(output_dir, FILE_FORMATS[format].file_name)
        if format == "litert":
            from tfresnet.export.litert import export_litert

            export_litert(model, path, quantization=quantize, representative_data=calibration, **settings)
        else:
            from tfresnet.export.onnx_export import export_onnx

            export_onnx(model, path, **settings)
        written[format] = {
            "path": paths.absolute(path),
            "format": format,
            "quantization": quantize if format == "litert" else "none",
            "size_bytes": paths.stat(path)[0],
        }
    if validation is not None and written:
        thresholds = settings["thresholds"]
        runtimes = {format: load_runtime(entry["path"]).probabilities for format, entry in written.items()}
        predictors = {"reference": model.predict_on_batch, **runtimes}
        outputs = predict_all(validation, predictors, multi_label=thresholds is not None)
        for format, entry in written.items():
            figures = compare(outputs["reference"], outputs[format], outputs["labels"], thresholds=thresholds)
            entry.update(figures)
    return written


def check_export_request(formats: Iterable[str], quantize: str = "none") -> list[str]:
    """Checks formats, quantization and the packages they need before any training.

    Returns:
        The formats, each once, in order.

    Raises:
        ValueError: An unknown format or quantization, or a quantization without `"litert"`.
        ImportError: A package the formats need is missing (naming the extra to install).

    Example:
    >>> check_export_request("saved_model,litert".split(","), "int8")
    ['saved_model', 'litert']
    """
    from tfresnet.export.onnx_export import require_converter
    from tfresnet.export.runtime import import_runtime

    formats = list(dict.fromkeys(formats))
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(
            f"Unknown export formats {unknown}: use a comma-separated list of {', '.join(FORMATS)}."
        )
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}. Received: {quantize!r}")
    if quantize != "none" and "litert" not in formats:
        raise ValueError(
            f"Quantization {quantize!r} applies to the LiteRT export: add litert to the formats."
        )
    if "litert" in formats:
        import_runtime("litert")
    if "onnx" in formats:
        require_converter()
        import_runtime("onnx")
    return formats


def compare(
    reference: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    thresholds: list[float] | None = None,
) -> dict:
    """How far `probabilities` are from `reference`'s: the agreement figures.

    With `thresholds` (a multi-label classifier's), a label is predicted where its probability
    reaches its threshold; `labels` are then multi-hot rows.

    Returns:
        `agreement` (share of images whose top-1 class is the reference's; with `thresholds`,
        whose predicted label set is the reference's), `max_abs_difference` (of
        probabilities), and with `labels` also `accuracy` and `reference_accuracy`; with
        `thresholds` `f1_micro` and `reference_f1_micro` instead (the F1 of every (image,
        label) decision together, `tfresnet.insight.multi_label_metrics.label_scores`).

    Example:
    >>> compare(np.array([[0.9, 0.1]]), np.array([[0.8, 0.2]]), np.array([0]))
    {'agreement': 1.0, 'max_abs_difference': 0.1, 'accuracy': 1.0, 'reference_accuracy': 1.0}
    >>> compare(np.array([[0.9, 0.25], [0.2, 0.75]]), np.array([[0.9, 0.75], [0.2, 0.75]]),
    ...         np.array([[1, 0], [0, 1]]), thresholds=[0.5, 0.5])
    {'agreement': 0.5, 'max_abs_difference': 0.5, 'f1_micro': 0.8, 'reference_f1_micro': 1.0}
    """
    reference, probabilities = np.asarray(reference), np.asarray(probabilities)
    if thresholds is not None:
        return _compare_label_sets(reference, probabilities, labels, thresholds)
    figures = {
        "agreement": float(np.mean(reference.argmax(-1) == probabilities.argmax(-1))),
        "max_abs_difference": float(np.abs(reference - probabilities).max()),
    }
    if labels is not None:
        figures["accuracy"] = float(np.mean(probabilities.argmax(-1) == labels))
        figures["reference_accuracy"] = float(np.mean(reference.argmax(-1) == labels))
    return figures


def _compare_label_sets(reference, probabilities, labels, thresholds) -> dict:
    """`compare` for a multi-label classifier: its label sets after `thresholds`."""
    expected, predicted = apply_thresholds(reference, thresholds), apply_thresholds(probabilities, thresholds)
    figures = {
        "agreement": float(np.mean(np.all(expected == predicted, axis=-1))),
        "max_abs_difference": float(np.abs(reference - probabilities).max()),
    }
    if labels is not None:
        figures["f1_micro"] = label_scores(probabilities, labels, thresholds)["f1_micro"]
        figures["reference_f1_micro"] = label_scores(reference, labels, thresholds)["f1_micro"]
    return figures


def predict_all(
    dataset: tf.data.Dataset, predictors: dict, *, multi_label: bool = False
) -> dict[str, np.ndarray]:
    """Each predictor's probabilities over `(images, labels)` batches, in one pass; and `labels`
    (class indices, or with `multi_label` the multi-hot rows as they are).

    Example:
        predict_all(data.validation, {"keras": model.predict_on_batch})["keras"].shape
        # (60, 3)
    """
    outputs = {name: [] for name in [*predictors, "labels"]}
    for images, labels in labelled_batches(dataset, multi_label=multi_label):
        for name, predict in predictors.items():
            outputs[name].append(np.asarray(predict(images), dtype=np.float32))
        outputs["labels"].append(labels)
    return {name: np.concatenate(parts) for name, parts in outputs.items()}
