"""The measures of a multi-label classifier, in NumPy: each label's average precision and their
mean, precision, recall and F1 at decision thresholds, and the labels most often missed or added.

Average precision (AP) summarises a label's precision-recall curve over every threshold, as
scikit-learn's `average_precision_score`: `sum_k (R_k - R_{k-1}) P_k` over the distinct scores
`k`, highest first, where `P_k` and `R_k` are the precision and recall of the images scoring at
least that (without ties: the mean, over the label's positive images, of the precision at each
one's rank). A label without a positive image has no AP (None); the mean average precision is
the mean over the labels that have one.

Precision, recall and F1 are measured at the thresholds (`tfresnet.models.thresholds`; 0.5 each
when none are given), a label being predicted where its probability reaches its threshold; a
ratio without images to count (no prediction, no positive image) is 0, as scikit-learn's
`zero_division=0`. `f1_micro` counts every (image, label) decision together, `f1_macro` is the
mean of the labels' F1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tfresnet.models.thresholds import THRESHOLD, apply_thresholds, check_thresholds, precision_recall_points

# The measures of a whole set, which the report, `evaluate` and the command's summary give (and
# with TTA, each again with a `_tta` suffix).
SUMMARY_KEYS = ("mean_average_precision", "f1_micro", "f1_macro")


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """A label's average precision (see the module's docstring); None without a positive image.

    Example:
    >>> round(average_precision(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1])), 4)
    0.8333
    """
    if not (np.asarray(positives) > 0).any():
        return None
    precision, recall, _ = precision_recall_points(scores, positives)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 0.0)


def label_scores(
    probabilities: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] | None = None
) -> dict:
    """The measures of each label and over all labels, at `thresholds`.

    Args:
        probabilities: `(images, labels)` sigmoid probabilities.
        labels: `(images, labels)` multi-hot rows (0 or 1).
        thresholds: One per label (default: `THRESHOLD`, 0.5, each).

    Returns:
        `{"mean_average_precision", "f1_micro", "f1_macro", "per_label"}`; `per_label` lists, in
        label order, `{"average_precision", "precision", "recall", "f1", "support", "threshold"}`
        (`support`: the images having the label).

    Example:
    >>> probabilities = np.array([[0.9, 0.2], [0.6, 0.7], [0.2, 0.4]])
    >>> found = label_scores(probabilities, np.array([[1, 0], [0, 1], [1, 1]]))
    >>> round(found["mean_average_precision"], 4), round(found["f1_micro"], 4), found["per_label"][1]["f1"]
    (0.9167, 0.5714, 0.6666666666666666)
    """
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or np.shape(labels) != probabilities.shape:
        raise ValueError(
            f"Expected probabilities and multi-hot labels of one shape (images, labels). Received "
            f"probabilities of shape {probabilities.shape} and labels of shape {np.shape(labels)}."
        )
    positives = np.asarray(labels) > 0
    count = probabilities.shape[1]
    thresholds = [THRESHOLD] * count if thresholds is None else check_thresholds(thresholds, count)
    predicted = apply_thresholds(probabilities, thresholds) > 0
    true_positives = (predicted & positives).sum(axis=0)
    false_positives = (predicted & ~positives).sum(axis=0)
    false_negatives = (~predicted & positives).sum(axis=0)
    f1 = _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives)
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(true_positives, true_positives + false_negatives)
    averages = [average_precision(probabilities[:, j], positives[:, j]) for j in range(count)]
    defined = [value for value in averages if value is not None]
    errors = false_positives.sum() + false_negatives.sum()
    micro = _ratio(2 * true_positives.sum(), 2 * true_positives.sum() + errors)
    return {
        "mean_average_precision": float(np.mean(defined)) if defined else None,
        "f1_micro": float(micro),
        "f1_macro": float(f1.mean()),
        "per_label": [
            {
                "average_precision": averages[j],
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(positives[:, j].sum()),
                "threshold": thresholds[j],
            }
            for j in range(count)
        ],
    }


def most_missed_and_added(
    labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], *, most: int = 5
) -> dict:
    """The labels most often missed (given, not predicted) and added (predicted, not given).

    Args:
        labels: `(images, labels)` multi-hot rows.
        predicted: `(images, labels)` 0/1 predictions (`apply_thresholds`).
        class_names: Label `j` is `class_names[j]`.
        most: Keep this many labels of each list, most errors first (ties: label order).

    Returns:
        `{"most_missed": [{"label", "count"}, ...], "most_added": [...]}`, labels never missed
        (or never added) left out.

    Example:
    >>> most_missed_and_added(np.array([[1, 1], [1, 0]]), np.array([[0, 1], [0, 1]]), ["a", "b"])
    {'most_missed': [{'label': 'a', 'count': 2}], 'most_added': [{'label': 'b', 'count': 1}]}
    """
    positives, guesses = np.asarray(labels) > 0, np.asarray(predicted) > 0
    found = {}
    for key, errors in (("most_missed", positives & ~guesses), ("most_added", guesses & ~positives)):
        counts = errors.sum(axis=0)
        order = np.argsort(-counts, kind="stable")[:most]
        found[key] = [{"label": class_names[j], "count": int(counts[j])} for j in order if counts[j]]
    return found


def image_losses(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's binary cross-entropy, the mean over its labels (probabilities clipped to
    [1e-7, 1 - 1e-7], as Keras clips them).

    Example:
    >>> image_losses(np.array([[0.9, 0.2], [0.5, 0.5]]), np.array([[1, 0], [1, 1]])).round(4).tolist()
    [0.1643, 0.6931]
    """
    probabilities = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    positives = np.asarray(labels) > 0
    return -np.where(positives, np.log(probabilities), np.log1p(-probabilities)).mean(axis=1)
