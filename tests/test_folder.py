"""Tests of tfresnet.data.folder: the label map, the split, and files that cannot be used, each
skipped, reported and counted out, never in a dataset."""

import io
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import copy_to_ram, file_index, take_all
from PIL import Image

from tfresnet import paths
from tfresnet.data import decode_for_eval, from_folder

SIZE = 32


def decoded_files(folder: str) -> tuple[np.ndarray, list[int]]:
    """`decode_for_eval` of each image file of a class folder, and its label."""
    classes = sorted(os.listdir(folder))
    files = [
        (os.path.join(folder, name, file), label)
        for label, name in enumerate(classes)
        for file in sorted(os.listdir(os.path.join(folder, name)))
    ]
    images = np.stack([decode_for_eval(tf.io.read_file(path), SIZE).numpy() for path, _ in files])
    return images, [label for _, label in files]


def encoded_noise(file_format: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, file_format)
    return buffer.getvalue()


def corrupt_body(kind: str) -> bytes:
    """An image whose signature and end are intact but whose middle is garbage."""
    contents = bytearray(encoded_noise("JPEG" if kind == "jpeg" else "PNG"))
    third = len(contents) // 3
    if kind == "jpeg":  # bytes libjpeg cannot parse (zeros would decode, as gray garbage)
        contents[third : 2 * third] = np.random.default_rng(0).integers(0, 256, third, np.uint8).tobytes()
    else:  # breaks an IDAT checksum
        contents[third : third + 16] = bytes(16)
    return bytes(contents)


# === Label map and split ===


def test_class_names_sorted_and_labels_follow_folders(image_folder):
    red = os.path.join(image_folder, "red")
    for name in ("000.jpg", "001.png"):
        shutil.copy(os.path.join(red, name), os.path.join(red, "extra_" + name))
    os.makedirs(os.path.join(red, "nested"))
    shutil.copy(os.path.join(red, "000.jpg"), os.path.join(red, "nested", "deep.jpg"))
    os.makedirs(os.path.join(image_folder, ".hidden_class"))
    shutil.copy(os.path.join(red, "000.jpg"), os.path.join(image_folder, ".hidden_class", "0.jpg"))
    shutil.copy(os.path.join(red, "000.jpg"), os.path.join(red, ".hidden.jpg"))

    data = from_folder(image_folder, image_size=SIZE, val_split=0, seed=0)

    assert data.class_names == ["blue", "green", "red"]
    assert data.class_counts == [7, 7, 10]
    assert (data.num_train, data.num_validation, data.validation) == (24, 0, None)
    _, labels = take_all(data.train)
    assert np.bincount(labels).tolist() == [7, 7, 10]


def test_split_is_stratified_disjoint_and_stable(make_image_folder):
    folder = make_image_folder(images_per_class=10, size=SIZE)

    data = from_folder(folder, image_size=SIZE, val_split=0.2, augmentation="none", seed=3)

    assert (data.num_train, data.num_validation) == (24, 6)
    assert data.class_counts == [8, 8, 8]
    train_images, _ = take_all(data.train)
    val_images, val_labels = take_all(data.validation)
    assert np.bincount(val_labels).tolist() == [2, 2, 2]
    assert not any((train_images == image).all(axis=(1, 2, 3)).any() for image in val_images)
    again, _ = take_all(from_folder(folder, image_size=SIZE, seed=3).validation)
    np.testing.assert_array_equal(again, val_images)
    # The files of each set, in the order of its evaluation batches.
    assert len(data.files["train"]) == 24 and len(data.files["validation"]) == 6
    names = [os.path.basename(os.path.dirname(path)) for path in data.files["validation"]]
    assert [data.class_names.index(name) for name in names] == val_labels.tolist()
    assert not set(data.files["train"]) & set(data.files["validation"])


def test_validation_directory_must_hold_the_same_classes(make_image_folder):
    train, same, fewer = (make_image_folder(num_classes=n, images_per_class=2, size=SIZE) for n in (3, 3, 2))

    data = from_folder(train, validation_directory=same, image_size=SIZE, seed=0)

    assert (data.num_train, data.num_validation) == (6, 6)
    with pytest.raises(ValueError, match=r"differ.*\['green', 'red'\] vs"):
        from_folder(train, validation_directory=fewer)


# === Files that cannot be used ===


def test_bad_files_are_skipped_counted_and_reported_once(bad_image_folder):
    folder, bad = bad_image_folder
    notes = os.path.join(folder, "red", "notes.txt")
    shutil.copy(bad[2], notes)

    with pytest.warns(UserWarning, match="Skipped 4 files") as caught:
        data = from_folder(folder, image_size=SIZE, seed=0)

    assert len(caught) == 1 and all(path in str(caught[0].message) for path in [*bad, notes])
    assert sorted(data.skipped) == sorted([*bad, notes])
    assert data.skipped[bad[0]] == "empty file"
    assert data.skipped[bad[1]].startswith("truncated: ")
    assert data.skipped[bad[2]] == "not a JPEG, PNG, GIF or BMP image"
    assert data.skipped[notes].startswith("not a .bmp, .gif")
    assert data.num_train + data.num_validation == 21
    assert len(take_all(data.train)[1]) == data.num_train
    assert len(take_all(data.validation)[1]) == data.num_validation


def test_strict_raises_naming_the_bad_files(bad_image_folder):
    folder, bad = bad_image_folder

    with pytest.raises(ValueError, match="strict=False") as raised:
        from_folder(folder, strict=True)

    assert all(os.path.basename(path) in str(raised.value) for path in bad)


@pytest.mark.parametrize("where", ["train", "validation"])
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_file_corrupt_inside_is_skipped_and_in_no_dataset(make_image_folder, kind, where):
    folders = {
        "train": make_image_folder(images_per_class=4, size=SIZE),
        "validation": make_image_folder(images_per_class=2, size=SIZE, seed=1),
    }
    contents = corrupt_body(kind)
    signature, end = (b"\xff\xd8\xff", b"\xff\xd9") if kind == "jpeg" else (b"\x89PNG", b"IEND")
    assert contents.startswith(signature) and end in contents[-16:]  # precondition: looks whole
    with pytest.raises(tf.errors.InvalidArgumentError):  # precondition: does not decode
        tf.io.decode_image(contents, channels=3, expand_animations=False)
    decoded = {name: decoded_files(folder) for name, folder in folders.items()}  # the good files
    bad = os.path.join(folders[where], "red", f"bad.{kind}")
    open(bad, "wb").write(contents)

    with pytest.warns(UserWarning, match="Skipped 1 files.*bad"):
        data = from_folder(
            folders["train"],
            validation_directory=folders["validation"],
            image_size=SIZE,
            augmentation="none",
            seed=0,
        )

    assert list(data.skipped) == [bad] and data.skipped[bad].startswith("corrupt: ")
    assert (data.num_train, data.num_validation) == (12, 6)
    for name, dataset in (("train", data.train), ("validation", data.validation)):
        images, labels = take_all(dataset)
        index = file_index(images, decoded[name][0])  # every image is one good file's...
        assert sorted(index) == list(range(len(decoded[name][1])))  # ...and each is there once
        assert labels.tolist() == [decoded[name][1][i] for i in index]


@pytest.mark.parametrize("mode, bits", [("P", 8), ("L", 8), ("1", 1)])
def test_bmp_the_transform_refuses_is_skipped_by_the_loader(make_image_folder, mode, bits):
    folder = make_image_folder(images_per_class=2, size=SIZE)
    path = os.path.join(folder, "red", "palette.bmp")
    Image.open(io.BytesIO(encoded_noise("PNG"))).convert(mode).save(path, "BMP")
    with pytest.raises(tf.errors.InvalidArgumentError, match="BMP bit depth"):
        decode_for_eval(tf.io.read_file(path), SIZE)

    with pytest.warns(UserWarning, match="Skipped 1 files"):
        data = from_folder(folder, image_size=SIZE, val_split=0, seed=0)

    assert data.skipped == {path: f"{bits}-bit BMP (only 24- and 32-bit BMP decode correctly)"}
    assert data.num_train == 6 == len(take_all(data.train)[1])


# === Errors before training ===


@pytest.mark.parametrize(
    "layout, error, match",
    [
        (None, FileNotFoundError, "Image folder not found: .*missing"),
        ([], ValueError, "No class sub-folders in"),
        (["cats", "dogs"], ValueError, "Class folder .*dogs.* holds no readable images"),
        (["only"], ValueError, "single class, 'only'"),
    ],
)
def test_folder_errors_name_the_path(tmp_path, layout, error, match):
    root = tmp_path / ("missing" if layout is None else "images")
    if layout is not None:
        os.makedirs(root)
    for name in layout or []:
        os.makedirs(root / name)
    if layout:
        Image.new("RGB", (8, 8)).save(root / layout[0] / "0.png")

    with pytest.raises(error, match=match):
        from_folder(str(root))


# === A folder on a store (ram://, TensorFlow's in-memory file system, through tf.io.gfile) ===


def test_a_folder_on_a_store_loads_as_its_local_copy(bad_image_folder, ram_dir):
    root, _ = bad_image_folder
    ram = copy_to_ram(root, paths.join(ram_dir, "photos"))
    loaded = []
    for folder in (root, ram):
        with pytest.warns(UserWarning, match="Skipped 3 files"):
            loaded.append(from_folder(folder, image_size=SIZE, seed=0))
    local, remote = loaded

    assert remote.class_names == local.class_names
    assert (remote.num_train, remote.num_validation) == (local.num_train, local.num_validation)
    assert remote.class_counts == local.class_counts
    assert {os.path.relpath(path, ram): why for path, why in remote.skipped.items()} == {
        os.path.relpath(path, root): why for path, why in local.skipped.items()
    }
    assert all(path.startswith(ram + "/") for path in remote.files["train"])
    assert remote.fingerprint == local.fingerprint  # the same files, sizes, labels and split
    for mine, theirs in ((local.train, remote.train), (local.validation, remote.validation)):
        (images, labels), (same_images, same_labels) = next(iter(mine)), next(iter(theirs))
        np.testing.assert_array_equal(images, same_images)
        np.testing.assert_array_equal(labels, same_labels)


@pytest.mark.parametrize(
    "layout", [None, [], ["cats", "dogs"], ["only"]], ids=["missing", "empty", "no-images", "one"]
)
def test_a_folder_on_a_store_fails_with_the_error_of_a_local_one(layout, tmp_path, ram_dir):
    errors = []
    for root in (str(tmp_path / "images"), paths.join(ram_dir, "images")):
        if layout is not None:
            paths.makedirs(root)
        for name in layout or []:
            paths.makedirs(paths.join(root, name))
            with paths.open_file(paths.join(root, name, "notes.txt"), "w") as file:
                file.write("not an image")
        if layout:
            with paths.open_file(paths.join(root, layout[0], "0.png"), "wb") as file:
                Image.new("RGB", (8, 8)).save(file, "PNG")
        with pytest.raises((FileNotFoundError, ValueError)) as caught, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from_folder(root)
        errors.append((type(caught.value), str(caught.value).replace(root, "ROOT")))

    assert errors[0] == errors[1]
    assert len(errors[0][1].splitlines()) == 1
