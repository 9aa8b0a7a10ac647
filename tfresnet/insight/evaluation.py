"""Accuracy of a classifier on a dataset, with test-time augmentation (TTA) when asked.

TTA classifies each image in several views (`TTA_VIEWS`, made by `tta_views`): as it is,
flipped horizontally, and the four corner crops of 7/8 of its side (`TTA_CROP_FRACTION`)
resized back to its size; the view probabilities are averaged. The views of a batch are
predicted together, in one `predict_on_batch` call on their concatenation, so a batch of `n`
images costs one call on `len(TTA_VIEWS) * n` images.

TTA is an evaluation choice: it costs one forward pass per view. The exported model stays
single-pass: the SavedModel (and the LiteRT and ONNX files) classify each image once, so their
accuracy is `accuracy`, not `accuracy_tta`.

A multi-label classifier (sigmoid outputs, `tfresnet.models.is_multi_label`) is measured by its
mean average precision and F1 at its decision thresholds (`tfresnet.insight.multi_label_metrics`),
its labels kept as multi-hot rows; TTA averages its probabilities in the same views.
"""

from __future__ import annotations

import heapq
from typing import Iterator, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfresnet.insight import multi_label_metrics
from tfresnet.models.classifier import is_multi_label

# The corner crops keep this fraction of each side before being resized back.
TTA_CROP_FRACTION = 0.875
# The views `tta_views` makes, in its order.
TTA_VIEWS = (
    "original",
    "flipped",
    "top-left crop",
    "top-right crop",
    "bottom-left crop",
    "bottom-right crop",
)


def tta_views(images: tf.Tensor) -> tf.Tensor:
    """The test-time views of a batch of images, stacked in the order of `TTA_VIEWS`.

    Graph-safe (use it in `tf.function` or `Dataset.map`). The crops are resized bilinearly,
    antialiased, as the evaluation transform resizes.

    Args:
        images: A batch `(batch, height, width, channels)` of raw pixels.

    Returns:
        float32 tensor `(len(TTA_VIEWS), batch, height, width, channels)`.

    Example:
    >>> tta_views(np.zeros((2, 32, 32, 3), "float32")).shape
    TensorShape([6, 2, 32, 32, 3])
    """
    images = tf.cast(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(
            f"tta_views takes a batch of images (batch, height, width, channels). "
            f"Received: shape={images.shape}"
        )
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    crop_height = tf.maximum(tf.cast(TTA_CROP_FRACTION * tf.cast(height, tf.float32), tf.int32), 1)
    crop_width = tf.maximum(tf.cast(TTA_CROP_FRACTION * tf.cast(width, tf.float32), tf.int32), 1)
    bottom, right = height - crop_height, width - crop_width
    crops = [
        tf.image.resize(
            images[:, top : top + crop_height, left : left + crop_width],
            (height, width),
            method="bilinear",
            antialias=True,
        )
        for top, left in ((0, 0), (0, right), (bottom, 0), (bottom, right))
    ]
    views = tf.stack([images, tf.image.flip_left_right(images), *crops])
    return tf.ensure_shape(views, [len(TTA_VIEWS), *images.shape])


def predict_views(model: keras.Model, images, *, tta: bool = True) -> np.ndarray:
    """The probabilities of a batch of images in each view, from one `predict_on_batch` call.

    Args:
        model: A classifier with softmax outputs.
        images: A batch of raw [0, 255] images.
        tta: All of `TTA_VIEWS`, or only the original images.

    Returns:
        float32 array `(views, batch, classes)`: `len(TTA_VIEWS)` views with `tta`, else 1;
        view 0 is the original images.

    Example:
        predict_views(model, images).mean(axis=0).argmax(axis=-1)  # the TTA predictions
        # array([2, 0, 1, 1])
    """
    if not tta:
        return np.asarray(model.predict_on_batch(images), dtype="float32")[None]
    views = tta_views(images)
    flat = tf.reshape(views, tf.concat([[-1], tf.shape(views)[2:]], axis=0))
    probabilities = np.asarray(model.predict_on_batch(flat), dtype="float32")
    return probabilities.reshape(len(TTA_VIEWS), -1, probabilities.shape[-1])


def class_indices(labels) -> np.ndarray:
    """Class indices of a batch of labels: int indices as they are, one-hot (or soft) by argmax.

    Example:
    >>> class_indices(np.array([[0.0, 1.0], [1.0, 0.0]]))
    array([1, 0])
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if labels.ndim != 1:
        raise ValueError(
            f"Labels must be a batch of class indices (batch,) or of one-hot vectors (batch, classes). "
            f"Received: labels of shape {labels.shape}"
        )
    return labels.astype("int64")


def label_rows(labels) -> np.ndarray:
    """The multi-hot rows of a batch of multi-label labels, as float32.

    Example:
    >>> label_rows([[1, 0, 1], [0, 0, 0]]).tolist()
    [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"A multi-label model is evaluated on multi-hot label rows (batch, labels). "
            f"Received: labels of shape {labels.shape}"
        )
    return labels.astype("float32")


def predict_tta(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """TTA probabilities (averaged over `TTA_VIEWS`) and class indices over a dataset.

    Args:
        model: A classifier with softmax outputs, or a multi-label one (sigmoid outputs).
        dataset: Batches of `(images, labels)`; labels int indices or one-hot, multi-hot rows
            for a multi-label model.

    Returns:
        `(probabilities, labels)`: float32 `(images, classes)` and int64 `(images,)`; for a
        multi-label model, the labels are float32 multi-hot rows `(images, labels)`.

    Example:
        probabilities, labels = predict_tta(model, data.validation)
        float((probabilities.argmax(axis=1) == labels).mean())
        # 0.93
    """
    found = evaluation_pass(model, dataset, tta=True)
    return found.tta_probabilities, found.labels


def evaluate(
    model: keras.Model, dataset: tf.data.Dataset, *, tta: bool = False, thresholds: list[float] | None = None
) -> dict:
    """Accuracy of a classifier on a dataset (mean average precision and F1 for a multi-label
    one), also with test-time augmentation when asked.

    Args:
        model: A classifier of raw [0, 255] images with softmax outputs, e.g. from
            `build_classifier`, or with sigmoid outputs (`multi_label=True`).
        dataset: Batches of `(images, labels)`, e.g. `ImageData.validation`; labels int class
            indices or one-hot, multi-hot rows for a multi-label model.
        tta: Also classify each image in every view of `TTA_VIEWS` and average the
            probabilities (one forward pass per view; the export stays single-pass).
        thresholds: A multi-label model's decision threshold per label, for the F1 scores
            (default: 0.5 each; `FineTuneResult.thresholds`).

    Returns:
        `{"accuracy", "num_images"}`, plus `"accuracy_tta"` and `"tta_views"` with `tta`. For a
        multi-label model: `{"mean_average_precision", "f1_micro", "f1_macro", "num_images"}`,
        plus the first three with a `_tta` suffix and `"tta_views"` with `tta`.

    Example:
        evaluate(model, data.validation, tta=True)
        # {'accuracy': 0.91, 'num_images': 60, 'accuracy_tta': 0.93, 'tta_views': [...]}
    """
    multi_label = is_multi_label(model)
    if thresholds is not None and not multi_label:
        raise ValueError(
            "thresholds apply to a multi-label model (sigmoid outputs); this one is single-label. "
            "Leave thresholds out."
        )
    single, labels, _, _, averaged = evaluation_pass(model, dataset, tta=tta)
    if multi_label:
        return _multi_label_result(single, averaged, labels, thresholds)
    result = {"accuracy": accuracy(single, labels), "num_images": int(len(labels))}
    if tta:
        result["accuracy_tta"] = accuracy(averaged, labels)
        result["tta_views"] = list(TTA_VIEWS)
    return result


def _multi_label_result(single, averaged, labels, thresholds) -> dict:
    """`evaluate`'s dict for a multi-label model (`averaged`: None without TTA)."""
    keys = multi_label_metrics.SUMMARY_KEYS
    found = multi_label_metrics.label_scores(single, labels, thresholds)
    result = {**{key: found[key] for key in keys}, "num_images": int(len(labels))}
    if averaged is not None:
        found = multi_label_metrics.label_scores(averaged, labels, thresholds)
        result.update({f"{key}_tta": found[key] for key in keys})
        result["tta_views"] = list(TTA_VIEWS)
    return result


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The share of images whose most probable class is their label.

    Example:
    >>> accuracy(np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([0, 0]))
    0.5
    """
    return float((probabilities.argmax(axis=1) == labels).mean())


def labelled_batches(
    dataset: tf.data.Dataset, *, multi_label: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(images, class indices)` of each `(images, labels)` batch, as NumPy arrays: the one loop
    over an evaluation set that evaluation, the report and the exports' measures share.

    With `multi_label`, the labels stay multi-hot rows `(batch, labels)` (float32, `label_rows`).

    Raises:
        ValueError: The dataset yields something else, or no batch at all.

    Example:
        sum(len(labels) for _, labels in labelled_batches(data.validation))
        # 60
    """
    empty = True
    for batch in dataset.as_numpy_iterator() if isinstance(dataset, tf.data.Dataset) else dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            spec = getattr(dataset, "element_spec", type(batch).__name__)
            raise ValueError(f"The dataset must yield (images, labels) batches. Received: {spec}")
        empty = False
        yield np.asarray(batch[0]), label_rows(batch[1]) if multi_label else class_indices(batch[1])
    if empty:
        raise ValueError("The evaluation set is empty: no batch could be read from it.")


def predict_probabilities(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (one view per image) and class indices over a dataset (multi-hot rows for a
    multi-label model, as `predict_tta`).

    Example:
        probabilities, labels = predict_probabilities(model, data.validation)
    """
    found = evaluation_pass(model, dataset)
    return found.probabilities, found.labels


class EvaluationPass(NamedTuple):
    """What one pass over an evaluation set found (see `evaluation_pass`)."""

    probabilities: np.ndarray
    labels: np.ndarray
    highest_losses: dict[int, np.ndarray]
    samples: dict[int, dict[int, np.ndarray]]
    tta_probabilities: np.ndarray | None


def evaluation_pass(
    model: keras.Model, dataset: tf.data.Dataset, *, tta: bool = False, keep: int = 0, per_class: int = 0
) -> EvaluationPass:
    """One pass over `(images, labels)` batches: the one loop evaluation and the reports share.

    Args:
        model: A classifier; a multi-label one (sigmoid outputs) keeps its labels as multi-hot rows.
        dataset: Labelled batches, read once (a reshuffling dataset is seen in one order).
        tta: Also the probabilities averaged over `TTA_VIEWS` (else None).
        keep: How many of the highest-loss images to keep, by their index in the pass (the loss
            of the label for single-label models, the mean binary cross-entropy of the labels
            for multi-label ones).
        per_class: How many of each class's first images to keep, by index (single-label).

    Example:
        found = evaluation_pass(model, data.validation, keep=9)
        found.probabilities.shape, sorted(found.highest_losses)[:3]
        # ((60, 3), [4, 17, 31])
    """
    multi_label = is_multi_label(model)
    probabilities, labels, averaged, worst, samples, index = [], [], [], [], {}, 0
    for images, batch_labels in labelled_batches(dataset, multi_label=multi_label):
        views = predict_views(model, images, tta=tta)
        probabilities.append(views[0])
        if tta:
            averaged.append(views.mean(axis=0))
        labels.append(batch_labels)
        if keep:
            losses = _image_losses(views[0], batch_labels, multi_label=multi_label)
            for offset, loss in enumerate(losses):
                item = (float(loss), index + offset, np.asarray(images[offset]))
                (heapq.heappush if len(worst) < keep else heapq.heappushpop)(worst, item)
        if per_class and not multi_label:
            for offset, label in enumerate(batch_labels):
                kept = samples.setdefault(int(label), {})
                if len(kept) < per_class:
                    kept[index + offset] = np.asarray(images[offset])
        index += len(batch_labels)
    return EvaluationPass(
        probabilities=np.concatenate(probabilities),
        labels=np.concatenate(labels),
        highest_losses={position: image for _, position, image in worst},
        samples=samples,
        tta_probabilities=np.concatenate(averaged) if tta else None,
    )


def _image_losses(probabilities: np.ndarray, labels: np.ndarray, *, multi_label: bool) -> np.ndarray:
    if multi_label:
        return multi_label_metrics.image_losses(probabilities, labels)
    picked = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(picked, 1e-12, 1.0))
