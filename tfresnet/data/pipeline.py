"""What the loaders share: `ImageData`, the checked settings, and the tf.data pipeline that
turns a set of items and labels into shuffled, transformed, cached and batched datasets, with
the stratified split and the class-count check (the file caches: `tfresnet.data.cache`)."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfresnet import internals
from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS, check_randaugment, randaugment
from tfresnet.data.cache import cached
from tfresnet.data.image_size import MAX_IMAGE_PIXELS
from tfresnet.data.transforms import (
    CROP_FRACTION,
    check_crop_fraction,
    check_positive_int,
    eval_transform,
    train_transform,
)

# "standard": random resized crop and flip; "randaugment": those, then RandAugment (see augment).
AUGMENTATIONS = ("none", "flip", "standard", "randaugment")
# The loaders' defaults, which the command's flags take too.
IMAGE_SIZE = 224
BATCH_SIZE = 32
VAL_SPLIT = 0.2
AUGMENTATION = "standard"
# The training transforms that crop every image afresh at random (from the encoded file).
RANDOM_CROP_AUGMENTATIONS = ("standard", "randaugment")


@dataclasses.dataclass
class ImageData:
    """What every loader returns: the batched datasets and the facts a trainer needs.

    Attributes:
        train: Batches of `(images, labels)` for training, shuffled and augmented.
        validation: Batches for evaluation (evaluation transform, in source order), or
            None when there is no validation set.
        class_names: Class names; label `i` is `class_names[i]`. Save them with the model.
        class_counts: Training images per class, indexed by label (for class weights).
        num_train: Training images (before batching).
        num_validation: Validation images (before batching); 0 without a validation set.
        image_size: Side of the square images, in pixels.
        crop_fraction: The side of the evaluation transform's central crop, as a fraction
            of the shorter side (see `decode_for_eval`); the export serves with it.
        skipped: Files left out because they cannot be used (empty, truncated, corrupt,
            not an image, a BMP bit depth TensorFlow misreads), mapped to the reason; none
            is counted in `num_train` or `num_validation`.
        batch_size: Images per batch (None when unknown).
        train_evaluation: The training images under the evaluation transform, in source
            order, neither shuffled nor augmented (the same batches on every pass): what the
            search computes features of, and what a run without a validation set is
            evaluated on.
        fingerprint: What the data is, as a hash (see `fingerprint_of`): each file's path
            (relative to its folder), size, label and set; a TFDS dataset's name, version and
            splits; arrays' bytes. A resumed run checks that it trains on the same data.
        files: The image files of each set (`"train"`, `"validation"`), in the order its
            evaluation batches come (`train_evaluation`, `validation`): what the report and the
            label check name images by. Empty for arrays and TFDS.
        multi_label: Several labels per image: labels are float32 multi-hot rows
            `(batch, len(class_names))` (an image may have none), and `class_counts` counts
            the training images that have each label.
        train_shard: For data read from files, `train_shard(index, count, batch_size)` builds
            one pass of worker `index` of `count` over its share of the training files (see
            `shard_part`), read and decoded from those files only, shuffled and augmented as
            `train` is, in batches of `batch_size`: what each worker of a multi-worker run
            trains on. None for arrays and TFDS, which every worker reads whole.

    Example:
        data = from_folder("flowers/", image_size=224, seed=0)
        data.class_names, data.num_train, data.num_validation
        # (['daisy', 'roses', 'tulips'], 240, 60)
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    class_names: list[str]
    class_counts: list[int]
    num_train: int
    num_validation: int
    image_size: int
    crop_fraction: float = CROP_FRACTION
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None
    train_evaluation: tf.data.Dataset | None = None
    fingerprint: str = ""
    files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    multi_label: bool = False
    train_shard: Callable[[int, int, int], tf.data.Dataset] | None = dataclasses.field(
        default=None, repr=False
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The loader arguments that shape the pipeline, checked by `make_settings`."""

    image_size: int
    crop_fraction: float
    batch_size: int
    augmentation: str
    randaugment: tuple[float, int]
    max_image_pixels: int
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None
    seed: int | None
    cache: bool | str | os.PathLike
    drop_remainder: bool
    strict: bool


@dataclasses.dataclass(frozen=True)
class Part:
    """One set before its transforms: `items` yields cheap `(item, label)` pairs to shuffle,
    `load` turns an item into encoded bytes or decoded pixels; `labels` are class indices, or
    multi-hot rows for multi-label data; `paths` names the image files of a part read from
    files (None otherwise)."""

    items: tf.data.Dataset
    load: Callable[[tf.Tensor], tf.Tensor]
    labels: np.ndarray
    paths: list[str] | None = None


def make_settings(
    *,
    image_size: int,
    batch_size: int,
    val_split: float,
    augmentation: str,
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None,
    seed: int | None,
    cache: bool | str | os.PathLike,
    drop_remainder: bool,
    strict: bool = False,
    randaugment: tuple[float, int] = (RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS),
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    crop_fraction: float = CROP_FRACTION,
) -> Settings:
    """Checks the loader arguments every loader takes, raising a ValueError naming a bad one."""
    check_positive_int("image_size", image_size)
    crop_fraction = check_crop_fraction(crop_fraction)
    check_positive_int("batch_size", batch_size)
    if not (isinstance(val_split, (int, float)) and 0 <= val_split < 1):
        raise ValueError(
            f"val_split is the fraction of images held out for validation, in [0, 1) "
            f"(0: no validation set). Received: val_split={val_split!r}"
        )
    if augmentation not in AUGMENTATIONS:
        allowed = ", ".join(repr(name) for name in AUGMENTATIONS)
        raise ValueError(
            f"Unknown augmentation. Expected one of {allowed}. Received: augmentation={augmentation!r}"
        )
    check_randaugment(*randaugment)
    check_positive_int("max_image_pixels", max_image_pixels)
    if extra_augmentation is not None and not callable(extra_augmentation):
        raise ValueError(
            f"extra_augmentation must be a callable on a batch of images, or "
            f"None. Received: extra_augmentation={extra_augmentation!r}"
        )
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer or None. Received: seed={seed!r}")
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"cache must be True (memory), False or a directory path. Received: cache={cache!r}")
    return Settings(
        image_size,
        crop_fraction,
        batch_size,
        augmentation,
        tuple(randaugment),
        int(max_image_pixels),
        extra_augmentation,
        seed,
        cache,
        bool(drop_remainder),
        bool(strict),
    )


def assemble(
    train: Part,
    validation: Part | None,
    *,
    class_names: Sequence[str],
    settings: Settings,
    fingerprint: str,
    data_fingerprint: str,
    skipped: dict[str, str] | None = None,
    shuffle_buffer: int | None = None,
) -> ImageData:
    """Builds the batches of the training and validation parts into an `ImageData`.

    `fingerprint` names the file caches (see `cache_fingerprint`), `data_fingerprint` is what
    the data is (`ImageData.fingerprint`); `shuffle_buffer` bounds the training shuffle buffer
    (None: the whole set).
    """
    parts = {"train": train, "validation": validation}
    # A file cache holds evaluation-transformed images: another crop is another cache.
    crop = f"-crop{settings.crop_fraction:.4f}" if settings.crop_fraction != CROP_FRACTION else ""
    if settings.drop_remainder and len(train.labels) < settings.batch_size:
        raise ValueError(
            f"With drop_remainder=True, the {len(train.labels)} training images make no full "
            f"batch of batch_size={settings.batch_size}; lower batch_size."
        )
    datasets = {
        name: _pipeline(
            part,
            training=name == "train",
            settings=settings,
            cache_name=f"{name}-{fingerprint}{crop}",
            shuffle_buffer=shuffle_buffer,
        )
        for name, part in parts.items()
        if part is not None
    }
    train_evaluation = _pipeline(
        train,
        training=False,
        settings=settings,
        cache_name=f"train-evaluation-{fingerprint}{crop}",
        shuffle_buffer=None,
    )
    multi_label = train.labels.ndim == 2
    if multi_label:
        counts = (train.labels > 0).sum(axis=0)
    else:
        counts = np.bincount(train.labels, minlength=len(class_names))
    return ImageData(
        train=datasets["train"],
        validation=datasets.get("validation"),
        class_names=list(class_names),
        class_counts=[int(count) for count in counts],
        num_train=len(train.labels),
        num_validation=0 if validation is None else len(validation.labels),
        image_size=settings.image_size,
        crop_fraction=settings.crop_fraction,
        skipped=dict(skipped or {}),
        batch_size=settings.batch_size,
        train_evaluation=train_evaluation,
        fingerprint=data_fingerprint,
        files={
            name: part.paths for name, part in parts.items() if part is not None and part.paths is not None
        },
        multi_label=multi_label,
        train_shard=None
        if train.paths is None
        else functools.partial(_train_shard, train, settings, f"train-{fingerprint}{crop}", shuffle_buffer),
    )


def shard_part(part: Part, index: int, count: int) -> Part:
    """Share `index` of `count` of a part: every `count`-th item from `index` (a class-sorted
    list gives each share its classes' proportions), taken before anything is loaded, and
    padded with its own first items to `ceil(len / count)` items, as many as every share.

    Example:
        shard_part(part, 1, 2).labels  # of a part of 6 labels: labels 1, 3 and 5
    """
    total = len(part.labels)
    if not (isinstance(count, (int, np.integer)) and 1 <= count <= total and 0 <= index < count):
        raise ValueError(
            f"A share of {total} items needs 0 <= index < count <= {total}. Received: {index=}, {count=}"
        )
    chosen = np.resize(np.arange(index, total, count), -(-total // count))
    return Part(
        items=part.items.shard(count, index).repeat().take(len(chosen)),
        load=part.load,
        labels=part.labels[chosen],
        paths=None if part.paths is None else [part.paths[position] for position in chosen],
    )


def _train_shard(
    part: Part,
    settings: Settings,
    cache_name: str,
    shuffle_buffer: int | None,
    index: int,
    count: int,
    batch_size: int,
) -> tf.data.Dataset:
    """The training pipeline of share `index` of `count` (see `ImageData.train_shard`), its random
    draws seeded apart per share."""
    check_positive_int("batch_size", batch_size)
    seed = None if settings.seed is None else int(settings.seed) + index
    share = dataclasses.replace(settings, batch_size=batch_size, seed=seed)
    name = f"{cache_name}-share{index}of{count}"
    return _pipeline(
        shard_part(part, index, count),
        training=True,
        settings=share,
        cache_name=name,
        shuffle_buffer=shuffle_buffer,
    )


def stratified_split(labels: np.ndarray, val_split: float, seed: int | None):
    """Indices `(train, validation)` holding out `val_split` of every class, in order.

    Each class keeps at least one training image. A seed of None splits as seed 0 does, so
    the split is the same in every run and validation images never leak into training.
    """
    rng = np.random.default_rng(0 if seed is None else seed)
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(int(len(members) * val_split + 0.5), len(members) - 1)
        held_out.append(rng.permutation(members)[:count])
    validation = np.sort(np.concatenate(held_out))
    if len(validation) == 0:
        raise ValueError(
            f"val_split={val_split} holds out no image: the largest class has only "
            f"{np.bincount(labels).max()} images. Add images, raise val_split or pass val_split=0."
        )
    return np.setdiff1d(np.arange(len(labels)), validation), validation


def check_class_count(class_names: Sequence[str], where: str) -> None:
    """Raises a ValueError unless there are at least two classes, each name on one line (the
    exports keep them one a line in `labels.txt`); `where` names their source."""
    broken = next((name for name in class_names if "\n" in name or "\r" in name), None)
    if broken is not None:
        raise ValueError(
            f"The class name {broken!r} in {where} holds a line break: the exports keep class names "
            f"one a line in labels.txt. Rename that class (folder or label) without line breaks."
        )
    if len(class_names) < 2:
        raise ValueError(
            f"Found a single class, {class_names[0]!r}, in {where}; a classifier needs at "
            f"least two. Add images of another class."
        )


def _pipeline(
    part: Part, *, training: bool, settings: Settings, cache_name: str, shuffle_buffer: int | None
) -> tf.data.Dataset:
    """Builds one set's batches.

    `standard` (and `randaugment`) training decodes a fresh random crop of every file each
    epoch: caching would have to hold whole decoded images, so nothing is cached. Every other
    set decodes with the evaluation transform, which is the same every epoch: those images are
    cached as uint8
    (a quarter of float32's memory), then shuffled and flipped at random if training.
    Random ops are stateless, seeded per element from a seeded stream, so one seed gives the
    same batches, augmentation included, whatever the parallelism (RandAugment's draws excepted:
    see `augment`) and whatever TensorFlow's global seed (`internals.global_seed`). Only the training set
    drops a last partial batch (with `drop_remainder`), and only the training set
    skips an image that fails to decode (see `_skip_errors`): the other sets raise, so that
    they never hold an image twice.
    """
    with internals.global_seed(settings.seed):  # one seed, one set of batches, whatever ran before
        return _batches(part, training, settings, cache_name, shuffle_buffer)


def _batches(
    part: Part, training: bool, settings: Settings, cache_name: str, buffer: int | None
) -> tf.data.Dataset:
    size, pixels, crop = settings.image_size, settings.max_image_pixels, settings.crop_fraction
    autotune = tf.data.AUTOTUNE
    buffer = min(buffer or len(part.labels), len(part.labels))
    seeds = tf.data.Dataset.random(seed=settings.seed, rerandomize_each_iteration=True).batch(2)
    if training and settings.augmentation in RANDOM_CROP_AUGMENTATIONS:
        dataset = part.items.shuffle(buffer, seed=settings.seed, reshuffle_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, seed: (train_transform(part.load(pair[0]), seed, size, pixels), pair[1]),
            num_parallel_calls=autotune,
        )
        dataset = _skip_errors(dataset, len(part.labels), settings.strict)
        if settings.augmentation == "randaugment":
            magnitude, ops = settings.randaugment
            augment = randaugment(settings.seed, magnitude=magnitude, ops=ops)
            dataset = dataset.map(lambda image, label: (augment(image), label), num_parallel_calls=autotune)
    else:
        dataset = part.items.map(
            lambda item, label: (
                tf.cast(eval_transform(part.load(item), size, pixels, crop), tf.uint8),
                label,
            ),
            num_parallel_calls=autotune,
        )
        if training:
            dataset = _skip_errors(dataset, len(part.labels), settings.strict)
        dataset = cached(dataset, settings.cache, cache_name)
        if training:
            dataset = dataset.shuffle(buffer, seed=settings.seed, reshuffle_each_iteration=True)
        dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32), label))
        if training and settings.augmentation == "flip":
            dataset = tf.data.Dataset.zip((dataset, seeds)).map(
                lambda pair, seed: (tf.image.stateless_random_flip_left_right(pair[0], seed), pair[1]),
                num_parallel_calls=autotune,
            )
    dataset = dataset.batch(settings.batch_size, drop_remainder=training and settings.drop_remainder)
    if training and settings.extra_augmentation is not None:
        augment = settings.extra_augmentation
        dataset = dataset.map(
            lambda images, labels: (tf.cast(augment(images), tf.float32), labels),
            num_parallel_calls=autotune,
        )
    return dataset.prefetch(autotune)


def _skip_errors(dataset: tf.data.Dataset, count: int, strict: bool) -> tf.data.Dataset:
    """The training set's safety net for files that pass the listing check yet fail to decode
    (changed since), so that an epoch never stops on one file.

    The error is logged and the element dropped. Each epoch still yields `count` elements (a
    known length for Keras's progress and schedules): a dropped element is replaced by the
    first of the next pass, which suits training only; evaluation sets raise instead. With
    `strict`, errors raise.
    """
    if strict:
        return dataset
    return dataset.ignore_errors(log_warning=True).repeat().take(count)
