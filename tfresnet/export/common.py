"""What the LiteRT and ONNX exports share: the classifier to convert, its interface, the class
names and the settings kept beside each file, and the check that a converted file computes what
its source computes.

Every export takes a Keras classifier or a SavedModel folder written by `export_saved_model`,
and exposes one interface: `images`, float32 raw RGB pixels in [0, 255] of shape
`(batch, image_size, image_size, 3)` (what the SavedModel's `serve_images` takes; the model
normalises them itself), and `probabilities`, float32 `(batch, classes)`. A multi-label
classifier's files keep that interface: its decision thresholds travel in the settings beside
each file (`read_settings`), as its class names do.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfresnet import internals, paths
from tfresnet.data.transforms import CROP_FRACTION, check_crop_fraction
from tfresnet.export.saved_model import CONFIG_FILE, LABELS_FILE, decision_thresholds, write_labels
from tfresnet.files import read_json, write_atomically, write_json
from tfresnet.models.classifier import float32_copy
from tfresnet.models.thresholds import THRESHOLD, check_thresholds

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
# The SavedModel signature that takes raw pixels (see `export_saved_model`).
PIXELS_SIGNATURE = "serve_images"
# Images of the probe batch a converted file is checked on.
PROBE_IMAGES = 2
# A LiteRT or ONNX file's class names, one a line, in `<file>` + this suffix beside it.
LABELS_SUFFIX = ".labels.txt"
# What a LiteRT or ONNX file's images need besides its interface (the evaluation transform's
# central crop) and what its probabilities mean (a multi-label classifier's thresholds), as
# JSON in `<file>` + this suffix beside it.
SETTINGS_SUFFIX = ".json"


@dataclasses.dataclass
class Source:
    """A classifier ready to convert: a Keras model from raw pixels to probabilities, and for a
    multi-label classifier the decision threshold of each label (None: single-label)."""

    model: keras.Model
    class_names: list[str]
    image_size: int
    crop_fraction: float = CROP_FRACTION
    thresholds: list[float] | None = None

    @property
    def multi_label(self) -> bool:
        """Whether the classifier gives a sigmoid probability per label (it has thresholds)."""
        return self.thresholds is not None

    def input_signature(self) -> list[tf.TensorSpec]:
        """The exports' interface: a dynamic batch of raw `image_size` squares."""
        shape = [None, self.image_size, self.image_size, 3]
        return [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]

    def endpoint(self) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
        """`images -> {"probabilities": ...}`, the function every export converts."""
        model = self.model

        def probabilities(images):
            return {OUTPUT_NAME: tf.cast(model(images, training=False), tf.float32)}

        return probabilities


def classifier_source(
    model: keras.Model | str | os.PathLike,
    class_names: list[str] | None = None,
    crop_fraction: float | None = None,
    thresholds: list[float] | None = None,
) -> Source:
    """The classifier to convert, from a Keras model (in float32, see
    `tfresnet.models.float32_copy`) or a SavedModel folder.

    Args:
        model: A Keras classifier (raw [0, 255] pixels in, probabilities out), or the folder of
            a SavedModel written by `export_saved_model` (its `serve_images` signature).
        class_names: Label `i` is `class_names[i]`. Needed for a Keras model; for a SavedModel
            the names in its `labels.txt` by default.
        crop_fraction: The central crop its images are evaluated at (see
            `tfresnet.decode_for_eval`): by default a SavedModel's recorded one, else 0.875.
        thresholds: A multi-label classifier's decision threshold of each label: by default a
            SavedModel's recorded ones, else 0.5 each. None for a single-label classifier.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: Not a SavedModel of `export_saved_model`, no class names for a Keras
            model, not as many names as the model has classes, or thresholds that do not fit.

    Example:
        source = classifier_source("models/flowers/1")
        source.image_size, source.class_names
        # (224, ['daisy', 'roses', 'tulips'])
    """
    if isinstance(model, keras.Model):
        if class_names is None:
            raise ValueError(
                "class_names is required to export a Keras model: labels.txt is written from them. "
                "Pass class_names=data.class_names, or export the SavedModel folder instead."
            )
        shape = model.input_shape
        if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(
                f"The model must take square RGB images of a fixed size, (batch, size, size, 3). "
                f"Received: input_shape={shape}"
            )
        source = Source(float32_copy(model), list(class_names), int(shape[1]))
        source.thresholds = decision_thresholds(model, thresholds)
    else:
        source = _saved_model_source(os.fspath(model), class_names)
        source.thresholds = _override_thresholds(source, thresholds)
    if crop_fraction is not None:
        source.crop_fraction = check_crop_fraction(crop_fraction)
    classes = source.model.output_shape[-1]
    if len(source.class_names) != classes:
        raise ValueError(
            f"There are {len(source.class_names)} class names but the model predicts {classes} "
            f"classes. Pass one name per class."
        )
    return source


def _saved_model_source(path: str, class_names: list[str] | None) -> Source:
    if not paths.isdir(path):
        raise FileNotFoundError(
            f"SavedModel folder not found: {path!r}. Pass the folder export_saved_model wrote "
            f"(the one holding saved_model.pb)."
        )
    if not tf.saved_model.contains_saved_model(path):
        raise ValueError(
            f"{path!r} holds no SavedModel (no saved_model.pb). Pass an export_saved_model folder."
        )
    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint=PIXELS_SIGNATURE)
    except ValueError:  # no such endpoint
        raise ValueError(
            f"The SavedModel at {path!r} has no {PIXELS_SIGNATURE!r} signature: it was not written "
            f"by tfresnet's export_saved_model. Export the classifier with it, then convert that."
        ) from None
    spec = internals.reloaded_signatures(layer)[PIXELS_SIGNATURE].structured_input_signature[1][INPUT_NAME]
    image_size = int(spec.shape[1])
    inputs = keras.Input((image_size, image_size, 3), name=INPUT_NAME)
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs[OUTPUT_NAME], name="saved_model")
    names = read_labels(paths.join(path, LABELS_FILE)) if class_names is None else list(class_names)
    config = {"crop_fraction": CROP_FRACTION, **(read_json(paths.join(path, CONFIG_FILE)) or {})}
    thresholds = settings_thresholds(config, model.output_shape[-1], path)
    return Source(model, names, image_size, config["crop_fraction"], thresholds)


def _override_thresholds(source: Source, thresholds: list[float] | None) -> list[float] | None:
    """A SavedModel's thresholds, or those passed in their place (a multi-label model's only)."""
    if thresholds is None:
        return source.thresholds
    if not source.multi_label:
        raise ValueError(
            "thresholds apply to a multi-label classifier, and this SavedModel is single-label "
            "(its tfresnet_config.json says so): drop thresholds."
        )
    return check_thresholds(thresholds, len(source.thresholds))


def settings_thresholds(settings: dict, num_labels: int, where: str | None = None) -> list[float] | None:
    """The thresholds that `settings` (a `tfresnet_config.json`, or a file's `read_settings`)
    records for a multi-label classifier, checked; 0.5 each where it records none; None for
    a single-label one.

    Raises:
        ValueError: Recorded thresholds that are not one in [0, 1] per label.

    Example:
    >>> settings_thresholds({"multi_label": True, "thresholds": [0.3, 0.6]}, 2)
    [0.3, 0.6]
    >>> settings_thresholds({"multi_label": True}, 2), settings_thresholds({}, 2)
    ([0.5, 0.5], None)
    """
    if not settings.get("multi_label"):
        return None
    thresholds = settings.get("thresholds")
    try:
        return check_thresholds([THRESHOLD] * num_labels if thresholds is None else thresholds, num_labels)
    except (TypeError, ValueError) as error:
        where = repr(where) if where else "the model"
        message = f"The settings of {where} record bad thresholds: {error} Export the model again."
        raise ValueError(message) from None


def read_labels(path: str) -> list[str]:
    """The class names in a labels file, one a line (local or on a store, `gs://...`).

    Raises:
        FileNotFoundError: No such file.

    Example:
        read_labels("gs://bucket/models/flowers/1/labels.txt")
        # ['daisy', 'roses', 'tulips']
    """
    if not paths.isfile(path):
        raise FileNotFoundError(
            f"No {os.path.basename(path)} at {path!r}: the exports keep their class names, one a "
            f"line, in {LABELS_FILE} inside a SavedModel folder and in <file>{LABELS_SUFFIX} beside "
            f"a .tflite or .onnx file. Write it, or export the model again."
        )
    with paths.open_file(path, encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file if line.strip()]


def labels_path(model_path: str) -> str:
    """Where the class names of the file `model_path` live: `<model_path>.labels.txt`, so that
    every file in a folder keeps its own.

    Example:
    >>> labels_path("models/flowers/model.tflite")
    'models/flowers/model.tflite.labels.txt'
    """
    return os.fspath(model_path) + LABELS_SUFFIX


def settings_path(model_path: str) -> str:
    """Where the settings of the file `model_path` live: `<model_path>.json`.

    Example:
    >>> settings_path("models/flowers/model.onnx")
    'models/flowers/model.onnx.json'
    """
    return os.fspath(model_path) + SETTINGS_SUFFIX


def read_settings(model_path: str | None) -> dict:
    """The settings beside a LiteRT or ONNX file: `crop_fraction`, `image_size`, `multi_label`
    and a multi-label classifier's `thresholds`. For a file exported before they were written
    (or bytes without a file), those every export then had: a crop of 0.875, single-label.

    Example:
        read_settings("models/flowers/model.onnx")
        # {'crop_fraction': 0.875, 'multi_label': False, 'thresholds': None, 'image_size': 224}
    """
    settings = (read_json(settings_path(model_path)) if model_path else None) or {}
    return {"crop_fraction": CROP_FRACTION, "multi_label": False, "thresholds": None, **settings}


def check_output_path(path: str | os.PathLike, suffix: str) -> str:
    """`path` as a string, checked: it ends with `suffix` and its folder can be made (local or
    on a store, `gs://...`).

    Raises:
        ValueError: Another suffix, or a folder at `path`.

    Example:
        check_output_path("gs://bucket/models/flowers/model.onnx", ".onnx")
        # 'gs://bucket/models/flowers/model.onnx'
    """
    path = os.fspath(path)
    if not path.lower().endswith(suffix):
        raise ValueError(f"The output file must end with {suffix}. Received: {path!r}")
    if paths.isdir(path):
        raise ValueError(f"{path!r} is a folder; pass a file path ending with {suffix}.")
    paths.makedirs(os.path.dirname(paths.absolute(path)))
    return path


def write_model_and_labels(path: str, contents: bytes, source: Source) -> None:
    """Writes the converted file, its settings (`settings_path`: the crop, and whether it is
    multi-label with its thresholds) and its class names (`labels_path`), each renamed into
    place when whole.

    The previous names go first and the new ones come last: a kill in between leaves a model
    without names (loading it says so), never names beside a model they do not belong to.
    """

    def write_bytes(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(contents)

    for stale in (labels_path(path), settings_path(path)):
        paths.remove(stale)
    write_atomically(path, write_bytes)
    settings = {
        "crop_fraction": source.crop_fraction,
        "image_size": source.image_size,
        "multi_label": source.multi_label,
        "thresholds": source.thresholds,
    }
    write_json(settings_path(path), settings)
    write_labels(labels_path(path), source.class_names)


def probe_images(image_size: int) -> np.ndarray:
    """A small fixed batch of raw pixels, to check a converted file against its source."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (PROBE_IMAGES, image_size, image_size, 3)).astype(np.float32)


def check_conversion(
    expected: np.ndarray,
    received: np.ndarray,
    *,
    tolerance: float | None,
    what: str,
    multi_label: bool = False,
) -> None:
    """Raises if a converted model's probabilities are not finite probabilities (summing to 1,
    or each in [0, 1] for a `multi_label` classifier's sigmoids), or differ from its source's
    by more than `tolerance` (None: quantized, only the form is checked).

    A conversion can succeed and still write a model without its weights that outputs NaN:
    every export is checked on a probe batch before it is written.
    """
    received = np.asarray(received)
    if received.shape != expected.shape or not np.all(np.isfinite(received)):
        raise RuntimeError(
            f"The {what} conversion produced a model whose outputs are not probabilities "
            f"(shape {received.shape}, finite: {bool(np.all(np.isfinite(received)))}); nothing was written."
        )
    if multi_label and not np.all((received >= -1e-3) & (received <= 1 + 1e-3)):
        raise RuntimeError(f"The {what} conversion's probabilities are not in [0, 1]; nothing was written.")
    if not multi_label and not np.allclose(received.sum(axis=-1), 1.0, atol=0.05):
        raise RuntimeError(f"The {what} conversion's probabilities do not sum to 1; nothing was written.")
    if tolerance is not None:
        difference = float(np.abs(received - expected).max())
        if difference > tolerance:
            raise RuntimeError(
                f"The {what} conversion differs from the model by {difference:.2g} (allowed: "
                f"{tolerance:g}) on a probe batch; nothing was written."
            )
