"""Image folders: `from_folder` lists one sub-folder of images per class (locally or on a store,
`gs://bucket/photos`), checks that every file decodes (`tfresnet.data.file_check`: signature,
bit depth, then a decode as the pipeline's, the results kept between runs), skips
and reports the bad ones, and splits the rest."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from tfresnet import paths as fs
from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
from tfresnet.data.cache import cache_fingerprint, fingerprint_of
from tfresnet.data.file_check import IMAGE_EXTENSIONS, check_files
from tfresnet.data.image_size import MAX_IMAGE_PIXELS
from tfresnet.data.listing import class_folders, list_files
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


def from_folder(
    directory: str | os.PathLike,
    *,
    image_size: int = IMAGE_SIZE,
    crop_fraction: float = CROP_FRACTION,
    batch_size: int = BATCH_SIZE,
    val_split: float = VAL_SPLIT,
    validation_directory: str | os.PathLike | None = None,
    augmentation: str = AUGMENTATION,
    randaugment_magnitude: float = RANDAUGMENT_MAGNITUDE,
    randaugment_ops: int = RANDAUGMENT_OPS,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int | None = None,
    cache: bool | str | os.PathLike = True,
    drop_remainder: bool = False,
    strict: bool = False,
) -> ImageData:
    """Loads a folder holding one sub-folder of images per class.

    The layout is that of `keras.utils.image_dataset_from_directory`: class names are the
    sub-folder names, sorted; images may sit in nested folders; hidden files and folders
    are ignored. JPEG, PNG, BMP (24- and 32-bit) and GIF (first frame) are read; grayscale,
    RGBA and palette images become RGB.

    Bad files are found when listing: each file is read once and decoded with
    TensorFlow's decoders, as the pipeline decodes it (JPEGs at an eighth of
    their size, which reads all their data for a third of the work; the check costs at
    most one epoch's decoding, once; its result for each file is kept between runs, so a
    later run or a `--resume` checks only the files added or changed since: see
    `tfresnet.data.check_cache`). Empty, truncated or corrupt files, files of
    another format and BMPs other than 24- and 32-bit are skipped, reported in one warning
    and listed in `ImageData.skipped` with the reason (with `strict=True`, a ValueError
    names them instead), so `num_train` and `num_validation` count exactly the images the
    datasets yield. A training file that fails later anyway (changed after listing) is
    dropped with a logged error and another training image takes its place, so every epoch
    keeps `num_train` images; the validation and evaluation sets are never padded: there,
    such a file raises.

    Args:
        directory: The folder of class sub-folders: local, or on any file system TensorFlow
            reads (`gs://bucket/photos`).
        image_size: Side of the square images, in pixels.
        crop_fraction: The evaluation transform's central crop, as a fraction of the shorter
            side: 0.875 (224 of 256 px) by default; the backbone's weights may want another
            (`tfresnet.models.eval_crop_fraction(backbone, weights)`).
        batch_size: Images per batch.
        val_split: Fraction of each class held out for validation (0: no validation set).
            The split is stratified and depends only on the files and `seed`. Ignored when
            `validation_directory` is given.
        validation_directory: A folder with the same class sub-folders, for validation.
        augmentation: `"standard"` (random resized crop and flip), `"randaugment"` (those,
            then RandAugment at `randaugment_magnitude`, see `tfresnet.data.augment`), `"flip"` (evaluation
            transform and random flip) or `"none"` (evaluation transform).
        randaugment_magnitude: RandAugment's strength on timm's 0-10 scale (see `augment`).
        randaugment_ops: RandAugment's operations per image.
        max_image_pixels: The largest image read, in pixels, from its header before decoding
            (default PIL's cap, about 89 megapixels); a larger file is skipped as unreadable.
        extra_augmentation: Called on each training batch of float32 images after the
            augmentation above (e.g. Keras random layers given a seed); must return float32
            pixel values in [0, 255].
        seed: Seeds the split, the shuffle and the augmentation: one seed gives identical
            batches. None shuffles and augments differently in each run (the split is that
            of seed 0).
        cache: True caches the evaluation-transform images in memory, a directory path
            caches them on disk (file names encode the files listed and the image size;
            a cache a killed run left half-written is filled anew), False caches nothing.
            Training with `"standard"` or `"randaugment"` caches nothing: it decodes a
            fresh random crop each epoch.
        drop_remainder: Drop the training set's last partial batch (for static shapes under a
            distribution strategy); the evaluation sets keep every image.
        strict: Raise a ValueError naming the bad files instead of skipping them.

    Returns:
        An `ImageData`.

    Raises:
        FileNotFoundError: `directory` or `validation_directory` does not exist.
        ValueError: No class sub-folders, a class without readable images, a single class,
            different classes in the two folders, or an invalid argument.

    Example:
        data = from_folder("flowers/", image_size=224, batch_size=32, seed=0)
        data.class_names
        # ['daisy', 'roses', 'tulips']
        images, labels = next(iter(data.train))
        images.shape, labels.dtype
        # (TensorShape([32, 224, 224, 3]), tf.int32)
    """
    settings = make_settings(
        crop_fraction=crop_fraction,
        image_size=image_size,
        batch_size=batch_size,
        val_split=val_split,
        augmentation=augmentation,
        randaugment=(randaugment_magnitude, randaugment_ops),
        max_image_pixels=max_image_pixels,
        extra_augmentation=extra_augmentation,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
        strict=strict,
    )
    class_names, train, validation, skipped, listed, rows = _folder_parts(
        directory,
        validation_directory,
        val_split=val_split,
        seed=seed,
        strict=strict,
        max_image_pixels=max_image_pixels,
    )
    return assemble(
        train,
        validation,
        class_names=class_names,
        settings=settings,
        fingerprint=cache_fingerprint(cache, listed, validation_directory, val_split, seed, image_size),
        data_fingerprint=fingerprint_of(sorted(rows)),
        skipped=skipped,
    )


def _folder_parts(
    directory: str | os.PathLike,
    validation_directory: str | os.PathLike | None,
    *,
    val_split: float,
    seed: int | None,
    strict: bool,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[list[str], Part, Part | None, dict[str, str], list[tuple[str, int, int]], list[tuple]]:
    """Class names, training and validation parts, skipped files, every file listed with its
    size and modification time (`path_stats`), and their `file_rows`.

    The validation part is `validation_directory`'s files when given, else a stratified
    `val_split` of `directory`'s (None when `val_split` is 0).
    """
    listing = read_folder(directory, strict=strict, max_image_pixels=max_image_pixels)
    paths, labels = listing.paths, listing.labels
    if validation_directory is None:
        in_validation = np.zeros(len(paths), dtype=bool)
        if not val_split:
            rows = file_rows(directory, paths, labels, in_validation, sizes=listing.stats[:, 0])
            return listing.class_names, file_part(paths, labels), None, listing.skipped, _stats(listing), rows
        train_index, val_index = stratified_split(labels, val_split, seed)
        in_validation[val_index] = True
        train = file_part(paths[train_index], labels[train_index])
        validation = file_part(paths[val_index], labels[val_index])
        rows = file_rows(directory, paths, labels, in_validation, sizes=listing.stats[:, 0])
        return listing.class_names, train, validation, listing.skipped, _stats(listing), rows
    held_out = read_folder(validation_directory, strict=strict, max_image_pixels=max_image_pixels)
    if held_out.class_names != listing.class_names:
        raise ValueError(
            f"The class sub-folders of {os.fspath(validation_directory)!r} differ from "
            f"those of {os.fspath(directory)!r}: {held_out.class_names} vs {listing.class_names}. "
            f"Give both folders the same sub-folders."
        )
    train, validation = file_part(paths, labels), file_part(held_out.paths, held_out.labels)
    skipped = {**listing.skipped, **held_out.skipped}
    rows = file_rows(directory, paths, labels, np.zeros(len(paths), dtype=bool), sizes=listing.stats[:, 0])
    rows += file_rows(
        validation_directory,
        held_out.paths,
        held_out.labels,
        np.ones(len(held_out.paths), dtype=bool),
        sizes=held_out.stats[:, 0],
    )
    return listing.class_names, train, validation, skipped, _stats(listing) + _stats(held_out), rows


def _stats(listing: FolderListing) -> list[tuple[str, int, int]]:
    return path_stats(listing.paths, listing.stats)


def path_stats(paths: np.ndarray, stats: np.ndarray) -> list[tuple[str, int, int]]:
    """`(path, size, modification time)` of each file, from the listing's measures
    (`listing.list_files`): what tells a stale file cache.

    Example:
        path_stats(np.array(["flowers/roses/1.jpg"]), np.array([[48213, 1733000000123456789]]))
        # [('flowers/roses/1.jpg', 48213, 1733000000123456789)]
    """
    return [(str(path), int(size), int(mtime)) for path, (size, mtime) in zip(paths, stats)]


def file_rows(
    folder: str | os.PathLike,
    paths: np.ndarray,
    labels: np.ndarray,
    in_validation: np.ndarray,
    *,
    sizes: np.ndarray,
) -> list[tuple[str, int, int, bool]]:
    """`(path relative to folder, size, label, in validation)` per file: what the data is, for
    its fingerprint (a folder moved elsewhere keeps it; a renamed, resized or relabelled file
    does not). A multi-hot row stands as the tuple of its labels; `sizes` are the files' sizes,
    as listed.

    Example:
        file_rows("flowers/", np.array(["flowers/roses/1.jpg"]), np.array([1]), np.array([False]),
                  sizes=np.array([48213]))
        # [('roses/1.jpg', 48213, 1, False)]
    """
    return [
        (os.path.relpath(path, folder), int(size), _label_key(label), bool(held_out))
        for path, size, label, held_out in zip(paths, sizes, labels, in_validation)
    ]


def _label_key(label: np.ndarray) -> int | tuple[int, ...]:
    """A class index as an int, a multi-hot row as the tuple of its labels' indices."""
    if np.ndim(label) == 0:
        return int(label)
    return tuple(int(j) for j in np.flatnonzero(label))


def file_part(paths: np.ndarray, labels: np.ndarray) -> Part:
    """A part that reads each image file when the pipeline needs it."""
    items = tf.data.Dataset.from_tensor_slices((paths, labels))
    return Part(items=items, load=tf.io.read_file, labels=labels, paths=[str(path) for path in paths])


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """A folder of class folders, listed and checked: what `from_folder` loads and the dataset
    check reads.

    Attributes:
        class_names: The class folders' names, sorted; label `i` is `class_names[i]`.
        paths: The readable images' paths, class by class, each class's in sorted order.
        labels: Their labels (int32).
        skipped: The files left out (path: reason).
        stats: Each readable image's `(size, modification time in ns)`, as measured when
            listed (int64, shape `(images, 2)`).
    """

    class_names: list[str]
    paths: np.ndarray
    labels: np.ndarray
    skipped: dict[str, str]
    stats: np.ndarray


def list_folder(
    directory: str | os.PathLike, *, strict: bool, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, str]]:
    """Class names, image paths, labels and skipped files of a folder, checked (`read_folder`).

    Example:
        class_names, paths, labels, skipped = list_folder("flowers/", strict=False)
    """
    listing = read_folder(directory, strict=strict, max_image_pixels=max_image_pixels)
    return listing.class_names, listing.paths, listing.labels, listing.skipped


def read_folder(
    directory: str | os.PathLike, *, strict: bool, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> FolderListing:
    """The folder's class names, readable images, labels, skipped files and the images' sizes and
    times, every file checked (`check_files`, its results kept between runs).

    Example:
        listing = read_folder("flowers/", strict=False)
        listing.class_names, len(listing.paths)
        # (['daisy', 'roses'], 120)
    """
    directory = os.fspath(directory)
    if not fs.isdir(directory):
        raise FileNotFoundError(
            f"Image folder not found: {directory!r}. Pass a folder holding one sub-folder of "
            f"images per class."
        )
    class_names = class_folders(directory)
    if not class_names:
        raise ValueError(
            f"No class sub-folders in {directory!r}. Put the images of each class in a "
            f"sub-folder named after it, e.g. {os.path.join(directory, 'cats', '1.jpg')!r}."
        )
    candidates, stats = [], []
    for label, name in enumerate(class_names):
        found, measured = list_files(os.path.join(directory, name))
        candidates += [(path, label) for path in found]
        stats.append(measured)
    stats = np.concatenate(stats)
    listed = [path for path, _ in candidates]
    skipped = check_files(listed, where=directory, strict=strict, max_pixels=max_image_pixels, stats=stats)
    kept = np.array([path not in skipped for path in listed], dtype=bool)
    labels = np.array([label for (_, label), ok in zip(candidates, kept) if ok], dtype=np.int32)
    counts = np.bincount(labels, minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            bad = sum(path.startswith(os.path.join(directory, name, "")) for path in skipped)
            raise ValueError(
                f"Class folder {os.path.join(directory, name)!r} holds no readable images "
                f"({bad} files skipped). Add {', '.join(IMAGE_EXTENSIONS)} images to it or "
                f"remove it."
            )
    check_class_count(class_names, repr(directory))
    paths = np.array([path for path, ok in zip(listed, kept) if ok], dtype=str)
    return FolderListing(class_names, paths, labels, skipped, stats[kept])
