"""Arrays in memory: `from_arrays` checks images and integer labels held in NumPy arrays, then
splits them and feeds them through the same transforms as files."""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
from tfresnet.data.cache import cache_fingerprint, fingerprint_of
from tfresnet.data.label_sets import iterative_split
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


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    val_split: float = VAL_SPLIT,
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
    multi_label: bool = False,
) -> ImageData:
    """Loads images and integer labels (or multi-hot label rows) held in memory.

    Images go through the same transforms as files: the evaluation transform crops the
    central square (`crop_fraction`) even of images already at `image_size`, as serving will.

    Args:
        images: `(N, H, W, 3)` RGB, `(N, H, W, 4)` RGBA or `(N, H, W[, 1])` gray images,
            uint8 or float, raw pixel values in [0, 255].
        labels: `(N,)` integer class indices; with `multi_label`, `(N, num_labels)` rows of
            0 and 1 (an image may have no label).
        class_names: Names of the classes, indexed by label; `["0", "1", ...]` up to the
            largest label (or the rows' length) when None.
        validation: `(images, labels)` for validation; None holds out `val_split` instead.
        val_split: Fraction of each class held out for validation when `validation` is None
            (0: no validation set).
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
        multi_label: Several labels per image (multi-hot `labels`); the split holds out
            `val_split` of every label as far as shared images allow (see
            `tfresnet.data.label_sets.iterative_split`).

    Returns:
        An `ImageData`.

    Raises:
        ValueError: Bad shapes, pixel values outside [0, 255] or all in [0, 1], labels out
            of range, a single class, or an invalid argument.

    Example:
        images = np.random.randint(0, 256, (100, 32, 32, 3), dtype="uint8")
        data = from_arrays(images, np.arange(100) % 2, image_size=32, seed=0)
        data.class_names, data.num_train, data.num_validation
        # (['0', '1'], 80, 20)
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
    images, labels = _check_arrays(images, labels, "images", "labels", multi_label)
    held = (
        ()
        if validation is None
        else _check_arrays(*validation, "validation[0]", "validation[1]", multi_label)
    )
    class_names = _class_names(class_names, labels, held[1] if held else None)
    train, val = _parts(images, labels, held, val_split=val_split, seed=seed)
    return assemble(
        train,
        val,
        class_names=class_names,
        settings=settings,
        fingerprint=cache_fingerprint(cache, images, labels, *held, val_split, seed, image_size),
        data_fingerprint=fingerprint_of(images, labels, *held, val_split, seed),
    )


def _class_names(
    class_names: Sequence[str] | None, labels: np.ndarray, val_labels: np.ndarray | None
) -> list[str]:
    """The class names as strings (`"0"` up to the largest label when None), checked against the labels."""
    if class_names is None and labels.ndim == 2:
        class_names = [str(label) for label in range(labels.shape[1])]
    if class_names is None:
        every = labels if val_labels is None else np.concatenate([labels, val_labels])
        largest = int(every.max())
        class_names = [str(label) for label in range(max(largest + 1, 1))]
    class_names = [str(name) for name in class_names]
    _check_labels(labels, len(class_names), "labels")
    if val_labels is not None:
        _check_labels(val_labels, len(class_names), "validation[1]")
    check_class_count(class_names, "the labels")
    return class_names


def _parts(
    images: np.ndarray, labels: np.ndarray, held: tuple, *, val_split: float, seed: int | None
) -> tuple[Part, Part | None]:
    """The training and validation parts: `held`'s `(images, labels)` for validation when given,
    else a stratified `val_split` of the images (None when `val_split` is 0)."""
    tensor = tf.constant(images)
    everything = np.arange(len(labels))
    if held:
        train = _array_part(tensor, everything, labels)
        val = _array_part(tf.constant(held[0]), np.arange(len(held[1])), held[1])
    elif val_split:
        split = iterative_split if labels.ndim == 2 else stratified_split
        train_index, val_index = split(labels, val_split, seed)
        train = _array_part(tensor, train_index, labels[train_index])
        val = _array_part(tensor, val_index, labels[val_index])
    else:
        train, val = _array_part(tensor, everything, labels), None
    return train, val


def _array_part(images: tf.Tensor, index: np.ndarray, labels: np.ndarray) -> Part:
    items = tf.data.Dataset.from_tensor_slices((index, labels))
    return Part(items=items, load=lambda position: tf.gather(images, position), labels=labels)


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"{where} has rows of {labels.shape[1]} labels for {num_classes} class names. Pass "
                f"class_names naming every column."
            )
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f"Labels must lie in [0, {num_classes}) for {num_classes} class names. Received: "
            f"{where}[{bad[0]}]={labels[bad[0]]}. Fix the label or pass class_names naming "
            f"every class."
        )


def _check_arrays(images, labels, images_name: str, labels_name: str, multi_label: bool = False):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or len(images) == 0:
        raise ValueError(
            f"{images_name} must be a non-empty (N, H, W, 3) RGB array (or N, H, W[, 1] gray, "
            f"N, H, W, 4 RGBA). Received: shape={images.shape}"
        )
    if images.dtype != np.uint8:
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise ValueError(
                f"{images_name} must be uint8 or float pixel values. Received: dtype={images.dtype}"
            )
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{images_name} must hold raw pixel values in [0, 255]. Received: values in "
                f"[{low:g}, {high:g}]."
            )
        if np.issubdtype(images.dtype, np.floating) and high <= 1:
            raise ValueError(
                f"{images_name} must hold raw pixel values in [0, 255], but all lie in [0, 1]. "
                f"Multiply them by 255."
            )
        images = images.astype(np.float32)
    if multi_label:
        return images, _check_multi_hot(labels, len(images), labels_name)
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        raise ValueError(
            f"{labels_name} must be {len(images)} integer class indices, one per image (rows of 0 "
            f"and 1 need multi_label=True). Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    return images, labels.astype(np.int32)


def _check_multi_hot(labels: np.ndarray, count: int, name: str) -> np.ndarray:
    """Multi-hot rows as float32, checked: one row per image, every value 0 or 1."""
    if labels.ndim != 2 or len(labels) != count or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"With multi_label=True, {name} must be {count} rows of 0 and 1, one per image and a "
            f"column per label. Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    if not labels.any():
        raise ValueError(
            f"With multi_label=True, {name} hold no label at all. Mark each image's labels with 1."
        )
    return labels.astype(np.float32)
