"""tfresnet.insight.batch_grid: `show_batch`'s PNG grid of the first batch, titled with its labels."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfresnet
from tfresnet.insight import batch_grid
from tfresnet.insight.batch_grid import label_title
from tfresnet.paths import join, read_bytes

CLASS_NAMES = ["cat", "dog", "fox"]
# Each image one pure colour, its label's: cat red, dog green, fox blue.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], "float32")


def _dataset(labels, count: int = 6, batch_size: int = 4) -> tf.data.Dataset:
    """`count` 32 px images coloured cat, dog, fox, cat, ..., one pixel out of [0, 255]."""
    classes = np.arange(count) % 3
    images = np.broadcast_to(COLOURS[classes][:, None, None], (count, 32, 32, 3)).copy()
    images[:, 0, 0] = [300, -20, 255]  # clipped when shown
    return tf.data.Dataset.from_tensor_slices((images, np.asarray(labels)[:count])).batch(batch_size)


def _titles(monkeypatch) -> list[str]:
    """The titles the grid is drawn with, recorded."""
    titles = []

    def recording(label, class_names):
        titles.append(label_title(label, class_names))
        return titles[-1]

    monkeypatch.setattr(batch_grid, "label_title", recording)
    return titles


def _pixels(path) -> np.ndarray:
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        return np.asarray(picture.convert("RGB"))


def _count(pixels: np.ndarray, colour) -> int:
    return int((pixels == np.asarray(colour, "uint8")).all(axis=-1).sum())


def test_label_titles():
    assert label_title(1, CLASS_NAMES) == "dog"
    assert label_title(np.int64(2), CLASS_NAMES) == "fox"
    assert label_title(np.array([2]), CLASS_NAMES) == "fox"
    assert label_title(np.array([0.0, 0.0, 1.0], "float32"), CLASS_NAMES) == "fox"
    assert label_title(np.array([0.7, 0.3, 0.0]), CLASS_NAMES) == "cat 0.70 / dog 0.30"
    assert label_title(np.array([0.25, 0.15, 0.6]), CLASS_NAMES) == "fox 0.60 / cat 0.25"
    with pytest.raises(ValueError, match="Received: label=3"):
        label_title(3, CLASS_NAMES)
    with pytest.raises(ValueError, match=r"Received: label of shape \(2,\)"):
        label_title(np.array([0.5, 0.5]), CLASS_NAMES)


def test_int_labels_draw_the_first_batch_titled_with_class_names(tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    path = str(tmp_path / "grid" / "batch.png")
    assert tfresnet.show_batch(_dataset(np.arange(6) % 3), CLASS_NAMES, path) == path
    assert titles == ["cat", "dog", "fox", "cat"]  # the first batch of 4, in a 2 x 2 grid
    pixels = _pixels(path)
    assert pixels.shape == (500, 440, 3)  # 2 x 2 cells of 2.2 x 2.5 inches at 100 dpi
    for colour in COLOURS:  # each image is drawn, not blank
        assert _count(pixels, colour) > 1000


def test_the_grid_goes_to_a_store_as_it_goes_to_a_folder(tmp_path, ram_dir):
    """A path on TensorFlow's in-memory file system (through tf.io.gfile), its folder made."""
    path = join(ram_dir, "grid", "batch.png")
    assert tfresnet.show_batch(_dataset(np.arange(6) % 3), CLASS_NAMES, path) == path
    local = tfresnet.show_batch(_dataset(np.arange(6) % 3), CLASS_NAMES, str(tmp_path / "batch.png"))
    np.testing.assert_array_equal(_pixels(io.BytesIO(read_bytes(path))), _pixels(local))


def test_soft_and_one_hot_labels_and_max_images(tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    soft = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.1, 0.2, 0.7], [0.5, 0.0, 0.5]], "float32")
    path = tfresnet.show_batch(_dataset(soft, count=4), CLASS_NAMES, str(tmp_path / "soft.png"), max_images=3)
    assert titles == ["cat 0.70 / dog 0.30", "dog", "fox 0.70 / dog 0.20"]
    pixels = _pixels(path)
    assert pixels.shape == (500, 440, 3)  # 3 images: 2 x 2 cells, one empty
    assert _count(pixels, COLOURS[2]) > 1000


def test_an_unbatched_dataset_is_batched_and_an_empty_one_refused(tmp_path, monkeypatch):
    titles = _titles(monkeypatch)
    path = str(tmp_path / "batch.png")
    tfresnet.show_batch(_dataset(np.arange(9) % 3, count=9).unbatch(), CLASS_NAMES, path, max_images=9)
    assert titles == ["cat", "dog", "fox"] * 3 and _pixels(path).shape == (750, 660, 3)
    with pytest.raises(ValueError, match="empty"):
        tfresnet.show_batch(_dataset(np.arange(3), count=0), CLASS_NAMES, path)
    with pytest.raises(ValueError, match="Received: max_images=0"):
        tfresnet.show_batch(_dataset(np.arange(3), count=3), CLASS_NAMES, path, max_images=0)


# === Several labels per image ===


def test_label_set_titles():
    assert batch_grid.label_set_title(np.array([1.0, 0.0, 1.0]), CLASS_NAMES) == "cat, fox"
    assert batch_grid.label_set_title(np.zeros(3, "float32"), CLASS_NAMES) == "no label"
    # Mixed rows: the labels weighing at least 0.5, heaviest first; else the two heaviest.
    assert batch_grid.label_set_title(np.array([0.7, 0.3, 0.6]), CLASS_NAMES) == "cat 0.70, fox 0.60"
    assert batch_grid.label_set_title(np.array([0.2, 0.4, 0.0]), CLASS_NAMES) == "dog 0.40, cat 0.20"
    names = [f"label{i}" for i in range(7)]
    three_a_line = "label0, label1, label2,\nlabel3, label4, label5,\nlabel6"
    assert batch_grid.label_set_title(np.ones(7), names) == three_a_line
    with pytest.raises(ValueError, match=r"one weight per label \(3\). Received: label of shape \(\)"):
        batch_grid.label_set_title(np.int64(2), CLASS_NAMES)


def _set_titles(monkeypatch) -> list[str]:
    """The titles the grid of multi-label rows is drawn with, recorded."""
    titles, original = [], batch_grid.label_set_title

    def recording(label, class_names):
        titles.append(original(label, class_names))
        return titles[-1]

    monkeypatch.setattr(batch_grid, "label_set_title", recording)
    return titles


def test_multi_hot_labels_draw_titled_with_their_label_sets(tmp_path, monkeypatch):
    titles = _set_titles(monkeypatch)
    rows = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]], "float32")
    path = str(tmp_path / "multi.png")
    assert tfresnet.show_batch(_dataset(rows, count=4), CLASS_NAMES, path, multi_label=True) == path
    assert titles == ["cat, fox", "no label", "dog", "cat, dog, fox"]
    pixels = _pixels(path)
    assert pixels.shape == (500, 440, 3)
    for colour in COLOURS:
        assert _count(pixels, colour) > 1000


def test_the_batch_of_multi_label_data(multi_label_data, tmp_path, monkeypatch):
    titles = _set_titles(monkeypatch)
    path = str(tmp_path / "batch.png")
    tfresnet.show_batch(multi_label_data.validation, multi_label_data.class_names, path, multi_label=True)
    _, labels = next(iter(multi_label_data.validation))
    names = multi_label_data.class_names
    expected = [", ".join(names[j] for j in np.flatnonzero(row)) or "no label" for row in labels.numpy()]
    assert titles == expected and len(titles) == 8
    assert _pixels(path).shape == (750, 660, 3)  # 8 images: 3 x 3 cells
