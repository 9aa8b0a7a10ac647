"""What the kind of labels decides in a search: the objective that ranks trials, and how labels
reach the loss.

Single-label data (one class per image) ranks trials by validation accuracy by default;
multi-label data (`data.multi_label`: multi-hot rows, an image may have several labels or none)
by validation mean average precision, the mean over labels of the area under each label's
precision-recall curve (`compile_classifier`'s metric). Either may rank by validation loss
instead. Integer class indices become one-hot labels on the way to the loss; multi-hot rows go
as they are. (How the loss weighs each kind is `fine_tune`'s: `training.targets.weights_facts`.)
"""

from __future__ import annotations

import tensorflow as tf

from tfresnet.models.classifier import ACCURACY, MEAN_AVERAGE_PRECISION

# The validation metrics of `compile_classifier` that may rank trials (in a fit's logs).
VAL_ACCURACY = f"val_{ACCURACY}"
VAL_MEAN_AVERAGE_PRECISION = f"val_{MEAN_AVERAGE_PRECISION}"
VAL_LOSS = "val_loss"
# The objectives of each kind of labels (multi-label or not), its default first.
KIND_OBJECTIVES = {False: (VAL_ACCURACY, VAL_LOSS), True: (VAL_MEAN_AVERAGE_PRECISION, VAL_LOSS)}


def resolve_objective(objective: str | None, *, multi_label: bool) -> str:
    """The objective that ranks trials: `objective`, checked against the kind of labels, or
    the kind's default for None.

    Example:
    >>> resolve_objective(None, multi_label=False), resolve_objective(None, multi_label=True)
    ('val_accuracy', 'val_mean_average_precision')
    >>> resolve_objective("val_loss", multi_label=True)
    'val_loss'
    """
    allowed = KIND_OBJECTIVES[bool(multi_label)]
    if objective is None:
        return allowed[0]
    if objective in allowed:
        return objective
    kind = "multi-label" if multi_label else "single-label"
    raise ValueError(
        f"objective must be one of {allowed} for {kind} data (None: {allowed[0]!r}). "
        f"Received: objective={objective!r}"
    )


def has_int_labels(dataset) -> bool:
    """Whether `dataset` yields batches of `(inputs, labels)` with integer class indices (not
    one-hot, not multi-hot): labels to map to one-hot ones (`one_hot_labels`).

    Example:
    >>> features = [[0.5], [0.2]]
    >>> has_int_labels(tf.data.Dataset.from_tensor_slices((features, [1, 0])).batch(2))
    True
    >>> has_int_labels(tf.data.Dataset.from_tensor_slices((features, [[1.0, 1.0], [0.0, 0.0]])).batch(2))
    False
    """
    spec = getattr(dataset, "element_spec", None)
    if not isinstance(spec, tuple) or len(spec) < 2:
        return False
    labels = spec[1]
    return isinstance(labels, tf.TensorSpec) and labels.dtype.is_integer and labels.shape.rank == 1
