"""Per-label thresholds: the F1-best cut of each label on validation images."""

import itertools

import numpy as np
import pytest

from tfresnet.models.thresholds import THRESHOLD, apply_thresholds, check_thresholds, choose_thresholds


def _f1(predicted: np.ndarray, positives: np.ndarray) -> float:
    hits = (predicted & positives).sum()
    return 2 * hits / (predicted.sum() + positives.sum())


@pytest.mark.parametrize("seed", range(5))
def test_each_threshold_gives_the_best_f1_of_any_cut(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(40, 3)) < 0.3).astype(int)
    probabilities = np.clip(labels * 0.3 + rng.uniform(0, 0.7, size=labels.shape), 0, 1).round(2)
    thresholds = choose_thresholds(probabilities, labels)
    for j, threshold in enumerate(thresholds):
        chosen = _f1(probabilities[:, j] >= threshold, labels[:, j] > 0)
        best = max(_f1(probabilities[:, j] >= cut, labels[:, j] > 0) for cut in probabilities[:, j])
        assert chosen == pytest.approx(best)
        assert threshold not in probabilities[:, j]  # between two images' scores


def test_a_label_without_positive_images_keeps_the_default():
    thresholds = choose_thresholds(np.array([[0.2, 0.9], [0.7, 0.1]]), np.array([[0, 1], [0, 0]]))
    assert thresholds[0] == THRESHOLD


def test_apply_thresholds_compares_each_label_with_its_own():
    probabilities = np.array([[0.3, 0.3], [0.6, 0.2]])
    for thresholds in itertools.product([0.25, 0.5], repeat=2):
        predicted = apply_thresholds(probabilities, thresholds)
        assert predicted.dtype == np.int32
        np.testing.assert_array_equal(predicted, probabilities >= np.array(thresholds))


def test_check_thresholds_wants_one_number_in_0_1_per_label():
    with pytest.raises(ValueError, match="2 numbers in \\[0, 1\\]"):
        check_thresholds([0.5], 2)
    with pytest.raises(ValueError):
        check_thresholds([0.5, 1.5], 2)
