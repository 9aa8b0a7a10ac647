"""What a run optimises and watches, by kind of labels: the labels the loss takes, the weights
of classes (single-label) or of each label's positives and negatives (multi-label), the metric
that picks the best epoch, and a multi-label run's decision thresholds.

Single-label data trains on one-hot labels with Keras's `class_weight` and watches validation
accuracy; multi-label data (`ImageData.multi_label`) trains on its multi-hot rows with
per-label weights in the loss (`tfresnet.models.multi_label`) and watches validation mean
average precision. Without a validation set, both watch the training loss.

Example:
    monitor(data)
    # 'val_mean_average_precision'
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfresnet.data import ImageData
from tfresnet.models.classifier import ACCURACY, MEAN_AVERAGE_PRECISION, one_hot_labels
from tfresnet.models.multi_label import label_weights
from tfresnet.models.thresholds import THRESHOLD, choose_thresholds
from tfresnet.training.settings import class_weights


def loss_labels(dataset: tf.data.Dataset, data: ImageData) -> tf.data.Dataset:
    """`dataset`'s batches with the labels the loss takes: one-hot, or multi-hot rows as they are.

    Example:
        train = loss_labels(data.train, data)
    """
    if data.multi_label:
        return dataset
    return dataset.map(one_hot_labels(len(data.class_names)))


def metric_name(data: ImageData) -> str:
    """The metric of the data's kind of labels: `"accuracy"` or `"mean_average_precision"`."""
    return MEAN_AVERAGE_PRECISION if data.multi_label else ACCURACY


def monitor(data: ImageData) -> str:
    """What picks the best epoch and stops early: the validation metric, else the training loss."""
    return f"val_{metric_name(data)}" if data.validation is not None else "loss"


def weights_facts(data: ImageData, mode: str) -> dict:
    """`config.json`'s weights of the run: `class_weights` (Keras's `class_weight` of `fit`) and
    `label_weights` (the multi-label loss's), each None where it does not apply.

    Example:
        weights_facts(data, "balanced")
        # {'class_weights': {0: 0.83, 1: 1.25}, 'label_weights': None}
    """
    if data.multi_label:
        class_weights(data.class_counts, mode)  # checks the mode
        return {
            "class_weights": None,
            "label_weights": label_weights(data.class_counts, data.num_train, mode),
        }
    return {"class_weights": class_weights(data.class_counts, mode), "label_weights": None}


def run_thresholds(model, data: ImageData) -> list[float] | None:
    """A multi-label run's thresholds: each label's F1-best on the validation set
    (`tfresnet.models.choose_thresholds`), `THRESHOLD` each without one; None for single-label.

    Example:
        run_thresholds(result.model, data)
        # [0.41, 0.62, 0.35]
    """
    if not data.multi_label:
        return None
    if data.validation is None:
        return [THRESHOLD] * len(data.class_names)
    probabilities, labels = [], []
    for images, batch_labels in data.validation:
        probabilities.append(np.asarray(model.predict_on_batch(images), dtype=np.float32))
        labels.append(batch_labels.numpy())
    return choose_thresholds(np.concatenate(probabilities), np.concatenate(labels))
