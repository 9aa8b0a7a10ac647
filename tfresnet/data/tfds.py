"""TensorFlow Datasets: `from_tfds` reads a TFDS image classification dataset, its images left
encoded where stored encoded, with the training set shuffled in a bounded buffer.
`tensorflow_datasets` is imported only when a dataset is read: it takes seconds to import."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import numpy as np
import tensorflow as tf

from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
from tfresnet.data.cache import cache_fingerprint, fingerprint_of
from tfresnet.data.pipeline import (
    AUGMENTATION,
    BATCH_SIZE,
    IMAGE_SIZE,
    VAL_SPLIT,
    ImageData,
    Part,
    assemble,
    check_class_count,
    make_settings,
    stratified_split,
)
from tfresnet.data.transforms import CROP_FRACTION

if TYPE_CHECKING:
    from tensorflow_datasets.core import DatasetInfo

# TFDS records are read in order; the training set is shuffled in a buffer of this many.
TFDS_SHUFFLE_BUFFER = 10_000


def from_tfds(
    name: str,
    *,
    split: str = "train",
    validation_split: str | None = None,
    val_split: float = VAL_SPLIT,
    data_dir: str | os.PathLike | None = None,
    image_size: int = IMAGE_SIZE,
    crop_fraction: float = CROP_FRACTION,
    batch_size: int = BATCH_SIZE,
    augmentation: str = AUGMENTATION,
    randaugment_magnitude: float = RANDAUGMENT_MAGNITUDE,
    randaugment_ops: int = RANDAUGMENT_OPS,
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int | None = None,
    cache: bool | str | os.PathLike = True,
    drop_remainder: bool = False,
) -> ImageData:
    """Loads a TensorFlow Datasets image classification dataset through `tfds.load`.

    The dataset's supervised keys name the image and the label; class names come from the
    label's `ClassLabel` feature. Images stay encoded when read (so JPEG crops decode only
    their window); image features stored as decoded tensors are handled too.

    The labels of `split` (and `validation_split`) are read once, without decoding images,
    to count classes and, with no `validation_split`, to hold out a stratified `val_split`
    of `split`; both sets then read `split` in order, and the training set is shuffled in
    a buffer of up to `TFDS_SHUFFLE_BUFFER` records. Records are not checked up front: a
    training image that fails to decode is dropped with a logged error and another takes
    its place (every epoch keeps `num_train` images); in the validation and evaluation
    sets, which are never padded, it raises.

    Args:
        name: The TFDS name, e.g. `"tf_flowers"` or `"cifar10:3.0.2"`.
        split: The training split, slicing allowed, e.g. `"train[:80%]"`.
        validation_split: A split for validation, e.g. `"train[80%:]"`; None holds out
            `val_split` of `split` instead.
        val_split: Fraction of each class of `split` held out for validation when
            `validation_split` is None (0: no validation set).
        data_dir: Where TFDS keeps its data (TFDS's default when None).
        image_size: Side of the square images, in pixels.
        crop_fraction: The evaluation transform's central crop, as a fraction of the shorter
            side: 0.875 (224 of 256 px) by default; the backbone's weights may want another
            (`tfresnet.models.eval_crop_fraction(backbone, weights)`).
        batch_size: Images per batch.
        augmentation: `"standard"`, `"randaugment"`, `"flip"` or `"none"` (see `from_folder`).
        randaugment_magnitude: RandAugment's strength on timm's 0-10 scale (see `augment`).
        randaugment_ops: RandAugment's operations per image.
        extra_augmentation: Called on each training batch (see `from_folder`).
        seed: Seeds the split, the shuffle and the augmentation (see `from_folder`).
        cache: True (memory), a directory path or False (see `from_folder`).
        drop_remainder: Drop the training set's last partial batch; the evaluation sets keep every image.

    Returns:
        An `ImageData`.

    Raises:
        ValueError: The dataset has no supervised image and `ClassLabel` keys, a split is
            empty, or an argument is invalid.

    Example:
        data = from_tfds("tf_flowers", split="train[:80%]", validation_split="train[80%:]")
        data.class_names
        # ['dandelion', 'daisy', 'tulips', 'sunflowers', 'roses']
    """
    settings = make_settings(
        crop_fraction=crop_fraction,
        image_size=image_size,
        batch_size=batch_size,
        val_split=val_split,
        augmentation=augmentation,
        randaugment=(randaugment_magnitude, randaugment_ops),
        extra_augmentation=extra_augmentation,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
    )
    info, class_names = _classification_info(name, data_dir)
    train, validation, held_out = _parts(
        name, info, split, validation_split, data_dir=data_dir, val_split=val_split, seed=seed
    )
    return assemble(
        train,
        validation,
        class_names=class_names,
        settings=settings,
        fingerprint=cache_fingerprint(
            cache, info.full_name, split, validation_split, data_dir, held_out, image_size
        ),
        data_fingerprint=fingerprint_of(info.full_name, split, validation_split, held_out),
        shuffle_buffer=TFDS_SHUFFLE_BUFFER,
    )


def _classification_info(name: str, data_dir: str | os.PathLike | None) -> tuple[DatasetInfo, list[str]]:
    """The dataset's info and class names, checked: (image, `ClassLabel`) supervised keys, two classes."""
    import tensorflow_datasets as tfds

    info = tfds.builder(name, data_dir=data_dir).info
    keys = info.supervised_keys
    features = info.features
    if not (
        isinstance(keys, tuple) and len(keys) == 2 and isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"TFDS dataset {name!r} has no (image, ClassLabel) supervised keys. Received: "
            f"supervised_keys={keys!r}. Use a classification dataset, or from_arrays."
        )
    class_names = list(features[keys[1]].names)
    check_class_count(class_names, f"TFDS dataset {name!r}")
    return info, class_names


def _parts(
    name: str,
    info: DatasetInfo,
    split: str,
    validation_split: str | None,
    *,
    data_dir: str | os.PathLike | None,
    val_split: float,
    seed: int | None,
) -> tuple[Part, Part | None, np.ndarray | None]:
    """The training and validation parts, and the indices of `split` held out for validation.

    The validation part reads `validation_split` when given, else a stratified `val_split` of
    `split` (None when `val_split` is 0); the held-out indices are None unless so split.
    """
    pairs, labels = _read_split(name, info, split, data_dir)
    if validation_split is not None:
        val_pairs, val_labels = _read_split(name, info, validation_split, data_dir)
        return Part(pairs, tf.identity, labels), Part(val_pairs, tf.identity, val_labels), None
    if not val_split:
        return Part(pairs, tf.identity, labels), None, None
    train_index, held_out = stratified_split(labels, val_split, seed)
    train = Part(_select(pairs, train_index, len(labels)), tf.identity, labels[train_index])
    validation = Part(_select(pairs, held_out, len(labels)), tf.identity, labels[held_out])
    return train, validation, held_out


def _read_split(
    name: str, info: DatasetInfo, which: str, data_dir: str | os.PathLike | None
) -> tuple[tf.data.Dataset, np.ndarray]:
    """A split's `(image, int32 label)` pairs, in order, and its labels, read without decoding images."""
    import tensorflow_datasets as tfds

    image_key, label_key = info.supervised_keys
    records = tfds.load(
        name,
        split=which,
        data_dir=data_dir,
        shuffle_files=False,
        decoders=tfds.decode.PartialDecoding({label_key: True}),
    )
    batches = records.map(lambda record: record[label_key]).batch(4096)
    labels = np.concatenate([np.zeros(0, np.int32), *batches.as_numpy_iterator()])
    if len(labels) == 0:
        raise ValueError(
            f"Split {which!r} of TFDS dataset {name!r} is empty. Pick a split with examples, e.g. 'train'."
        )
    skip_decoding = isinstance(info.features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if skip_decoding else None
    pairs = tfds.load(
        name, split=which, data_dir=data_dir, shuffle_files=False, as_supervised=True, decoders=decoders
    )
    pairs = pairs.map(lambda image, label: (image, tf.cast(label, tf.int32)))
    return pairs, labels.astype(np.int32)


def _select(pairs: tf.data.Dataset, index: np.ndarray, total: int) -> tf.data.Dataset:
    keep = np.zeros(total, dtype=bool)
    keep[index] = True
    keep = tf.constant(keep)
    chosen = pairs.enumerate().filter(lambda position, pair: keep[position])
    return chosen.map(lambda position, pair: pair)
