"""Tests of tfresnet.data.arrays: every array layout becomes RGB batches, checked arguments."""

import numpy as np
import pytest
from conftest import take_all

from tfresnet.data import from_arrays

SIZE = 32


def solid_images(layout: str, count: int = 6, side: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of one colour each in `layout`, and the RGB colour each must become."""
    rgb = np.array([[10 + 30 * i, 200 - 25 * i, 7 * i] for i in range(count)], np.float64)
    if layout.startswith("gray"):
        rgb = np.repeat(rgb[:, :1], 3, axis=1)
    pixels = {
        "gray (N, H, W)": rgb[:, 0, None, None],
        "gray (N, H, W, 1)": rgb[:, None, None, :1],
        "RGB uint8": rgb[:, None, None, :],
        "RGBA uint8": np.concatenate([rgb, np.full((count, 1), 99)], axis=1)[:, None, None, :],
        "RGB float32": rgb[:, None, None, :],
    }[layout]
    shape = pixels.shape[:1] + (side, side) + pixels.shape[3:]
    dtype = np.float32 if "float" in layout else np.uint8
    return np.broadcast_to(pixels, shape).astype(dtype), rgb


@pytest.mark.parametrize(
    "layout", ["gray (N, H, W)", "gray (N, H, W, 1)", "RGB uint8", "RGBA uint8", "RGB float32"]
)
def test_every_array_layout_becomes_rgb_in_source_order(layout):
    images, rgb = solid_images(layout)
    labels = np.arange(6) % 2

    data = from_arrays(images, labels, image_size=SIZE, batch_size=4, val_split=0, seed=0)
    batches, batch_labels = take_all(data.train_evaluation)

    assert data.class_names == ["0", "1"] and (data.num_train, data.num_validation) == (6, 0)
    assert batches.shape == (6, SIZE, SIZE, 3)
    np.testing.assert_allclose(batches, np.broadcast_to(rgb[:, None, None, :], batches.shape), atol=1e-3)
    assert batch_labels.tolist() == labels.tolist()
    assert sorted(take_all(data.train)[0][:, 0, 0, 0].round().tolist()) == sorted(rgb[:, 0].tolist())


def test_validation_arrays_are_used_as_given_in_order():
    images, rgb = solid_images("RGB uint8")
    labels = np.array([0, 1, 2, 0, 1, 2])

    data = from_arrays(
        images[:4],
        labels[:4],
        validation=(images[4:], labels[4:]),
        class_names=["a", "b", "c"],
        image_size=SIZE,
    )
    val_images, val_labels = take_all(data.validation)

    assert data.class_names == ["a", "b", "c"] and data.class_counts == [2, 1, 1]
    assert (data.num_train, data.num_validation) == (4, 2)
    np.testing.assert_allclose(val_images[:, 0, 0], rgb[4:], atol=1e-3)
    assert val_labels.tolist() == [1, 2]


def test_split_holds_out_a_stratified_share():
    images = np.zeros((20, 8, 8, 3), np.uint8)

    data = from_arrays(images, np.arange(20) % 2, image_size=8, val_split=0.2, seed=0)

    assert (data.num_train, data.num_validation, data.class_counts) == (16, 4, [8, 8])
    assert np.bincount(take_all(data.validation)[1]).tolist() == [2, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": np.array([0, 1, 2, 5])}, r"\[0, 3\).*labels\[3\]=5"),
        ({"labels": np.array([0, 1, -1, 1])}, r"labels\[2\]=-1"),
        ({"labels": np.array([0, 0, 0, 0]), "class_names": None}, "single class"),
        ({"labels": np.array([0.0, 1.0, 2.0, 1.0])}, "integer class indices.*dtype=float64"),
        ({"labels": np.array([0, 1, 2])}, r"4 integer class indices.*shape=\(3,\)"),
        ({"images": np.full((4, 8, 8, 3), 0.5)}, "Multiply them by 255"),
        ({"images": np.full((4, 8, 8, 3), 300.0)}, r"\[0, 255\]. Received: values in \[300, 300\]"),
        ({"images": np.zeros((4, 8, 8, 2), np.uint8)}, r"Received: shape=\(4, 8, 8, 2\)"),
        ({"images": np.zeros((0, 8, 8, 3), np.uint8)}, r"non-empty.*Received: shape=\(0, 8, 8, 3\)"),
        ({"validation": (np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 3]))}, r"validation\[1\]\[1\]=3"),
    ],
)
def test_argument_errors_say_what_was_received(kwargs, match):
    arguments = {
        "images": np.zeros((4, 8, 8, 3), np.uint8),
        "labels": np.array([0, 1, 2, 1]),
        "class_names": ["a", "b", "c"],
    }
    arguments.update(kwargs)

    with pytest.raises(ValueError, match=match):
        from_arrays(arguments.pop("images"), arguments.pop("labels"), image_size=8, **arguments)


# === Multi-label ===


def test_multi_hot_rows_train_as_they_are_and_are_split_per_label():
    from conftest import make_multi_label_arrays

    images, labels = make_multi_label_arrays()
    data = from_arrays(
        images, labels, image_size=SIZE, batch_size=8, val_split=0.25, seed=0, multi_label=True
    )
    assert data.multi_label and data.class_names == ["0", "1", "2"]
    train = take_all(data.train_evaluation)[1]
    validation = take_all(data.validation)[1]
    assert train.shape[1] == 3 and train.dtype == np.float32
    np.testing.assert_array_equal(data.class_counts, train.sum(axis=0))
    np.testing.assert_allclose(validation.sum(axis=0) / labels.sum(axis=0), 0.25, atol=0.1)


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (np.array([[0, 2], [1, 0]]), {"multi_label": True}, "rows of 0 and 1"),
        (np.zeros((2, 2)), {"multi_label": True}, "hold no label at all"),
        (np.array([[0, 1], [1, 0]]), {}, "need multi_label=True"),
        (np.array([[0, 1], [1, 1]]), {"multi_label": True, "class_names": ["a", "b", "c"]}, "3 class names"),
    ],
)
def test_bad_multi_hot_labels_are_refused_in_one_line(labels, options, message):
    images = np.full((2, SIZE, SIZE, 3), 200, np.float32)
    with pytest.raises(ValueError, match=message) as error:
        from_arrays(images, labels, image_size=SIZE, val_split=0, **options)
    assert "\n" not in str(error.value)
