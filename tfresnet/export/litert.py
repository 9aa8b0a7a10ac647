"""LiteRT (TensorFlow Lite) export: float32, float16, dynamic-range or full-integer int8.

The classifier's probabilities function is saved as a SavedModel holding the model's TensorFlow
variables (`tfresnet.export.saved_model.save_functions`, as the SavedModel export does), then
converted by `tf.lite.TFLiteConverter.from_saved_model`. Saving the Keras 3 model object with
`tf.saved_model.save` instead writes a model without weights, which converts and outputs NaN;
Keras's `ExportArchive` keeps them too, in about twice the time. Only TFLite's builtin operators
are allowed (no Flex ops, so the file runs with the plain LiteRT runtime), and every file is
checked against its source on a probe batch before it is written.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from tfresnet.export.common import (
    PROBE_IMAGES,
    Source,
    check_conversion,
    check_output_path,
    classifier_source,
    probe_images,
    write_model_and_labels,
)
from tfresnet.export.kinds import QUANTIZATIONS
from tfresnet.export.runtime import LiteRTRuntime, import_runtime
from tfresnet.export.saved_model import save_functions

# Images of `representative_data` that calibrate int8 activations (TFLite suggests 100 to 500).
CALIBRATION_IMAGES = 200
# Largest difference of probabilities from the source allowed on the probe batch.
TOLERANCES = {"none": 1e-3, "float16": 2e-2, "dynamic": None, "int8": None}


def export_litert(
    model: keras.Model | str | os.PathLike,
    path: str | os.PathLike,
    *,
    quantization: str = "none",
    representative_data=None,
    class_names: list[str] | None = None,
    crop_fraction: float | None = None,
    thresholds: list[float] | None = None,
) -> str:
    """Writes a classifier as a LiteRT `.tflite` file, then beside it its settings (`<path>.json`:
    the central crop its images are evaluated at, and a multi-label classifier's thresholds)
    and its class names, one a line in `<path>.labels.txt`.

    The file takes what the SavedModel's `serve_images` takes: `images`, float32 raw RGB pixels
    in [0, 255], `(batch, image_size, image_size, 3)`, any batch size; the normalisation is in
    the file. It returns `probabilities`, float32 `(batch, classes)` (a multi-label classifier's
    sigmoids too). With `"int8"` the weights and activations are int8 inside, and the interface
    stays float32.

    Args:
        model: A Keras classifier, or a SavedModel folder written by `export_saved_model` (local
            or on a store).
        path: The `.tflite` file to write (replaced whole, or left as it was on failure), local
            or on a store (`gs://...`).
        quantization: `"none"` (float32), `"float16"` (float16 weights, half the size),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full integer, calibrated
            on `representative_data`).
        representative_data: For `"int8"`: raw training images, an array `(n, size, size, 3)`
            or a `tf.data.Dataset` (or iterable) of image batches or `(images, labels)`
            batches, e.g. `ImageData.train_evaluation`; the first 200 images are used.
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
        ValueError: An unknown quantization, `"int8"` without data, or a bad path or model.
        RuntimeError: The converted model does not compute what the source computes.

    Example:
        export_litert("models/flowers/1", "models/flowers/model.tflite", quantization="int8",
                      representative_data=data.train_evaluation)
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    path = check_output_path(path, ".tflite")
    source = classifier_source(model, class_names, crop_fraction, thresholds)
    calibration = None
    if quantization == "int8":
        calibration = calibration_images(representative_data, source.image_size)
    import_runtime("litert")  # checked before the conversion's minutes
    content = convert(source, quantization, calibration)
    probe = calibration[:PROBE_IMAGES] if calibration is not None else probe_images(source.image_size)
    converted = LiteRTRuntime(content=content, class_names=source.class_names).probabilities(probe)
    expected = source.model.predict_on_batch(probe)
    check_conversion(
        expected,
        converted,
        tolerance=TOLERANCES[quantization],
        what=f"LiteRT {quantization}",
        multi_label=source.multi_label,
    )
    write_model_and_labels(path, content, source)
    return path


def convert(source: Source, quantization: str, calibration: np.ndarray | None = None) -> bytes:
    """The `.tflite` bytes of `source`: a SavedModel of its probabilities, then TFLite's converter."""
    # Graph code as written: no autograph conversion to wait for.
    serve = tf.function(source.endpoint(), input_signature=source.input_signature(), autograph=False)
    with tempfile.TemporaryDirectory(prefix="tfresnet-litert-") as saved_model_dir:
        save_functions(source.model, saved_model_dir, {"serving_default": serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            # The MLIR quantizer (TF 2.21) gives a channel flip followed by a per-channel
            # subtraction, the "caffe" normalisation of Keras's ResNet50, the flip's range: the
            # result saturates (errors of ~90 on [0, 255] pixels) and int8 labels change. The
            # previous quantizer keeps each its own range.
            converter.experimental_new_quantizer = False
        return converter.convert()


def calibration_images(data, image_size: int, limit: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to `limit` raw images `(n, image_size, image_size, 3)` from an array or batches.

    Raises:
        ValueError: No data, no images in it, or images of another shape.
    """
    if data is None:
        raise ValueError(
            "quantization='int8' needs representative_data: a few hundred raw training images "
            "(an array or dataset of them) to calibrate the int8 activations."
        )
    batches = [data] if isinstance(data, np.ndarray) else _batches(data)
    images, count = [], 0
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[1:] != (image_size, image_size, 3):
            raise ValueError(
                f"representative_data must hold images of shape ({image_size}, {image_size}, 3), "
                f"the model's input. Received a batch of shape {batch.shape}"
            )
        images.append(batch[: limit - count])
        count += len(images[-1])
        if count >= limit:
            break
    if not count:
        raise ValueError("representative_data holds no images: pass a few hundred training images.")
    return np.concatenate(images)


def _batches(data) -> Iterable:
    """The image batches of a dataset or iterable of batches or `(images, labels)` pairs."""
    if isinstance(data, tf.data.Dataset):
        data = data.as_numpy_iterator()
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item
