"""tfresnet.insight.multi_label_check: the images per label, the pairs found together, the
images without labels, and their lines in the terminal summary (a CSV's whole check:
test_dataset_check.py)."""

import numpy as np

from tfresnet.insight import multi_label_check

NAMES = ["a", "b", "c", "d"]
LABELS = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
PATHS = [f"images/{i}.png" for i in range(len(LABELS))]


def test_labels_pairs_and_unlabelled_images_are_counted():
    found = multi_label_check.label_set_findings(NAMES, LABELS, PATHS, pairs=2, examples=1)
    assert found["multi_label"] is True
    assert found["label_counts"] == {"a": 3, "b": 3, "c": 2, "d": 0}
    assert found["imbalance_ratio"] is None  # d has no image
    # a + b and b + c twice each (ties: label order), a + c once: left out of the first two.
    assert found["label_pairs"] == [{"labels": ["a", "b"], "count": 2}, {"labels": ["b", "c"], "count": 2}]
    assert found["unlabelled"] == {"count": 2, "examples": ["images/2.png"]}
    assert "single-label check" in found["not_checked"]["conflicting_labels"]
    everything = multi_label_check.label_set_findings(NAMES[:3], LABELS[:, :3], PATHS)
    assert everything["imbalance_ratio"] == 1.5
    assert [pair["count"] for pair in everything["label_pairs"]] == [2, 2, 1]  # pairs never together left out
    assert everything["unlabelled"]["examples"] == ["images/2.png", "images/4.png"]


def test_no_image_without_labels_and_no_pair():
    found = multi_label_check.label_set_findings(["a", "b"], np.eye(2), ["x", "y"])
    assert found["label_pairs"] == [] and found["unlabelled"] == {"count": 0, "examples": []}


def test_summary_rows_name_the_most_frequent_labels_first():
    names = [f"label{i:02d}" for i in range(10)]
    labels = np.zeros((12, 10))
    for i in range(10):
        labels[: i + 1, i] = 1  # label i on i + 1 images
    found = multi_label_check.label_set_findings(names, labels, [str(i) for i in range(12)])
    rows = dict(multi_label_check.summary_rows({**found, "num_images": 12}))
    assert rows["images"] == "12 with 10 labels (most / least frequent: 10.0)"
    assert rows["labels"] == (
        "label09 10, label08 9, label07 8, label06 7, label05 6, label04 5, label03 4, label02 3, "
        "... (2 more)"
    )
    assert rows["label pairs"] == "label08 + label09 9, label07 + label08 8, label07 + label09 8"
    assert rows["unlabelled"] == "2 images"
    alone = multi_label_check.label_set_findings(["a", "b"], np.eye(2), ["x", "y"])
    assert dict(multi_label_check.summary_rows({**alone, "num_images": 2}))["label pairs"] == (
        "none (no image has two labels)"
    )
