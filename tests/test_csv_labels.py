"""Tests of tfresnet.data.csv_labels: labels and splits read from a CSV file, paths resolved,
bad input refused in one sentence, unusable files skipped, and batches equal to from_folder's."""

import csv
import os
import re

import numpy as np
import pytest
from conftest import copy_to_ram, take_all, write_bad_files, write_image_folder, write_labels_csv
from PIL import Image

from tfresnet import paths
from tfresnet.data import from_csv, from_folder

SIZE = 32
# Each file is one solid colour: the red channel tells its class, the green one the file.
CLASS_RED = {"bird": 40, "cat": 120, "dog": 200}


def solid(path: str, red: int, green: int) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), (red, green, 0), np.uint8)).save(path)
    return path


def write_csv(path, rows, header=("path", "label")) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def solid_files(folder, labels, start: int = 0) -> list[tuple[str, str]]:
    """Writes `folder/NN.png` for each label (red: the class, green: 10 * NN); returns
    `(file name, label)` pairs."""
    rows = []
    for number, label in enumerate(labels, start):
        name = f"{number:02d}.png"
        solid(os.path.join(folder, name), CLASS_RED[label], 10 * number)
        rows.append((name, label))
    return rows


def read_files(dataset) -> list[tuple[int, int]]:
    """`(file number, label)` of each image, read from its colour, after checking that the
    colour is solid and its red channel is its label's class."""
    images, labels = take_all(dataset)
    found = []
    for image, label in zip(images, labels):
        assert (image == image[0, 0]).all()
        red, green, _ = image[0, 0]
        assert red == CLASS_RED[sorted(CLASS_RED)[label]]
        found.append((int(green) // 10, int(label)))
    return sorted(found)


LABELS = ["dog", "cat", "bird", "cat", "dog", "cat", "bird", "dog", "cat", "bird"]


@pytest.fixture
def labelled(tmp_path) -> str:
    """A CSV of 10 solid images (3 birds, 4 cats, 3 dogs) in its own folder."""
    rows = solid_files(tmp_path / "photos", LABELS)
    return write_csv(tmp_path / "photos" / "labels.csv", rows)


# === Labels and split ===


def test_class_names_counts_and_labels_follow_the_csv(labelled):
    data = from_csv(labelled, image_size=SIZE, batch_size=4, val_split=0.3, augmentation="none", seed=0)

    assert data.class_names == ["bird", "cat", "dog"]
    assert (data.num_train, data.num_validation) == (7, 3)
    assert data.class_counts == [2, 3, 2]  # one of each class held out
    every = [(number, sorted(CLASS_RED).index(label)) for number, label in enumerate(LABELS)]
    train, validation = read_files(data.train_evaluation), read_files(data.validation)
    assert sorted(train + validation) == every
    assert read_files(data.train) == train
    assert sorted(label for _, label in validation) == [0, 1, 2]
    images, _ = next(iter(data.train))
    assert images.shape == (4, SIZE, SIZE, 3)


def test_labels_are_class_names_sorted_as_strings(tmp_path):
    rows = [
        (name, label) for (name, _), label in zip(solid_files(tmp_path, LABELS[:6]), [10, 9, 2, 10, 9, 2])
    ]
    data = from_csv(write_csv(tmp_path / "labels.csv", rows), image_size=SIZE, val_split=0, seed=0)
    assert data.class_names == ["10", "2", "9"]
    assert data.class_counts == [2, 2, 2] and data.validation is None
    assert take_all(data.train_evaluation)[1].tolist() == [0, 2, 1, 0, 2, 1]


def test_the_split_column_decides_the_split_whatever_its_case(tmp_path):
    rows = solid_files(tmp_path, LABELS)
    splits = ["train", "Train", "VAL", "train", "valid", "validation", "train", "train", "TRAIN", "train"]
    path = write_csv(
        tmp_path / "labels.csv",
        [(*row, split) for row, split in zip(rows, splits)],
        ("path", "label", "split"),
    )

    data = from_csv(path, image_size=SIZE, val_split=0.5, augmentation="none", seed=3)

    assert [number for number, _ in read_files(data.validation)] == [2, 4, 5]
    assert [number for number, _ in read_files(data.train_evaluation)] == [0, 1, 3, 6, 7, 8, 9]
    assert data.class_counts == [2, 3, 2]


def test_a_split_column_without_validation_rows_means_no_validation_set(tmp_path):
    rows = [(*row, "train") for row in solid_files(tmp_path, LABELS)]
    data = from_csv(write_csv(tmp_path / "labels.csv", rows, ("path", "label", "split")), image_size=SIZE)
    assert data.validation is None and (data.num_train, data.num_validation) == (10, 0)


def test_paths_start_from_image_dir_else_the_csv_folder_and_absolute_paths_stay(tmp_path):
    rows = solid_files(tmp_path / "images" / "set", LABELS[:6])
    relative = [(os.path.join("set", name), label) for name, label in rows]
    absolute = solid_files(tmp_path / "elsewhere", ["bird", "dog"], start=6)
    absolute = [(str(tmp_path / "elsewhere" / name), label) for name, label in absolute]
    in_meta = write_csv(tmp_path / "meta" / "labels.csv", relative + absolute)
    beside = write_csv(tmp_path / "images" / "labels.csv", relative + absolute)

    for data in (
        from_csv(in_meta, image_dir=tmp_path / "images", image_size=SIZE, val_split=0),
        from_csv(beside, image_size=SIZE, val_split=0),
    ):
        assert data.skipped == {}
        assert [number for number, _ in read_files(data.train_evaluation)] == list(range(8))
    missing = re.escape(os.path.join(str(tmp_path), "meta", "set", "00.png"))
    with (
        pytest.warns(UserWarning, match=f"Skipped 6 files.*{missing}"),
        pytest.raises(ValueError, match="'cat'"),
    ):
        from_csv(in_meta, image_size=SIZE, val_split=0)  # without image_dir: from meta/


def test_a_utf8_bom_spaces_and_blank_lines_are_fine(tmp_path):
    rows = solid_files(tmp_path, LABELS[:4])
    text = "\ufeffpath , label\n\n" + "".join(f" {name} ,{label} \n" for name, label in rows) + "\n\n"
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    data = from_csv(tmp_path / "labels.csv", image_size=SIZE, val_split=0)
    assert data.class_names == ["bird", "cat", "dog"] and data.num_train == 4


# === Bad input ===


@pytest.mark.parametrize(
    "text, kwargs, expected",
    [
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("path,label\n", {}, "has a header but no image lines"),
        (
            "path,class\n00.png,cat\n",
            {},
            re.escape(
                "has no column 'label'; its columns are: path, class. Pass label_column=... (--label-column)."
            ),
        ),
        (
            "file,label\n00.png,cat\n",
            {},
            re.escape(
                "has no column 'path'; its columns are: file, label. Pass path_column=... (--path-column)."
            ),
        ),
        ("00.png,cat\n01.png,dog\n", {}, "start the file with a header line such as 'path,label'"),
        ("f,c\n00.png,cat\n01.png,dog\n", {"path_column": "f", "label_column": "class"}, "no column 'class'"),
        ("path,label\n00.png,cat\n01.png, \n", {}, "Line 3 of '.*' has an empty 'label'"),
        ("path,label\n00.png,cat\n\n,dog\n", {}, "Line 4 of '.*' has an empty 'path'"),
        ("path,label\n00.png,cat\n01.png,dog,x\n", {}, "Line 3 of '.*' has 3 values, the header 2"),
        (
            "path,label,split\n00.png,cat,train\n01.png,dog,test\n",
            {},
            "Line 3 of '.*' has split 'test'; the column takes train, validation, valid, val",
        ),
        ("path,label\n00.png,cat\n01.png,cat\n", {}, "Found a single class, 'cat'"),
        (
            "path,label,split\n00.png,cat,train\n01.png,dog,val\n",
            {},
            "Class 'dog' has no readable training image",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "header-only",
        "no-label-column",
        "no-path-column",
        "no-header",
        "renamed-columns",
        "empty-label",
        "empty-path",
        "extra-value",
        "unknown-split",
        "single-class",
        "class-only-in-validation",
    ],
)
def test_bad_csv_raises_one_sentence(tmp_path, text, kwargs, expected):
    solid_files(tmp_path, ["cat", "dog"])
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=expected) as raised:
        from_csv(tmp_path / "labels.csv", image_size=SIZE, **kwargs)
    assert "\n" not in str(raised.value)


def test_a_missing_csv_or_image_dir_is_named(tmp_path, labelled):
    with pytest.raises(FileNotFoundError, match="CSV file not found: '.*nothing.csv'"):
        from_csv(tmp_path / "nothing.csv")
    with pytest.raises(FileNotFoundError, match="Image folder not found: '.*nowhere'.*--image-dir"):
        from_csv(labelled, image_dir=tmp_path / "nowhere")


def test_bad_loader_arguments_are_refused_as_from_folder_refuses_them(labelled):
    for kwargs, name in (({"val_split": 1.0}, "val_split"), ({"augmentation": "wild"}, "augmentation")):
        with pytest.raises(ValueError, match=name):
            from_csv(labelled, **kwargs)


# === Files that cannot be used ===


def test_missing_and_corrupt_files_are_skipped_and_reported_as_from_folder_does(tmp_path, labelled):
    folder = os.path.dirname(labelled)
    bad = write_bad_files(folder)
    rows = [(name, label) for name, label in zip(sorted(os.listdir(folder)), LABELS) if name.endswith(".png")]
    rows += [(os.path.basename(path), "cat") for path in bad] + [("gone.png", "dog")]
    path = write_csv(os.path.join(folder, "with_bad.csv"), rows)

    with pytest.warns(
        UserWarning, match=f"Skipped 4 files in '{path}' that are not readable images"
    ) as caught:
        data = from_csv(path, image_size=SIZE, val_split=0, augmentation="none", seed=0)

    assert len(caught) == 1 and caught[0].filename == __file__  # points at the caller
    missing = os.path.join(folder, "gone.png")
    assert sorted(data.skipped) == sorted([*bad, missing])
    assert data.skipped[missing] == "unreadable: No such file or directory"
    assert data.skipped[bad[0]] == "empty file" and data.skipped[bad[1]].startswith("truncated: ")
    assert data.num_train == 10 and len(read_files(data.train)) == 10
    with pytest.raises(ValueError, match="4 files in .* are not readable images.*gone.png.*strict=False"):
        from_csv(path, strict=True)


def test_every_file_missing_or_a_class_without_readable_files_is_refused(tmp_path, labelled):
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="None of the 10 images .* is readable.*--image-dir"),
    ):
        from_csv(labelled, image_dir=tmp_path)
    rows = solid_files(tmp_path / "photos", ["cat", "dog"]) + [("gone.png", "bird")]
    path = write_csv(tmp_path / "photos" / "birds_gone.csv", rows)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="Class 'bird' has no readable image"):
        from_csv(path)


# === The same pipeline as from_folder ===


@pytest.mark.parametrize("augmentation", ["none", "standard"])
def test_batches_equal_from_folders_on_the_same_files(tmp_path, augmentation):
    root = str(tmp_path / "images")
    write_image_folder(root, images_per_class=6, size=40)
    rows = [
        (os.path.join(name, file), name)
        for name in sorted(os.listdir(root))
        for file in sorted(os.listdir(os.path.join(root, name)))
    ]
    path = write_csv(tmp_path / "labels.csv", rows)
    kwargs = dict(image_size=SIZE, batch_size=5, val_split=0.3, augmentation=augmentation, seed=7)

    folder, listed = from_folder(root, **kwargs), from_csv(path, image_dir=root, **kwargs)

    assert listed.class_names == folder.class_names == ["blue", "green", "red"]
    assert listed.class_counts == folder.class_counts
    assert (listed.num_train, listed.num_validation) == (folder.num_train, folder.num_validation) == (12, 6)
    for name in ("train", "validation", "train_evaluation"):
        expected, received = take_all(getattr(folder, name)), take_all(getattr(listed, name))
        np.testing.assert_array_equal(received[0], expected[0], err_msg=name)
        np.testing.assert_array_equal(received[1], expected[1], err_msg=name)


def test_a_file_cache_is_written_and_named_after_the_labels(tmp_path, labelled):
    cache = tmp_path / "cache"
    first = from_csv(labelled, image_size=SIZE, val_split=0, augmentation="none", cache=cache, seed=0)
    read_files(first.train_evaluation)
    relabelled = [
        (f"{number:02d}.png", "cat" if label == "dog" else label) for number, label in enumerate(LABELS)
    ]
    path = write_csv(tmp_path / "photos" / "relabelled.csv", relabelled)  # the same files
    second = from_csv(path, image_size=SIZE, val_split=0, augmentation="none", cache=cache, seed=0)
    assert take_all(second.train_evaluation)[1].tolist() == [0 if label == "bird" else 1 for label in LABELS]
    assert (
        len({name.split("-")[-1].split(".")[0] for name in os.listdir(cache) if name.endswith(".index")}) == 2
    )


def test_the_skipped_warning_points_at_the_caller_of_either_loader(bad_image_folder, tmp_path):
    folder, _ = bad_image_folder
    rows = [
        (os.path.relpath(os.path.join(root, file), folder), os.path.basename(root))
        for root, _, files in os.walk(folder)
        for file in files
    ]
    path = write_csv(tmp_path / "labels.csv", rows)
    for load in (
        lambda: from_folder(folder, image_size=SIZE),
        lambda: from_csv(path, image_dir=folder, image_size=SIZE),
    ):
        with pytest.warns(UserWarning, match="Skipped 3 files") as caught:
            load()
        assert [warning.filename for warning in caught] == [__file__]


# === Multi-label ===


def _csv_rows(csv_path: str) -> dict[str, set[str]]:
    with open(csv_path, newline="") as file:
        return {row["path"]: set(row["label"].split()) for row in csv.DictReader(file)}


def test_a_multi_label_csv_gives_each_image_its_label_set(multi_label_csv):
    data = from_csv(multi_label_csv, multi_label=True, image_size=SIZE, batch_size=8, val_split=0.25, seed=0)
    given = _csv_rows(multi_label_csv)
    assert data.multi_label and data.class_names == sorted(set().union(*given.values()))
    assert data.num_train + data.num_validation == len(given)
    for part, dataset in (("train", data.train_evaluation), ("validation", data.validation)):
        rows = take_all(dataset)[1]
        for path, row in zip(data.files[part], rows):
            name = os.path.relpath(path, os.path.dirname(multi_label_csv))
            assert {data.class_names[j] for j in np.flatnonzero(row)} == given[name]
    assert any(not labels for labels in given.values())  # images without labels are kept


def test_the_multi_label_split_holds_out_part_of_every_label(multi_label_csv):
    from tfresnet.data.csv_labels import list_csv

    listing = list_csv(multi_label_csv, multi_label=True, val_split=0.25, seed=0)
    held = listing.labels[listing.in_validation].sum(axis=0) / listing.labels.sum(axis=0)
    np.testing.assert_allclose(held, 0.25, atol=0.06)
    assert listing.multi_label and listing.labels.dtype == np.float32


def test_a_multi_label_csv_with_another_delimiter_and_a_split_column(tmp_path):
    for i in range(6):
        solid(str(tmp_path / f"{i}.png"), 40 * i, 0)
    rows = [
        (f"{i}.png", ["cat|dog", "dog", "", "cat", "dog|cat", "cat"][i], ["train", "val"][i % 2])
        for i in range(6)
    ]
    path = write_labels_csv(tmp_path / "tags.csv", rows, header=("path", "label", "split"))
    data = from_csv(path, multi_label=True, label_delimiter="|", image_size=SIZE, batch_size=2)
    assert data.class_names == ["cat", "dog"] and (data.num_train, data.num_validation) == (3, 3)


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (["", "", ""], {}, "is empty on every line"),
        (["cat", "dog", "cat"], {}, "lists two labels separated by ' '"),
        (["cat;dog", "dog", "cat"], {}, "pass label_delimiter=';'"),
    ],
)
def test_bad_multi_label_csvs_say_what_to_do_in_one_line(tmp_path, labels, options, message):
    for i in range(3):
        solid(str(tmp_path / f"{i}.png"), 40 * i, 0)
    path = write_labels_csv(tmp_path / "tags.csv", [(f"{i}.png", label) for i, label in enumerate(labels)])
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        from_csv(path, multi_label=True, image_size=SIZE, **options)
    assert "\n" not in str(error.value)


def test_an_empty_label_is_still_refused_without_multi_label(tmp_path):
    solid(str(tmp_path / "0.png"), 40, 0)
    path = write_labels_csv(tmp_path / "tags.csv", [("0.png", ""), ("0.png", "cat")])
    with pytest.raises(ValueError, match="has an empty 'label'"):
        from_csv(path, image_size=SIZE)


# === A CSV on a store (ram://, TensorFlow's in-memory file system, through tf.io.gfile) ===


def test_a_csv_on_a_store_loads_as_its_local_copy(tmp_path, labelled, ram_dir):
    folder = os.path.dirname(labelled)
    bad = write_bad_files(folder)
    rows = [(name, label) for name, label in zip(sorted(os.listdir(folder)), LABELS) if name.endswith(".png")]
    rows += [(os.path.basename(path), "cat") for path in bad] + [("gone.png", "dog")]
    local_csv = write_csv(os.path.join(folder, "with_bad.csv"), rows)
    ram = copy_to_ram(folder, paths.join(ram_dir, "photos"))
    elsewhere = write_csv(tmp_path / "lists" / "labels.csv", rows)  # beside no image: --image-dir
    ram_csv = copy_to_ram(os.path.dirname(elsewhere), paths.join(ram_dir, "lists"))
    loaded = {}
    for name, csv_path, image_dir in (
        ("local", local_csv, None),
        ("beside", paths.join(ram, "with_bad.csv"), None),
        ("image-dir", paths.join(ram_csv, "labels.csv"), ram),
    ):
        with pytest.warns(UserWarning, match="Skipped 4 files"):
            loaded[name] = from_csv(
                csv_path, image_dir=image_dir, image_size=SIZE, val_split=0.3, augmentation="none", seed=0
            )

    local = loaded.pop("local")
    first = next(iter(local.train))[0]
    for remote in loaded.values():
        np.testing.assert_array_equal(next(iter(remote.train))[0], first)
        assert remote.class_names == local.class_names and remote.class_counts == local.class_counts
        assert (remote.num_train, remote.num_validation) == (local.num_train, local.num_validation)
        assert {os.path.relpath(path, ram): why for path, why in remote.skipped.items()} == {
            os.path.relpath(path, folder): why for path, why in local.skipped.items()
        }
        assert read_files(remote.train) == read_files(local.train)
        assert read_files(remote.validation) == read_files(local.validation)


def test_a_missing_csv_or_image_dir_on_a_store_is_named_as_a_local_one(tmp_path, labelled, ram_dir):
    errors = []
    for root in (str(tmp_path), ram_dir):
        with pytest.raises(FileNotFoundError) as missing_csv:
            from_csv(paths.join(root, "nothing.csv"))
        with pytest.raises(FileNotFoundError) as missing_folder:
            from_csv(labelled, image_dir=paths.join(root, "nowhere"))
        errors.append([str(error.value).replace(root, "ROOT") for error in (missing_csv, missing_folder)])
    assert errors[0] == errors[1]
