"""The loss of multi-label training: binary cross-entropy per label, each label's positives and
negatives weighted so that a rare label counts as much as a common one.

Keras's `BinaryCrossentropy` weighs every label alike, and `class_weight` in `fit` weighs whole
images by one class; neither balances labels that are each rare in their own way. Here label
`j`'s positives weigh `positive_weights[j]` and its negatives `negative_weights[j]` (see
`label_weights`), as `class_weight="balanced"` does for the classes of single-label data.
"""

from __future__ import annotations

from typing import Sequence

import keras


@keras.saving.register_keras_serializable(package="tfresnet")
class LabelWeightedCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on sigmoid probabilities, label smoothing and per-label weights.

    Smoothing moves every target towards 0.5 (`y * (1 - s) + s / 2`, as Keras's
    `BinaryCrossentropy` does); the loss of an image is the mean over its labels of each
    label's weighted cross-entropy.

    Args:
        label_smoothing: In [0, 1).
        positive_weights: Weight of each label's positives (None: 1 for every label).
        negative_weights: Weight of each label's negatives (None: 1 for every label).

    Example:
    >>> loss = LabelWeightedCrossentropy(positive_weights=[4.0, 1.0], negative_weights=[0.6, 1.0])
    >>> round(float(loss([[1.0, 0.0]], [[0.5, 0.5]])), 4)
    1.7329
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        positive_weights: Sequence[float] | None = None,
        negative_weights: Sequence[float] | None = None,
        name: str = "label_weighted_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.positive_weights = None if positive_weights is None else [float(w) for w in positive_weights]
        self.negative_weights = None if negative_weights is None else [float(w) for w in negative_weights]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "float32")
        y_pred = keras.ops.clip(
            keras.ops.cast(y_pred, "float32"), keras.config.epsilon(), 1 - keras.config.epsilon()
        )
        targets = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        positive = -targets * keras.ops.log(y_pred)
        negative = -(1.0 - targets) * keras.ops.log(1.0 - y_pred)
        if self.positive_weights is not None:
            positive = positive * keras.ops.convert_to_tensor(self.positive_weights, "float32")
        if self.negative_weights is not None:
            negative = negative * keras.ops.convert_to_tensor(self.negative_weights, "float32")
        return keras.ops.mean(positive + negative, axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "positive_weights": self.positive_weights,
            "negative_weights": self.negative_weights,
        }


def label_weights(positive_counts: Sequence[int], total: int, mode: str = "balanced") -> dict | None:
    """Each label's weights for its positives and negatives, `"balanced"` as scikit-learn
    balances two classes: `total / (2 * count)` for each side; a label that is always or never
    there keeps weights of 1. `"none"`: None.

    Example:
    >>> label_weights([10, 50], 100)
    {'positive': [5.0, 1.0], 'negative': [0.5555555555555556, 1.0]}
    """
    if mode == "none":
        return None
    positive, negative = [], []
    for count in positive_counts:
        if 0 < count < total:
            positive.append(total / (2 * count))
            negative.append(total / (2 * (total - count)))
        else:
            positive.append(1.0)
            negative.append(1.0)
    return {"positive": positive, "negative": negative}
