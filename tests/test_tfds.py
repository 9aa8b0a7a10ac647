"""Tests of tfresnet.data.tfds on TFDS's offline mock, fed records whose images tell their id."""

import io
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tfresnet.data import from_tfds

SIZE = 32
FLOWERS = ["dandelion", "daisy", "tulips", "sunflowers", "roses"]
# Record ids of each split; a record's image is a solid gray of level `id`, its label `label(id)`.
SPLITS = {"train": range(0, 23), "test": range(100, 106), "empty": range(0)}


def label(record_id: int) -> int:
    """Uneven classes: 1, 3, 5, 7 and 7 records of the training split."""
    return math.isqrt(record_id) % 5


def encoded_gray(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 48), (level, level, level)).save(buffer, "PNG")
    return buffer.getvalue()


def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    """Replaces the builder's reading: the records of `SPLITS[split]`, decoded as asked."""
    features = self.info.features
    if isinstance(decoders, tfds.decode.PartialDecoding):
        features = decoders.extract_features(features)
        decoders = decoders.decoders
    ids = list(SPLITS[str(split)])
    records = tf.data.Dataset.from_tensor_slices(
        {
            "image": tf.constant([encoded_gray(i) for i in ids], tf.string),
            "label": tf.constant([label(i) for i in ids], tf.int64),
        }
    )

    def decode(record):
        return features.decode_example({key: record[key] for key in features.keys()}, decoders=decoders)

    return records.map(decode)


@pytest.fixture
def mock_flowers(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=as_dataset, data_dir=str(tmp_path)):
        yield str(tmp_path)


def record_ids(dataset) -> tuple[list[int], list[int]]:
    """The record id each image shows, and its label, over one pass."""
    ids, labels = [], []
    for images, batch_labels in dataset.as_numpy_iterator():
        assert images.shape[1:] == (SIZE, SIZE, 3) and images.dtype == np.float32
        ids += [int(np.round(image.mean())) for image in images]
        labels += batch_labels.tolist()
    return ids, labels


@pytest.mark.parametrize("validation_split", [None, "test"])
def test_from_tfds_splits_disjoint_sets_and_counts_the_training_classes(mock_flowers, validation_split):
    data = from_tfds(
        "tf_flowers",
        split="train",
        validation_split=validation_split,
        val_split=0.3,
        data_dir=mock_flowers,
        image_size=SIZE,
        batch_size=4,
        seed=0,
    )
    train_ids, train_labels = record_ids(data.train)
    validation_ids, validation_labels = record_ids(data.validation)
    in_order, _ = record_ids(data.train_evaluation)

    assert data.class_names == FLOWERS
    assert set(train_ids).isdisjoint(validation_ids)
    assert len(set(train_ids)) == len(train_ids) == data.num_train
    assert len(set(validation_ids)) == len(validation_ids) == data.num_validation
    assert in_order == sorted(train_ids)  # source order, each once
    assert train_labels == [label(i) for i in train_ids]
    assert validation_labels == [label(i) for i in validation_ids]
    assert data.class_counts == np.bincount(train_labels, minlength=5).tolist()
    if validation_split is None:  # a stratified 30% of each class of "train" held out
        assert sorted(train_ids + validation_ids) == list(SPLITS["train"])
        assert np.bincount(validation_labels, minlength=5).tolist() == [0, 1, 2, 2, 2]
        assert data.class_counts == [1, 2, 3, 5, 5]
    else:
        assert sorted(train_ids) == list(SPLITS["train"]) and sorted(validation_ids) == list(SPLITS["test"])
        assert data.class_counts == [1, 3, 5, 7, 7]


def test_training_records_are_shuffled_anew_each_epoch(mock_flowers):
    data = from_tfds("tf_flowers", split="train", data_dir=mock_flowers, image_size=SIZE, val_split=0, seed=0)

    first, second = record_ids(data.train)[0], record_ids(data.train)[0]

    assert sorted(first) == sorted(second) == list(SPLITS["train"])
    assert first != second and first != sorted(first)


def test_empty_split_says_so(mock_flowers):
    with pytest.raises(ValueError, match="Split 'empty' of TFDS dataset 'tf_flowers' is empty"):
        from_tfds("tf_flowers", split="empty", data_dir=mock_flowers, image_size=SIZE)
