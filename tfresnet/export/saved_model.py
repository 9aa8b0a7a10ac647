"""SavedModel export for TensorFlow Serving, with decoding in the graph.

The exported model takes what clients have, encoded JPEG or PNG bytes, and decodes, resizes,
crops and normalises them inside the graph with the very function the evaluation pipeline uses
(`tfresnet.data.decode_for_eval`), so served predictions equal evaluated ones. A multi-label
classifier's export also applies its per-label decision thresholds in the graph (`predicted`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfresnet import paths
from tfresnet.data.image_size import MAX_IMAGE_PIXELS
from tfresnet.data.transforms import CROP_FRACTION, check_crop_fraction, decode_for_eval
from tfresnet.files import write_json, write_text
from tfresnet.models.classifier import float32_copy, is_multi_label
from tfresnet.models.thresholds import THRESHOLD, check_thresholds

LABELS_FILE = "labels.txt"
CONFIG_FILE = "tfresnet_config.json"


def write_labels(path: str, class_names: list[str]) -> None:
    """Writes the class names to `path` atomically, one a line (a SavedModel's `labels.txt`, a
    LiteRT or ONNX file's `<file>.labels.txt`).

    Example:
        write_labels("models/flowers/1/labels.txt", ["daisy", "roses"])
    """
    write_text(path, "".join(f"{name}\n" for name in class_names))


# === SavedModel ===


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    *,
    class_names: list[str],
    top_k: int = 5,
    config: dict | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    crop_fraction: float | None = None,
    thresholds: list[float] | None = None,
) -> str:
    """Writes `model` as a SavedModel that TensorFlow Serving loads as it is.

    Signatures:
    - `serving_default`: `image_bytes`, a batch of encoded JPEG/PNG/BMP/GIF images (the
      `_bytes` suffix lets TF Serving's REST API take `{"b64": ...}`); decoding, resizing,
      central crop and normalisation run in the graph.
    - `serve_images`: `images`, float32 `(batch, size, size, 3)` raw RGB pixels in [0, 255].
    Both return `probabilities` (batch, classes), and the `top_k` best `classes` (int32
    indices), their `labels` (strings) and `scores`. A multi-label classifier's (a sigmoid per
    label, `tfresnet.models.is_multi_label`) also return `predicted`, int32 0/1
    `(batch, labels)`: 1 where a label's probability reaches its threshold.

    `labels.txt` (one class name per line) and `tfresnet_config.json` are written beside
    `saved_model.pb`. The folder is written under a temporary name beside `export_dir` and
    renamed into place (`tfresnet.paths.replace_folder`), so an interrupted local export never
    leaves a half-written model at `export_dir`; on a store (`gs://...`) it is moved file by
    file, and the next export writes it whole again. TF Serving expects versioned folders:
    export to `.../my_model/1`. A mixed-precision model is exported in float32
    (`tfresnet.models.float32_copy`).

    Args:
        model: A model from `build_classifier` (raw [0, 255] RGB in, probabilities out).
        export_dir: The folder to create or replace, local or on a store (`gs://bucket/...`).
        class_names: Label `i` is `class_names[i]`.
        top_k: How many classes `classes`, `labels` and `scores` hold (at most all).
        config: Settings stored in `tfresnet_config.json` (e.g. `FinetuneResult.config`).
        max_image_pixels: The largest image `serving_default` decodes, read from its header
            first (default PIL's cap, about 89 megapixels); a larger one fails its request.
        crop_fraction: The central crop `serving_default` takes, as a fraction of the shorter
            side; by default the `crop_fraction` of `config` (`fine_tune` records the data's),
            else 0.875. Kept in `tfresnet_config.json`, which `load_predictor` reads.
        thresholds: A multi-label classifier's decision threshold of each label, in [0, 1]; by
            default the `thresholds` of `config` (`fine_tune` records those it chose on the
            validation set), else 0.5 each. Kept in `tfresnet_config.json` with
            `"multi_label": true` (false for a single-label classifier, which takes none).

    Returns:
        `export_dir`.

    Raises:
        ValueError: Class names or thresholds that do not fit the model.

    Example:
        export_saved_model(model, "models/flowers/1", class_names=["daisy", "rose"])
        served = tf.saved_model.load("models/flowers/1")
        served.signatures["serving_default"](image_bytes=tf.constant([jpeg]))["labels"]
    """
    num_classes = model.output_shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model predicts {num_classes} classes."
        )
    k = min(top_k, num_classes)
    thresholds = decision_thresholds(model, thresholds, config)
    if crop_fraction is None:
        crop_fraction = (config or {}).get("crop_fraction", CROP_FRACTION)
    crop_fraction = check_crop_fraction(crop_fraction)
    model = float32_copy(model)
    signatures = _signatures(model, class_names, k, max_image_pixels, crop_fraction, thresholds)
    settings = {
        "class_names": list(class_names),
        "image_size": model.input_shape[1],
        "top_k": k,
        "max_image_pixels": max_image_pixels,
    }
    config = {
        **(config or {}),
        "crop_fraction": crop_fraction,
        "multi_label": thresholds is not None,
        "thresholds": thresholds,
    }

    export_dir = paths.absolute(export_dir).rstrip("/")
    paths.restore_folder(export_dir)  # the previous export, if a kill left it aside
    staging = paths.staging_folder(export_dir)
    try:
        save_functions(model, staging, signatures)
        write_labels(paths.join(staging, LABELS_FILE), class_names)
        write_json(paths.join(staging, CONFIG_FILE), {**settings, **config})
        paths.replace_folder(staging, export_dir)
    finally:
        paths.rmtree(staging)
    return export_dir


def decision_thresholds(
    model: keras.Model, thresholds: list[float] | None = None, config: dict | None = None
) -> list[float] | None:
    """A multi-label classifier's threshold of each label: `thresholds`, else those of
    `config`, else `THRESHOLD` (0.5) each; None for a single-label classifier.

    Raises:
        ValueError: Thresholds for a single-label classifier, or not one in [0, 1] per label.

    Example:
        decision_thresholds(build_classifier(2, weights=None, image_size=32, multi_label=True))
        # [0.5, 0.5]
    """
    if thresholds is None:
        thresholds = (config or {}).get("thresholds")
    num_labels = model.output_shape[-1]
    if not is_multi_label(model):
        if thresholds is not None:
            raise ValueError(
                "thresholds apply to a multi-label classifier (a sigmoid per label), and this one "
                "is single-label (softmax): drop thresholds, or export the multi-label model."
            )
        return None
    return check_thresholds([THRESHOLD] * num_labels if thresholds is None else thresholds, num_labels)


def save_functions(model: keras.Model, path: str, signatures: dict) -> None:
    """Saves `signatures` (untraced `tf.function`s with input signatures) of `model` as the
    SavedModel `path`, with the model's variables.

    `tf.saved_model.save` traces each signature once, in its save context. Keras's
    `ExportArchive` traces each endpoint before saving and again while saving, and walks the
    model's object graph for lookup tables a classifier does not have: the same SavedModel (the
    same signatures, variables and outputs) in about 2.5x the time. The variables saved are the
    TensorFlow variables under the Keras ones, as `ExportArchive` saves them; saving the Keras
    model object itself would save none (Keras 3 variables are not TensorFlow trackables).

    Example:
        save_functions(model, "models/flowers/1", {"serving_default": serve})
    """
    module = tf.Module()
    module.model_variables = [variable.value for variable in model.variables]
    for name, function in signatures.items():
        setattr(module, name, function)
    tf.saved_model.save(module, path, signatures=signatures)


def _signatures(
    model: keras.Model,
    class_names: list[str],
    k: int,
    max_image_pixels: int,
    crop_fraction: float,
    thresholds: list[float] | None = None,
) -> dict:
    """`serving_default` (encoded image bytes) and `serve_images` (raw pixels) of `model`."""
    image_size = model.input_shape[1]
    labels = tf.constant(list(class_names))
    cuts = None if thresholds is None else tf.constant(thresholds, tf.float32)

    # Graph code as written (the `if`s test Python values): no autograph conversion to wait for.
    # `serving_default` calls `serve_images`, so the model is traced once for both.
    @tf.function(
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")],
        autograph=False,
    )
    def serve_images(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, classes = tf.math.top_k(probabilities, k=k)
        served = {
            "probabilities": probabilities,
            "classes": classes,
            "labels": tf.gather(labels, classes),
            "scores": scores,
        }
        if cuts is not None:
            served["predicted"] = tf.cast(probabilities >= cuts, tf.int32)
        return served

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda encoded: decode_for_eval(encoded, image_size, max_image_pixels, crop_fraction),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        return serve_images(images)

    return {"serving_default": serve_bytes, "serve_images": serve_images}
