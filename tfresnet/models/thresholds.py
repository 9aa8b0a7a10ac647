"""The decision thresholds of a multi-label classifier: one per label, chosen on validation
images to maximise that label's F1, and applied to sigmoid probabilities.

A label is predicted where its probability reaches its threshold. Without validation images
(or for a label with no positive image among them) the threshold is `THRESHOLD`, 0.5. The
precision-recall curve the choice reads (`precision_recall_points`) is the one the report's
average precision and `pr_curves.png` read too (`tfresnet.insight.multi_label_metrics`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# A label's threshold where none is chosen.
THRESHOLD = 0.5


def choose_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> list[float]:
    """Each label's threshold that maximises its F1 on `labels`.

    The candidates are the probabilities the label's images get; the threshold is the midpoint
    between the best candidate and the next lower probability, so that it does not sit on one
    image's score. Ties go to the highest threshold.

    Args:
        probabilities: `(images, labels)` sigmoid probabilities.
        labels: `(images, labels)` multi-hot rows (0 or 1).

    Returns:
        One threshold per label (`THRESHOLD` for a label without positive images).

    Example:
    >>> probabilities = np.array([[0.9, 0.2], [0.4, 0.6], [0.3, 0.1]])
    >>> choose_thresholds(probabilities, np.array([[1, 0], [1, 1], [0, 0]]))
    [0.35, 0.4]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels) > 0
    return [_best_threshold(probabilities[:, j], labels[:, j]) for j in range(labels.shape[1])]


def _best_threshold(scores: np.ndarray, positives: np.ndarray) -> float:
    if not positives.any():
        return THRESHOLD
    precision, recall, cuts = precision_recall_points(scores, positives)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))  # the first of equal F1s: the highest threshold
    below = cuts[best + 1] if best + 1 < len(cuts) else 0.0
    return round(float((cuts[best] + below) / 2), 6)


def precision_recall_points(
    scores: np.ndarray, positives: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A label's precision-recall curve: one point per distinct score, highest first.

    Args:
        scores: `(images,)` probabilities of the label.
        positives: `(images,)` whether each image has the label.

    Returns:
        `(precision, recall, thresholds)`: the precision and recall of predicting the label on
        the images scoring at least `thresholds[k]`, recall rising.

    Example:
    >>> precision, recall, _ = precision_recall_points(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1]))
    >>> precision.round(3).tolist(), recall.tolist()
    ([1.0, 0.5, 0.667], [0.5, 0.5, 1.0])
    """
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives) > 0
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last = np.append(np.flatnonzero(scores[1:] < scores[:-1]), len(scores) - 1)  # of each tie
    true_positives = np.cumsum(positives)[last]
    recall = true_positives / max(int(positives.sum()), 1)
    return true_positives / (last + 1), recall, scores[last]


def apply_thresholds(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """The 0/1 `(images, labels)` int32 predictions: 1 where a probability reaches its label's threshold.

    Example:
    >>> apply_thresholds(np.array([[0.9, 0.2], [0.4, 0.6]]), [0.5, 0.3]).tolist()
    [[1, 0], [0, 1]]
    """
    return (np.asarray(probabilities) >= np.asarray(thresholds, dtype=np.float32)).astype(np.int32)


def check_thresholds(thresholds: Sequence[float], num_labels: int) -> list[float]:
    """The thresholds as floats, checked: one per label, each in [0, 1].

    Example:
    >>> check_thresholds([0.5, 1], 2)
    [0.5, 1.0]
    """
    values = [float(value) for value in thresholds]
    if len(values) != num_labels or not all(0 <= value <= 1 for value in values):
        raise ValueError(
            f"thresholds must be {num_labels} numbers in [0, 1], one per label. "
            f"Received: {list(thresholds)!r}"
        )
    return values
