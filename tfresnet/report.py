"""The evaluation report: `report.json` and the pictures a person would rather see than read.

`write_report` evaluates a model in one pass over a dataset and writes `report.json` (see
`classification_report`), `confusion_matrix.png`, `training_curves.png` and `top_losses.png`.
The images of the top losses are kept during that same pass, so each one is shown with its own
prediction even when the dataset reshuffles or re-augments on every pass. matplotlib is
imported only when a plot is drawn: without it the module imports, and `write_report` writes
`report.json` before it fails at the first plot, saying what to install.
"""

from __future__ import annotations

import heapq
import json
import os

import keras
import numpy as np
import tensorflow as tf

REPORT_FILE = "report.json"
TOP_LOSSES = 9


def predict_dataset(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true labels over a dataset of `(images, labels)` batches.

    Example:
    >>> probabilities, labels = predict_dataset(model, data.validation)
    """
    probabilities, labels, _ = _evaluate(model, dataset, keep=0)
    return probabilities, labels


def _evaluate(model: keras.Model, dataset: tf.data.Dataset, keep: int):
    """One pass: probabilities, labels, and the `keep` highest-loss images by index."""
    probabilities, labels, worst, index = [], [], [], 0
    for images, batch_labels in dataset:
        batch_probabilities = np.asarray(model.predict_on_batch(images))
        batch_labels = np.asarray(batch_labels)
        probabilities.append(batch_probabilities)
        labels.append(batch_labels)
        if keep:
            picked = batch_probabilities[np.arange(len(batch_labels)), batch_labels]
            for offset, loss in enumerate(-np.log(np.clip(picked, 1e-12, 1.0))):
                item = (float(loss), index + offset, np.asarray(images[offset]))
                (heapq.heappush if len(worst) < keep else heapq.heappushpop)(worst, item)
        index += len(batch_labels)
    if not probabilities:
        raise ValueError("The evaluation set is empty: no batch could be read from it.")
    top = {position: image for _, position, image in worst}
    return np.concatenate(probabilities), np.concatenate(labels), top


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
    evaluated_on: str = "validation",
) -> dict:
    """Evaluates `model` on `dataset` in one pass and writes the report into `output_dir`.

    Files: `report.json` (see `classification_report`, plus `evaluated_on`),
    `confusion_matrix.png`, `training_curves.png` (with `history`) and `top_losses.png`, the
    evaluation images with the highest loss, titled prediction / truth / probability.

    Args:
        model: A classifier of raw [0, 255] RGB images.
        dataset: Batches of `(images, int labels)`, e.g. `ImageData.validation`.
        class_names: Label `i` is `class_names[i]`.
        output_dir: Where the files go (created if needed).
        history: Per-epoch metrics (`FineTuneResult.history`) for the training curves.
        evaluated_on: What `dataset` is, recorded in `report.json` (e.g. `"validation"`, or
            `"training (evaluation transform)"` for a run without a validation set).

    Returns:
        The report's dict.

    Example:
    >>> report = write_report(model, data.validation, data.class_names, "runs/flowers")
    """
    os.makedirs(output_dir, exist_ok=True)
    probabilities, labels, top = _evaluate(model, dataset, keep=TOP_LOSSES)
    report = {**classification_report(labels, probabilities, class_names), "evaluated_on": evaluated_on}
    with open(os.path.join(output_dir, REPORT_FILE), "w") as file:
        json.dump(report, file, indent=2)
    _plot_confusion_matrix(np.array(report["confusion_matrix"]), class_names, output_dir)
    if history:
        _plot_history(history, output_dir)
    _plot_top_losses(top, probabilities, labels, class_names, output_dir)
    return report


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"The report's plots need matplotlib ({error}): pip install matplotlib. "
            f"{REPORT_FILE} is written already."
        ) from error
    return Figure(figsize=(width, height))


def _plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], output_dir: str) -> None:
    size = max(4, 0.5 * len(class_names) + 2)
    figure = _figure(size, size)
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
    figure = _figure(10, 4)
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
    top: dict[int, np.ndarray],
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    output_dir: str,
) -> None:
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0))
    order = sorted(top, key=lambda i: -losses[i])
    columns = 3
    rows = max(1, -(-len(order) // columns))
    figure = _figure(3 * columns, 3.3 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, order):
        guess = int(probabilities[i].argmax())
        axis.imshow(np.clip(top[i], 0, 255).astype("uint8"))
        axis.set_title(
            f"{class_names[guess]} / {class_names[labels[i]]} / {probabilities[i, guess]:.2f}", fontsize=9
        )
    figure.suptitle("highest loss: prediction / truth / probability")
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "top_losses.png"))
