"""Tests of tfresnet.data: real folders, TFDS's offline mock and arrays, all tiny."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfresnet.data import AUGMENTATIONS, decode_for_eval, from_arrays, from_folder, from_tfds

SIZE = 32


def take_all(dataset):
    """All images and labels of one epoch, concatenated."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# === Folders: label map, split, determinism, contract ===


def test_class_names_sorted_and_labels_follow_folders(image_folder):
    red = os.path.join(image_folder, "red")
    for name in ("000.jpg", "001.png"):
        shutil.copy(os.path.join(red, name), os.path.join(red, "extra_" + name))

    data = from_folder(image_folder, image_size=SIZE, val_split=0, seed=0)

    assert data.class_names == ["blue", "green", "red"]
    assert data.class_counts == [7, 7, 9]
    assert (data.num_train, data.num_validation, data.validation) == (23, 0, None)
    _, labels = take_all(data.train)
    assert np.bincount(labels).tolist() == [7, 7, 9]


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


def test_same_seed_same_batches_other_seed_other_batches(image_folder):
    def two_epochs(seed):
        train = from_folder(image_folder, image_size=SIZE, batch_size=8, seed=seed).train
        return [take_all(train) for _ in range(2)]

    first, second, other = two_epochs(7), two_epochs(7), two_epochs(8)

    for (images, labels), (images_again, labels_again) in zip(first, second):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])  # each epoch augments anew


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_batches_are_float32_raw_pixels_and_int32_labels(image_folder, augmentation):
    data = from_folder(
        image_folder, image_size=SIZE, batch_size=3, augmentation=augmentation, seed=0, drop_remainder=True
    )

    for dataset in (data.train, data.validation):
        images, labels = next(iter(dataset))
        assert images.dtype == tf.float32 and images.shape == (3, SIZE, SIZE, 3)
        assert labels.dtype == tf.int32 and labels.shape == (3,)
        assert 0 <= images.numpy().min() and images.numpy().max() <= 255
        assert images.numpy().max() > 200  # raw pixels, not normalised


def test_extra_augmentation_applies_to_training_batches_only(image_folder):
    data = from_folder(
        image_folder, image_size=SIZE, seed=0, extra_augmentation=lambda images: 255.0 - images * 0.0
    )

    train_images, _ = take_all(data.train)
    val_images, _ = take_all(data.validation)
    assert (train_images == 255).all() and not (val_images == 255).all()


def test_file_cache_serves_the_same_images(image_folder, tmp_path):
    cache = tmp_path / "cache"
    data = from_folder(image_folder, image_size=SIZE, cache=str(cache), seed=0)

    first, second = take_all(data.validation), take_all(data.validation)

    np.testing.assert_array_equal(first[0], second[0])
    assert any(name.startswith("validation-") for name in os.listdir(cache))


def test_validation_directory_must_hold_the_same_classes(make_image_folder):
    train, same, fewer = (make_image_folder(num_classes=n, images_per_class=2, size=SIZE) for n in (3, 3, 2))

    data = from_folder(train, validation_directory=same, image_size=SIZE, seed=0)

    assert (data.num_train, data.num_validation) == (6, 6)
    with pytest.raises(ValueError, match=r"differ.*\['green', 'red'\] vs"):
        from_folder(train, validation_directory=fewer)


# === Formats and decoding ===


def test_every_format_and_colour_mode_becomes_rgb(image_folder):
    """A crop side equal to image_size needs no resampling: pixels must match PIL's RGB."""
    side = int(0.875 * 40)  # the fixture's images are 40 px
    top = (40 - side) // 2
    for name in sorted(os.listdir(os.path.join(image_folder, "red"))):
        path = os.path.join(image_folder, "red", name)
        decoded = decode_for_eval(tf.io.read_file(path), side).numpy()
        expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        expected = expected[top : top + side, top : top + side]
        assert decoded.shape == (side, side, 3) and decoded.dtype == np.float32, name
        tolerance = 4 if name.endswith((".jpg", ".jpeg")) else 0
        np.testing.assert_allclose(decoded, expected, atol=tolerance, err_msg=name)

    data = from_folder(image_folder, image_size=SIZE, seed=0)
    assert data.skipped == {} and data.num_train + data.num_validation == 21


def test_decode_for_eval_equals_the_evaluation_pipeline(image_folder):
    data = from_folder(image_folder, image_size=SIZE, val_split=0, augmentation="none", seed=0)
    decode = tf.function(lambda contents: decode_for_eval(contents, SIZE))
    expected = [
        decode(tf.io.read_file(os.path.join(root, name))).numpy()
        for root, _, names in os.walk(image_folder)
        for name in names
    ]

    images, _ = take_all(data.train)

    assert len(images) == len(expected)
    for image in images:  # the training set is shuffled: match each image to one file
        assert any(np.array_equal(image, candidate) for candidate in expected)


# === Bad files ===


def test_bad_files_are_skipped_counted_and_reported_once(bad_image_folder):
    folder, bad = bad_image_folder

    with pytest.warns(UserWarning, match="Skipped 3 files") as caught:
        data = from_folder(folder, image_size=SIZE, seed=0)

    assert len(caught) == 1 and all(path in str(caught[0].message) for path in bad)
    assert sorted(data.skipped) == sorted(bad)
    assert data.skipped[bad[0]] == "empty file"
    assert data.num_train + data.num_validation == 21
    assert len(take_all(data.train)[1]) == data.num_train


def test_strict_raises_naming_the_bad_files(bad_image_folder):
    folder, bad = bad_image_folder

    with pytest.raises(ValueError, match="strict=False") as raised:
        from_folder(folder, strict=True)

    assert all(os.path.basename(path) in str(raised.value) for path in bad)


def test_file_corrupt_inside_is_dropped_without_ending_the_epoch(image_folder):
    path = os.path.join(image_folder, "red", "001.png")
    contents = bytearray(open(path, "rb").read())
    contents[len(contents) // 2] ^= 0xFF  # breaks an IDAT checksum; the file ends well
    open(path, "wb").write(bytes(contents))

    data = from_folder(image_folder, image_size=SIZE, val_split=0, seed=0)

    assert data.skipped == {} and data.num_train == 21
    assert data.train.cardinality() == 1  # known: one batch of 21
    labels = [take_all(data.train)[1] for _ in range(2)]
    assert [len(epoch) for epoch in labels] == [21, 21]


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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"augmentation": "fancy"}, "'none', 'flip', 'standard'. Received: augmentation='fancy'"),
        ({"val_split": 1.5}, "Received: val_split=1.5"),
        ({"image_size": 0}, "Received: image_size=0"),
        ({"labels": np.array([0, 1, 2, 5])}, r"\[0, 3\).*labels\[3\]=5"),
        ({"labels": np.array([0, 0, 0, 0])}, "single class"),
        ({"images": np.full((4, 8, 8, 3), 0.5)}, "Multiply them by 255"),
        ({"images": np.zeros((4, 8, 8, 2), np.uint8)}, r"Received: shape=\(4, 8, 8, 2\)"),
    ],
)
def test_argument_errors_say_what_was_received(kwargs, match):
    arrays = {"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.array([0, 1, 2, 1])}
    arrays.update({key: kwargs.pop(key) for key in ("images", "labels") if key in kwargs})
    class_names = ["a", "b", "c"] if len(set(arrays["labels"].tolist())) > 1 else None

    with pytest.raises(ValueError, match=match):
        from_arrays(arrays["images"], arrays["labels"], class_names=class_names, **kwargs)


# === Arrays and TFDS ===


def test_from_arrays_gray_and_float_images(images):
    labels = np.array([0, 1, 0, 1])

    gray = from_arrays(np.zeros((4, 20, 20), np.uint8), labels, image_size=SIZE, val_split=0.5)
    floats = from_arrays(
        images,
        labels,
        image_size=SIZE,
        val_split=0,
        augmentation="none",
        validation=(images[:2], labels[:2]),
        seed=0,
    )

    assert gray.class_names == ["0", "1"] and (gray.num_train, gray.num_validation) == (2, 2)
    assert next(iter(gray.train))[0].shape == (2, SIZE, SIZE, 3)
    val_images, val_labels = take_all(floats.validation)
    assert val_images.shape == (2, SIZE, SIZE, 3) and val_labels.tolist() == [0, 1]


@pytest.mark.parametrize("validation_split", [None, "train[80%:]"])
def test_from_tfds_reads_the_mock_dataset_offline(tmp_path, validation_split):
    with tfds.testing.mock_data(num_examples=10, data_dir=str(tmp_path)):
        data = from_tfds(
            "tf_flowers",
            split="train",
            validation_split=validation_split,
            val_split=0.3,
            data_dir=str(tmp_path),
            image_size=SIZE,
            batch_size=4,
            seed=0,
        )
        images, labels = next(iter(data.train))
        val_labels = take_all(data.validation)[1]

    assert data.class_names == ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
    assert data.num_validation > 0
    if validation_split is None:  # the mock ignores slicing: a named split holds all 10
        assert data.num_train + data.num_validation == 10
    assert sum(data.class_counts) == data.num_train
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32 and len(val_labels) == data.num_validation


# === The model's normalisation layer on these batches ===


@pytest.mark.parametrize(
    "backbone, preprocess",
    [
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("resnet50v2", keras.applications.resnet_v2.preprocess_input),
    ],
)
def test_model_preprocessing_layer_matches_keras_preprocess_input(image_folder, backbone, preprocess):
    from tfresnet.models import build_classifier

    images, _ = next(iter(from_folder(image_folder, image_size=SIZE, seed=0).train))
    model = build_classifier(3, backbone=backbone, weights=None, image_size=SIZE)

    normalised = model.get_layer("preprocessing")(images)

    expected = preprocess(np.array(images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalised), expected, atol=1e-4)
