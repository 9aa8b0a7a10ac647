"""Tests of the example folder: tfresnet.data.examples and its command `python -m tfresnet.examples`."""

import os

import pytest
from PIL import Image

from tfresnet import examples
from tfresnet.data.examples import CLASS_COLORS, FILE_VARIANTS, write_shapes_folder


def test_the_folder_holds_the_classes_and_images_asked_each_readable_at_the_size_asked(tmp_path):
    names = write_shapes_folder(str(tmp_path), num_classes=4, images_per_class=3, size=48)
    assert names == sorted(list(CLASS_COLORS)[:4]) == sorted(os.listdir(tmp_path))
    for name in names:
        files = sorted(os.listdir(tmp_path / name))
        assert files == ["000.jpg", "001.jpg", "002.jpg"]
        for file in files:
            with Image.open(tmp_path / name / file) as image:
                image.load()
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 48))


def test_mixed_formats_write_every_format_and_colour_mode(tmp_path):
    count = len(FILE_VARIANTS)
    write_shapes_folder(str(tmp_path), num_classes=2, images_per_class=count, size=32, mixed_formats=True)
    for index, (mode, file_format, extension) in enumerate(FILE_VARIANTS):
        with Image.open(tmp_path / "red" / f"{index:03d}{extension}") as image:
            image.load()
            assert (image.format, image.mode, image.size) == (file_format, mode, (32, 32))


def test_a_class_count_out_of_range_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"num_classes must be in \[2, 6\]. Received: num_classes=7"):
        write_shapes_folder(str(tmp_path / "shapes"), num_classes=7)
    assert not (tmp_path / "shapes").exists()


def test_the_command_writes_the_folder_and_says_so(tmp_path, capsys):
    folder = str(tmp_path / "shapes")
    assert examples.main([folder, "--classes", "2", "--images-per-class", "2", "--size", "32"]) == 0
    assert capsys.readouterr().out == f"wrote 2 classes (green, red) to {folder}\n"
    assert sorted(os.listdir(folder)) == ["green", "red"]
    assert sorted(os.listdir(os.path.join(folder, "red"))) == ["000.jpg", "001.jpg"]
    with pytest.raises(SystemExit) as exit_info:
        examples.main([str(tmp_path / "other"), "--classes", "1"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("python -m tfresnet.examples: error: num_classes must be in [2, 6]")


def test_the_multi_label_set_draws_each_images_labels_where_its_csv_says(tmp_path):
    import csv

    import numpy as np

    from tfresnet.data.examples import LABEL_FREQUENCIES, write_multi_label_set

    sets = write_multi_label_set(str(tmp_path), num_labels=4, images=200, size=48, seed=1)
    with open(tmp_path / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["label"].split() for row in rows] == sets
    names = list(CLASS_COLORS)[:4]
    frequency = np.array([[name in labels for name in names] for labels in sets]).mean(axis=0)
    np.testing.assert_allclose(frequency, LABEL_FREQUENCIES[:4], atol=0.08)
    assert any(not labels for labels in sets) and any(len(labels) >= 3 for labels in sets)
    for row, labels in zip(rows[:20], sets):
        pixels = np.asarray(Image.open(tmp_path / row["path"]).convert("RGB"), dtype=int)
        for name in names:  # a label's colour is on its images only (JPEG keeps it within 60)
            near = (np.abs(pixels - CLASS_COLORS[name]).max(axis=-1) < 60).sum()
            assert (near > 20) == (name in labels), (row, name, near)


def test_the_command_writes_a_multi_label_set(tmp_path, capsys):
    assert (
        examples.main(
            [str(tmp_path), "--multi-label", "--classes", "3", "--images-per-class", "4", "--size", "32"]
        )
        == 0
    )
    assert "12 images with 3 labels" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "images")) == 12


def test_the_command_writes_both_sets_on_a_store_where_the_loaders_read_them(ram_dir, capsys):
    from tfresnet import paths
    from tfresnet.data import from_csv, from_folder

    folder, tags = paths.join(ram_dir, "shapes"), paths.join(ram_dir, "tags")
    assert examples.main([folder, "--classes", "2", "--images-per-class", "4", "--size", "32"]) == 0
    assert (
        examples.main([tags, "--multi-label", "--classes", "3", "--images-per-class", "4", "--size", "32"])
        == 0
    )

    assert capsys.readouterr().out.startswith(f"wrote 2 classes (green, red) to {folder}\n")
    assert paths.listdir(paths.join(folder, "red")) == ["000.jpg", "001.jpg", "002.jpg", "003.jpg"]
    data = from_folder(folder, image_size=32, val_split=0, seed=0)
    assert (data.class_names, data.num_train, data.skipped) == (["green", "red"], 8, {})
    labelled = from_csv(paths.join(tags, "labels.csv"), multi_label=True, image_size=32, val_split=0)
    assert labelled.num_train == 12 and labelled.skipped == {}
