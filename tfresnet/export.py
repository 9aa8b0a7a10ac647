"""SavedModel export for TensorFlow Serving, with decoding in the graph, and the evaluation report.

The exported model takes what clients have, encoded JPEG or PNG bytes, and decodes, resizes,
crops and normalises them inside the graph with the very function the evaluation pipeline uses
(`tfresnet.data.decode_for_eval`), so served predictions equal evaluated ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from tfresnet.data import decode_for_eval

LABELS_FILE = "labels.txt"
CONFIG_FILE = "tfresnet_config.json"


# === SavedModel ===


def export_saved_model(
    model: keras.Model,
    export_dir: str,
    *,
    class_names: list[str],
    top_k: int = 5,
    config: dict | None = None,
) -> str:
    """Writes `model` as a SavedModel that TensorFlow Serving loads as it is.

    Signatures:
    - `serving_default`: `image_bytes`, a batch of encoded JPEG/PNG/BMP/GIF images (the
      `_bytes` suffix lets TF Serving's REST API take `{"b64": ...}`); decoding, resizing,
      central crop and normalisation run in the graph.
    - `serve_images`: `images`, float32 `(batch, size, size, 3)` raw RGB pixels in [0, 255].
    Both return `probabilities` (batch, classes), and the `top_k` best `classes` (int32
    indices), their `labels` (strings) and `scores`.

    `labels.txt` (one class name per line) and `tfresnet_config.json` are written beside
    `saved_model.pb`. The directory is written under a temporary name and renamed into place,
    so an interrupted export never leaves a half-written model at `export_dir`. TF Serving
    expects versioned folders: export to `.../my_model/1`.

    Args:
        model: A model from `build_classifier` (raw [0, 255] RGB in, probabilities out).
        export_dir: The folder to create or replace.
        class_names: Label `i` is `class_names[i]`.
        top_k: How many classes `classes`, `labels` and `scores` hold (at most all).
        config: Settings stored in `tfresnet_config.json` (e.g. `FinetuneResult.config`).

    Returns:
        `export_dir`.

    Example:
    >>> export_saved_model(model, "models/flowers/1", class_names=["daisy", "rose"])
    >>> served = tf.saved_model.load("models/flowers/1")
    >>> served.signatures["serving_default"](image_bytes=tf.constant([jpeg]))["labels"]
    """
    num_classes = model.output_shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model predicts {num_classes} classes."
        )
    image_size = model.input_shape[1]
    k = min(top_k, num_classes)
    labels = tf.constant(list(class_names))

    def outputs(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, classes = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "labels": tf.gather(labels, classes),
            "scores": scores,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda encoded: decode_for_eval(encoded, image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        return outputs(images)

    @tf.function(
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")]
    )
    def serve_images(images):
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_bytes)
    archive.add_endpoint("serve_images", serve_images)

    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.", dir=parent)
    try:
        archive.write_out(staging, verbose=False)
        with open(os.path.join(staging, LABELS_FILE), "w") as file:
            file.write("".join(f"{name}\n" for name in class_names))
        with open(os.path.join(staging, CONFIG_FILE), "w") as file:
            json.dump(
                {"class_names": list(class_names), "image_size": image_size, "top_k": k, **(config or {})},
                file,
                indent=2,
                default=str,
            )
        _replace_directory(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def _replace_directory(source: str, target: str) -> None:
    """Renames `source` to `target`; an existing `target` is moved aside first, then removed."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=os.path.dirname(target))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(source, target)
    shutil.rmtree(old, ignore_errors=True)


# === Report ===


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true labels over a dataset of `(images, labels)` batches."""
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        probabilities.append(np.asarray(model.predict_on_batch(images)))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(probabilities), np.concatenate(labels)


def classification_report(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], *, most_confused: int = 5
) -> dict:
    """Accuracy, per-class precision/recall, the confusion matrix and the most-confused pairs.

    Example:
    >>> classification_report(np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]), ["a", "b"])["accuracy"]
    0.5
    """
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        true_positive = int(matrix[i, i])
        per_class[name] = {
            "precision": true_positive / max(int(matrix[:, i].sum()), 1),
            "recall": true_positive / max(int(matrix[i, :].sum()), 1),
            "support": int(matrix[i, :].sum()),
        }
    off_diagonal = [
        (int(matrix[i, j]), class_names[i], class_names[j])
        for i in range(num_classes)
        for j in range(num_classes)
        if i != j and matrix[i, j]
    ]
    off_diagonal.sort(key=lambda item: -item[0])
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "num_images": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
        "most_confused": [
            {"true": true, "predicted": guess, "count": count}
            for count, true, guess in off_diagonal[:most_confused]
        ],
    }


def write_report(
    model: keras.Model,
    dataset: tf.data.Dataset,
    class_names: list[str],
    output_dir: str,
    *,
    history: dict[str, list[float]] | None = None,
) -> dict:
    """Evaluates `model` on `dataset` and writes the report into `output_dir`.

    Files: `report.json` (see `classification_report`), `confusion_matrix.png`,
    `training_curves.png` (with `history`) and `top_losses.png`, the evaluation images with
    the highest loss, titled prediction / truth / probability.

    Example:
    >>> report = write_report(model, data.validation, data.class_names, "runs/flowers")
    """
    os.makedirs(output_dir, exist_ok=True)
    probabilities, labels = predict_dataset(model, dataset)
    report = classification_report(labels, probabilities, class_names)
    with open(os.path.join(output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=2)

    _plot_confusion_matrix(np.array(report["confusion_matrix"]), class_names, output_dir)
    if history:
        _plot_history(history, output_dir)
    _plot_top_losses(dataset, probabilities, labels, class_names, output_dir)
    return report


def _plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], output_dir: str) -> None:
    size = max(4, 0.5 * len(class_names) + 2)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "confusion_matrix.png"))


def _plot_history(history: dict[str, list[float]], output_dir: str) -> None:
    figure = Figure(figsize=(10, 4))
    panels = figure.subplots(1, 2)
    for panel, metric in zip(panels, ("loss", "accuracy")):
        for key in (metric, f"val_{metric}"):
            if history.get(key):
                panel.plot(range(1, len(history[key]) + 1), history[key], label=key)
        phases = history.get("phase", [])
        if 1 in phases and 2 in phases:
            panel.axvline(phases.count(1) + 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        panel.set_xlabel("epoch")
        panel.set_title(metric)
        panel.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "training_curves.png"))


def _plot_top_losses(
    dataset: tf.data.Dataset,
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    output_dir: str,
    count: int = 9,
) -> None:
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0))
    worst = set(np.argsort(-losses)[:count].tolist())
    images, index = {}, 0
    for batch, _ in dataset:
        for image in np.asarray(batch):
            if index in worst:
                images[index] = image
            index += 1
    order = sorted(worst, key=lambda i: -losses[i])
    columns = 3
    rows = max(1, -(-len(order) // columns))
    figure = Figure(figsize=(3 * columns, 3.3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, order):
        guess = int(probabilities[i].argmax())
        axis.imshow(np.clip(images[i], 0, 255).astype("uint8"))
        axis.set_title(
            f"{class_names[guess]} / {class_names[labels[i]]} / {probabilities[i, guess]:.2f}", fontsize=9
        )
    figure.suptitle("highest loss: prediction / truth / probability")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "top_losses.png"))
