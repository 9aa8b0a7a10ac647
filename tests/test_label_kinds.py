"""Tests of tfresnet.tuning.label_kinds: the objective and the labels of each kind of data."""

import numpy as np
import pytest
import tensorflow as tf

from tfresnet.tuning import OBJECTIVES
from tfresnet.tuning.label_kinds import has_int_labels, resolve_objective


def test_each_kind_of_data_ranks_by_its_own_metric_by_default():
    assert resolve_objective(None, multi_label=False) == "val_accuracy"
    assert resolve_objective(None, multi_label=True) == "val_mean_average_precision"
    for multi_label in (False, True):
        assert resolve_objective("val_loss", multi_label=multi_label) == "val_loss"
    assert OBJECTIVES["val_mean_average_precision"] == "max"


@pytest.mark.parametrize(
    "objective, multi_label, message",
    [
        (
            "val_mean_average_precision",
            False,
            r"^objective must be one of \('val_accuracy', 'val_loss'\) for single-label data "
            r"\(None: 'val_accuracy'\)\. Received: objective='val_mean_average_precision'$",
        ),
        (
            "val_accuracy",
            True,
            r"^objective must be one of \('val_mean_average_precision', 'val_loss'\) for multi-label "
            r"data \(None: 'val_mean_average_precision'\)\. Received: objective='val_accuracy'$",
        ),
        ("accuracy", False, r"for single-label data .*Received: objective='accuracy'$"),
    ],
)
def test_an_objective_of_the_other_kind_is_refused_in_one_line(objective, multi_label, message):
    with pytest.raises(ValueError, match=message):
        resolve_objective(objective, multi_label=multi_label)


def test_only_integer_class_indices_are_labels_to_one_hot(data, multi_label_data):
    assert has_int_labels(data.train)
    assert not has_int_labels(multi_label_data.train)
    assert multi_label_data.train.element_spec[1].shape.as_list() == [None, 3]
    one_hot = tf.data.Dataset.from_tensor_slices(([[0.5], [0.2]], [[0.0, 1.0], [1.0, 0.0]])).batch(2)
    assert not has_int_labels(one_hot)
    assert not has_int_labels(tf.data.Dataset.from_tensor_slices([1, 2]))  # no labels at all
    assert not has_int_labels((np.zeros((2, 1)), np.array([0, 1])))  # arrays: not a dataset
