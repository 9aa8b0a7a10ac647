"""What a run optimises and watches, by kind of labels."""

import dataclasses

import numpy as np
import pytest
from conftest import make_data

from tfresnet.models.thresholds import THRESHOLD, choose_thresholds
from tfresnet.training.targets import loss_labels, metric_name, monitor, run_thresholds, weights_facts


def test_single_label_data_trains_on_one_hot_labels_and_watches_accuracy(data):
    _, labels = next(iter(loss_labels(data.train, data)))
    assert labels.shape == (8, len(data.class_names))
    assert (metric_name(data), monitor(data)) == ("accuracy", "val_accuracy")
    facts = weights_facts(data, "balanced")
    assert facts["label_weights"] is None and len(facts["class_weights"]) == len(data.class_names)


def test_multi_label_data_trains_on_its_rows_and_watches_mean_average_precision(multi_label_data):
    data = multi_label_data
    (_, given), (_, fed) = next(iter(data.validation)), next(iter(loss_labels(data.validation, data)))
    np.testing.assert_array_equal(given, fed)
    assert monitor(data) == "val_mean_average_precision"
    facts = weights_facts(data, "balanced")
    assert facts["class_weights"] is None
    counts = np.array(data.class_counts)
    np.testing.assert_allclose(facts["label_weights"]["positive"], data.num_train / (2 * counts))
    assert weights_facts(data, "none")["label_weights"] is None
    with pytest.raises(ValueError, match="class_weight must be one of"):
        weights_facts(data, "focal")


def test_without_validation_the_training_loss_is_watched():
    assert monitor(dataclasses.replace(make_data(), validation=None)) == "loss"


def test_run_thresholds_are_the_validation_sets_f1_best(multi_label_model):
    model, data = multi_label_model
    probabilities = np.concatenate([model.predict_on_batch(images) for images, _ in data.validation])
    labels = np.concatenate([labels for _, labels in data.validation.as_numpy_iterator()])
    assert run_thresholds(model, data) == choose_thresholds(probabilities, labels)
    without = dataclasses.replace(data, validation=None)
    assert run_thresholds(model, without) == [THRESHOLD] * 3
    assert run_thresholds(model, make_data()) is None
