"""Label sets: a CSV cell's labels, multi-hot rows, and the split that holds out part of every label."""

import numpy as np
import pytest

from tfresnet.data.label_sets import iterative_split, multi_hot, read_label_sets, split_labels


def test_split_labels_keeps_order_and_drops_blanks_and_repeats():
    assert split_labels(" road;clear ; ;road", ";") == ["road", "clear"]
    assert split_labels("") == []


def test_multi_hot_marks_each_images_labels():
    rows = multi_hot([["c", "a"], [], ["b"]], ["a", "b", "c"])
    np.testing.assert_array_equal(rows, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert rows.dtype == np.float32


def _random_label_sets(seed: int, count: int = 300, labels: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frequency = np.linspace(0.05, 0.6, labels)  # rare and common labels
    return (rng.uniform(size=(count, labels)) < frequency).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iterative_split_holds_out_about_the_fraction_of_every_label(seed):
    labels = _random_label_sets(seed)
    train, validation = iterative_split(labels, 0.2, seed=seed)
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(len(labels)))
    held = labels[validation].sum(axis=0) / labels.sum(axis=0)
    np.testing.assert_allclose(held, 0.2, atol=0.05)
    assert abs(len(validation) / len(labels) - 0.2) < 0.03
    unlabelled = np.flatnonzero(labels.sum(axis=1) == 0)
    assert 0 < np.isin(unlabelled, validation).sum() < len(unlabelled)  # images without labels on both sides


def test_iterative_split_is_stratified_where_a_random_split_is_not():
    labels = _random_label_sets(3)
    _, validation = iterative_split(labels, 0.2, seed=0)
    stratified = np.abs(labels[validation].sum(axis=0) / labels.sum(axis=0) - 0.2).max()
    rng = np.random.default_rng(0)
    random = [
        np.abs(labels[rng.permutation(len(labels))[:60]].sum(axis=0) / labels.sum(axis=0) - 0.2).max()
        for _ in range(20)
    ]
    assert stratified < np.median(random)


def test_iterative_split_repeats_with_a_seed_and_keeps_a_training_image_of_each_label():
    labels = np.array([[1, 0], [0, 1], [0, 1], [0, 1], [1, 1]], dtype=np.float32)
    first = iterative_split(labels, 0.5, seed=4)
    np.testing.assert_array_equal(first[0], iterative_split(labels, 0.5, seed=4)[0])
    assert labels[first[0]].any(axis=0).all()


def test_iterative_split_that_holds_out_nothing_says_so():
    with pytest.raises(ValueError, match="holds out no image"):
        iterative_split(np.array([[1, 0], [0, 1]]), 0.1, seed=0)


def test_read_label_sets_reads_each_cell():
    assert read_label_sets(["a|b", "", "b"], "|", "'x.csv'", "tags") == [["a", "b"], [], ["b"]]


@pytest.mark.parametrize(
    ("cells", "delimiter", "message"),
    [
        (["", " ", ""], " ", "is empty on every line"),
        (["a", "b", ""], " ", "Drop multi_label"),
        (["a;b", "b"], " ", "pass label_delimiter=';'"),
        (["a b"], "", "must not be empty"),
    ],
)
def test_read_label_sets_says_what_is_wrong_in_one_line(cells, delimiter, message):
    with pytest.raises(ValueError, match=message) as error:
        read_label_sets(cells, delimiter, "'x.csv'", "tags")
    assert "\n" not in str(error.value)
