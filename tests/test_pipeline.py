"""Tests of tfresnet.data.pipeline, through the loaders: determinism, the batch contract, the
training set's safety net, the training images under the evaluation transform and the workers'
shares of the training files (file caches: test_cache.py)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import file_index, take_all

from tfresnet.data import AUGMENTATIONS, decode_for_eval, from_arrays, from_folder
from tfresnet.data.pipeline import Part, make_settings, shard_part, stratified_split

SIZE = 32


def listed_files(folder: str) -> list[tuple[str, int]]:
    """`(path, label)` of a class folder's files, in the order the loader lists them."""
    classes = sorted(os.listdir(folder))
    return [
        (os.path.join(folder, name, file), label)
        for label, name in enumerate(classes)
        for file in sorted(os.listdir(os.path.join(folder, name)))
    ]


# === Determinism and the batch contract ===


def test_same_seed_same_batches_other_seed_other_batches(make_image_folder):
    folder = make_image_folder(images_per_class=3, size=SIZE)

    def two_epochs(seed):
        train = from_folder(folder, image_size=SIZE, batch_size=4, seed=seed).train
        return [take_all(train) for _ in range(2)]

    first, second, other = two_epochs(7), two_epochs(7), two_epochs(8)

    for (images, labels), (images_again, labels_again) in zip(first, second):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])  # each epoch augments anew


def test_one_seed_gives_the_same_batches_whatever_tensorflows_global_seed(make_image_folder):
    """What ran before (`tf.random.set_seed`, or `fine_tune(seed=...)`, which sets it) changes
    neither the shuffle nor the augmentation, and the global seed is left as it was."""
    folder = make_image_folder(images_per_class=3, size=SIZE)

    def batches(global_seed):
        tf.random.set_seed(global_seed)
        train = from_folder(folder, image_size=SIZE, batch_size=4, seed=7).train
        assert tf.random.uniform([], seed=1).numpy() == _first_draw(global_seed)  # the seed was kept
        return take_all(train)

    first, other = batches(1), batches(2)

    np.testing.assert_array_equal(first[1], other[1])
    np.testing.assert_array_equal(first[0], other[0])


def _first_draw(global_seed: int) -> float:
    tf.random.set_seed(global_seed)
    return tf.random.uniform([], seed=1).numpy()


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_batches_are_float32_raw_pixels_and_int32_labels(image_folder, augmentation):
    data = from_folder(
        image_folder, image_size=SIZE, batch_size=3, augmentation=augmentation, seed=0, drop_remainder=True
    )

    for dataset in (data.train, data.validation, data.train_evaluation):
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
    assert (train_images == 255).all()
    for dataset in (data.validation, data.train_evaluation):
        assert not (take_all(dataset)[0] == 255).all()


def test_training_set_without_augmentation_is_decode_for_eval_of_each_file(image_folder):
    data = from_folder(image_folder, image_size=SIZE, val_split=0, augmentation="none", seed=0)
    files = listed_files(image_folder)
    decode = tf.function(lambda contents: decode_for_eval(contents, SIZE))
    expected = np.stack([decode(tf.io.read_file(path)).numpy() for path, _ in files])

    images, labels = take_all(data.train)

    index = file_index(images, expected)  # shuffled: match each image to its file
    assert sorted(index) == list(range(len(files)))
    assert labels.tolist() == [files[i][1] for i in index]


# === The training images under the evaluation transform ===


@pytest.mark.parametrize("cache", ["memory", "directory"])
def test_train_evaluation_is_every_training_image_once_in_source_order(image_folder, tmp_path, cache):
    data = from_folder(
        image_folder,
        image_size=SIZE,
        batch_size=4,
        val_split=0.3,
        seed=0,
        cache=True if cache == "memory" else str(tmp_path / "cache"),
    )
    files = listed_files(image_folder)
    expected = np.stack([decode_for_eval(tf.io.read_file(path), SIZE).numpy() for path, _ in files])
    assert len(np.unique(expected.reshape(len(files), -1), axis=0)) == len(files)  # files tell apart

    first, second = take_all(data.train_evaluation), take_all(data.train_evaluation)

    train_index = file_index(first[0], expected)
    validation_index = file_index(take_all(data.validation)[0], expected)
    assert len(train_index) == data.num_train == 15
    assert train_index == sorted(set(train_index))  # each once, in source order
    assert set(train_index).isdisjoint(validation_index)
    assert sorted(train_index + validation_index) == list(range(len(files)))
    assert first[1].tolist() == [files[i][1] for i in train_index]
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


# === A file that fails after the listing ===


def corrupt_png_body(path: str) -> None:
    """Overwrites the middle of a PNG file: its signature and end stay, decoding fails."""
    contents = bytearray(open(path, "rb").read())
    middle = len(contents) // 2
    contents[middle - 8 : middle + 8] = bytes(16)
    open(path, "wb").write(bytes(contents))
    with pytest.raises(tf.errors.InvalidArgumentError):  # precondition
        tf.io.decode_image(tf.io.read_file(path))


def test_file_failing_after_listing_is_replaced_in_training_but_never_in_evaluation(make_image_folder):
    train_folder = make_image_folder(images_per_class=4, size=SIZE)
    validation_folder = make_image_folder(images_per_class=2, size=SIZE, seed=1)
    data = from_folder(
        train_folder, validation_directory=validation_folder, image_size=SIZE, seed=0, augmentation="flip"
    )
    assert (data.num_train, data.num_validation, data.skipped) == (12, 6, {})

    corrupt_png_body(os.path.join(train_folder, "red", "001.png"))
    corrupt_png_body(os.path.join(validation_folder, "red", "001.png"))

    assert len(take_all(data.train)[1]) == data.num_train  # the safety net keeps the epoch's length
    for dataset in (data.validation, data.train_evaluation):  # no image twice: it raises instead
        with pytest.raises(tf.errors.InvalidArgumentError):
            take_all(dataset)


# === A worker's share of the training files ===


@pytest.mark.parametrize("drop_remainder, steps", [(False, 3), (True, 2)])
def test_shares_split_the_training_files_into_the_steps_of_one_machine(image_folder, drop_remainder, steps):
    """21 training files in batches of 8; two shares in batches of 4: 11 images each (share 1's
    10 files and its first again), every second file, as many batches as one machine's."""
    data = from_folder(
        image_folder,
        image_size=SIZE,
        batch_size=8,
        val_split=0,
        augmentation="none",
        seed=0,
        drop_remainder=drop_remainder,
    )
    files = listed_files(image_folder)
    expected = np.stack([decode_for_eval(tf.io.read_file(path), SIZE).numpy() for path, _ in files])
    shares = [data.train_shard(index, 2, 4) for index in range(2)]

    assert len(list(data.train)) == steps
    assert [len(list(share)) for share in shares] == [steps, steps]
    if not drop_remainder:
        for index, share in enumerate(shares):
            images, labels = take_all(share)
            found = file_index(images, expected)
            assert len(found) == 11 and sorted(set(found)) == list(range(index, 21, 2))
            assert labels.tolist() == [files[i][1] for i in found]


def test_a_share_reads_only_its_own_files(make_image_folder):
    folder = make_image_folder(images_per_class=4, size=SIZE)
    data = from_folder(folder, image_size=SIZE, batch_size=4, val_split=0, seed=0, strict=True)
    for path in data.files["train"][1::2]:  # share 1 of 2
        os.remove(path)

    images, _ = take_all(data.train_shard(0, 2, 2))  # random crops: decoded from the files each pass

    assert len(images) == 6
    for needs_the_files in (data.train_shard(1, 2, 2), data.train):
        with pytest.raises(tf.errors.NotFoundError):
            take_all(needs_the_files)


def test_the_one_share_of_one_is_the_training_set(image_folder):
    data = from_folder(image_folder, image_size=SIZE, batch_size=4, seed=3)

    for ours, one_share in zip(take_all(data.train), take_all(data.train_shard(0, 1, 4))):
        np.testing.assert_array_equal(ours, one_share)


def test_data_without_files_has_no_shares_and_a_share_names_what_exists():
    data = from_arrays(np.zeros((6, 8, 8, 3), np.uint8), np.arange(6) % 2, image_size=8, val_split=0)
    assert data.train_shard is None
    part = Part(tf.data.Dataset.range(3), tf.identity, np.arange(3))
    assert shard_part(part, 1, 2).labels.tolist() == [1, 1]  # padded to as many as share 0's
    with pytest.raises(ValueError, match=r"0 <= index < count <= 3. Received: index=2, count=2"):
        shard_part(part, 2, 2)


# === Settings and split ===


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"augmentation": "fancy"}, "'standard', 'randaugment'. Received: augmentation='fancy'"),
        ({"val_split": 1.5}, "Received: val_split=1.5"),
        ({"val_split": -0.1}, "Received: val_split=-0.1"),
        ({"image_size": 0}, "Received: image_size=0"),
        ({"batch_size": 2.0}, "Received: batch_size=2.0"),
        ({"seed": "7"}, "Received: seed='7'"),
        ({"cache": 3}, "Received: cache=3"),
        ({"extra_augmentation": "flip"}, "Received: extra_augmentation='flip'"),
        ({"max_image_pixels": 0}, "Received: max_image_pixels=0"),
    ],
)
def test_settings_errors_say_what_was_received(kwargs, match):
    settings = dict(
        image_size=SIZE,
        batch_size=4,
        val_split=0.2,
        augmentation="standard",
        extra_augmentation=None,
        seed=0,
        cache=True,
        drop_remainder=False,
    )

    with pytest.raises(ValueError, match=match):
        make_settings(**{**settings, **kwargs})


def test_drop_remainder_drops_training_batches_only():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1) * np.ones((1, 8, 8, 3), np.uint8)

    data = from_arrays(
        images, np.arange(20) % 2, image_size=8, batch_size=4, val_split=0.3, drop_remainder=True
    )

    assert [len(labels) for _, labels in data.train] == [4, 4, 4]  # 14 images: the last 2 dropped
    assert sum(len(labels) for _, labels in data.validation) == data.num_validation == 6
    assert sum(len(labels) for _, labels in data.train_evaluation) == data.num_train == 14


def test_drop_remainder_without_a_full_training_batch_is_refused():
    images = np.zeros((10, 8, 8, 3), np.uint8)

    with pytest.raises(ValueError, match="the 2 training images make no full batch of batch_size=4"):
        from_arrays(images, np.arange(10) % 2, image_size=8, batch_size=4, val_split=0.7, drop_remainder=True)


@pytest.mark.parametrize(
    "labels, val_split, held_out",
    [
        ([0] * 10 + [1] * 10, 0.2, [2, 2]),
        ([0] * 3 + [1] * 9, 0.5, [2, 5]),  # rounds half up
        ([0] * 1 + [1] * 4, 0.5, [0, 2]),  # a class keeps at least one training image
    ],
)
def test_stratified_split_holds_out_each_class_and_never_all_of_one(labels, val_split, held_out):
    labels = np.array(labels)

    train, validation = stratified_split(labels, val_split, seed=0)

    assert np.bincount(labels[validation], minlength=2).tolist() == held_out
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(len(labels)))
    assert train.tolist() == sorted(train) and validation.tolist() == sorted(validation)
    again = stratified_split(labels, val_split, seed=None)  # None splits as seed 0
    np.testing.assert_array_equal(again[1], validation)


def test_stratified_split_holding_out_nothing_says_so():
    with pytest.raises(ValueError, match="holds out no image.*only 2 images"):
        stratified_split(np.array([0, 0, 1, 1]), 0.1, seed=0)


# === The models' normalisation of these batches ===


@pytest.mark.parametrize(
    "backbone, preprocess",
    [
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("resnet50v2", keras.applications.resnet_v2.preprocess_input),
    ],
)
def test_backbone_normalisation_of_batches_matches_keras_preprocess_input(image_folder, backbone, preprocess):
    """The batches hold what each backbone's first layer expects: Keras's raw pixels."""
    from tfresnet.models.backbones import BACKBONES
    from tfresnet.models.layers import ImageNormalization

    images, _ = next(iter(from_folder(image_folder, image_size=SIZE, seed=0).train))

    normalised = ImageNormalization(BACKBONES[backbone].normalization)(images)

    expected = preprocess(np.array(images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalised), expected, atol=1e-4)
