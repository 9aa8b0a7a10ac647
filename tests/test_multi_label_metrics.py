"""tfresnet.insight.multi_label_metrics: average precision as scikit-learn computes it (ties
included), precision, recall and F1 at thresholds by hand and against scikit-learn, the labels
most often missed and added, and the per-image loss against Keras's."""

import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from tfresnet.insight import multi_label_metrics as metrics

# Four images, two labels: the case the tests of evaluation and the report check by hand too.
PROBABILITIES = np.array([[0.9, 0.2], [0.7, 0.6], [0.4, 0.8], [0.1, 0.3]])
LABELS = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])


def test_average_precision_by_hand():
    # Label 0 ranks positive, negative, positive, negative: (1/1 + 2/3) / 2.
    assert metrics.average_precision(PROBABILITIES[:, 0], LABELS[:, 0]) == pytest.approx(5 / 6)
    assert metrics.average_precision(PROBABILITIES[:, 1], LABELS[:, 1]) == 1.0
    assert metrics.average_precision(PROBABILITIES[:, 0], np.zeros(4)) is None
    # Tied scores count together: two images at 0.5, one positive, under one positive at 0.9.
    assert metrics.average_precision(np.array([0.9, 0.5, 0.5]), np.array([1, 1, 0])) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3
    )


def test_average_precision_is_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = np.round(rng.uniform(size=40), 1)  # many ties
        positives = rng.uniform(size=40) < 0.3
        positives[0] = True
        assert metrics.average_precision(scores, positives) == pytest.approx(
            average_precision_score(positives, scores), abs=1e-12
        )


def test_precision_recall_points_rise_in_recall_at_each_distinct_score():
    scores = np.array([0.3, 0.9, 0.5, 0.5])
    precision, recall, thresholds = metrics.precision_recall_points(scores, [1, 1, 0, 1])
    assert thresholds.tolist() == [0.9, 0.5, 0.3]
    assert recall.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert precision.tolist() == pytest.approx([1.0, 2 / 3, 3 / 4])


def test_label_scores_at_half_by_hand():
    found = metrics.label_scores(PROBABILITIES, LABELS)
    # At 0.5: label 0 predicted on images 0 and 1 (1 right, 1 wrong, 1 missed); label 1 on 1 and 2.
    assert found["mean_average_precision"] == pytest.approx((5 / 6 + 1) / 2)
    assert found["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert found["f1_macro"] == pytest.approx((0.5 + 1.0) / 2)
    assert found["per_label"][0] == {
        "average_precision": pytest.approx(5 / 6),
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "threshold": 0.5,
    }
    assert found["per_label"][1]["f1"] == 1.0 and found["per_label"][1]["support"] == 2


def test_label_scores_at_chosen_thresholds_and_against_scikit_learn():
    found = metrics.label_scores(PROBABILITIES, LABELS, [0.35, 0.5])
    # Label 0 now also predicted on image 2: 2 right, 1 wrong, none missed.
    assert found["per_label"][0]["f1"] == pytest.approx(0.8)
    assert found["f1_micro"] == pytest.approx(8 / 9) and found["f1_macro"] == pytest.approx(0.9)
    assert [entry["threshold"] for entry in found["per_label"]] == [0.35, 0.5]
    rng = np.random.default_rng(1)
    probabilities = rng.uniform(size=(30, 4))
    labels = (rng.uniform(size=(30, 4)) < 0.4).astype(int)
    labels[:, 3] = 0  # a label no image has: its F1, precision and recall are 0
    thresholds = [0.3, 0.5, 0.7, 0.5]
    found = metrics.label_scores(probabilities, labels, thresholds)
    predicted = (probabilities >= thresholds).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, zero_division=0)
    for j, entry in enumerate(found["per_label"]):
        found_j = (entry["precision"], entry["recall"], entry["f1"])
        assert found_j == pytest.approx((precision[j], recall[j], f1[j]))
        assert entry["support"] == support[j]
    micro = precision_recall_fscore_support(labels, predicted, average="micro", zero_division=0)[2]
    macro = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)[2]
    assert (found["f1_micro"], found["f1_macro"]) == pytest.approx((micro, macro))
    # The mean average precision leaves out the label without positive images.
    assert found["per_label"][3]["average_precision"] is None
    assert found["mean_average_precision"] == pytest.approx(
        np.mean([average_precision_score(labels[:, j], probabilities[:, j]) for j in range(3)])
    )


def test_bad_shapes_and_thresholds_are_refused():
    with pytest.raises(ValueError, match=r"of one shape \(images, labels\)"):
        metrics.label_scores(PROBABILITIES, LABELS[:, 0])
    with pytest.raises(ValueError, match="thresholds must be 2 numbers in"):
        metrics.label_scores(PROBABILITIES, LABELS, [0.5])


def test_most_missed_and_added_count_each_label():
    labels = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 1]])
    found = metrics.most_missed_and_added(labels, predicted, ["blue", "green", "red"])
    assert found == {
        "most_missed": [{"label": "red", "count": 2}, {"label": "blue", "count": 1}],
        "most_added": [{"label": "green", "count": 2}],
    }
    first = metrics.most_missed_and_added(labels, predicted, ["blue", "green", "red"], most=1)
    assert first["most_missed"] == [{"label": "red", "count": 2}]


def test_image_losses_are_keras_binary_cross_entropy():
    rng = np.random.default_rng(2)
    probabilities = rng.uniform(size=(6, 3)).astype("float32")
    probabilities[0, 0] = 0.0  # clipped, as Keras clips
    labels = (rng.uniform(size=(6, 3)) < 0.5).astype("float32")
    loss = keras.losses.BinaryCrossentropy(reduction=None)
    expected = np.asarray(loss(labels, probabilities))
    np.testing.assert_allclose(metrics.image_losses(probabilities, labels), expected, rtol=1e-5)
