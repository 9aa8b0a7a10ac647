"""Image folders: `from_folder` lists one sub-folder of images per class, checks that every file
decodes (signature, bit depth, then a decode as the pipeline's, in threads), skips and reports
the bad ones, and splits the rest."""

from __future__ import annotations

import concurrent.futures
import os
import re
import warnings
from typing import Callable

import numpy as np
import tensorflow as tf

from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
from tfresnet.data.cache import cache_fingerprint, fingerprint_of
from tfresnet.data.image_size import MAX_IMAGE_PIXELS, image_pixels, size_error
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
from tfresnet.data.transforms import BMP_BITS, CROP_FRACTION

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Leading bytes of each format, and bytes found in the last 16 of a complete file (which
# tells a truncated file from a corrupt one).
FILE_SIGNATURES = {
    "JPEG": ((b"\xff\xd8\xff",), b"\xff\xd9"),
    "PNG": ((b"\x89PNG\r\n\x1a\n",), b"IEND"),
    "GIF": ((b"GIF87a", b"GIF89a"), b";"),
    "BMP": ((b"BM",), None),
}
# Files are checked in this many threads: reading is I/O bound (network disks), and
# TensorFlow's decoders release the GIL.
CHECK_THREADS = 16
# The check decodes JPEGs at this fraction of their size: libjpeg still reads all their
# data, so it fails where a full decode fails, for a fraction of the work.
CHECK_JPEG_RATIO = 8
# A warning or error lists this many bad files; `ImageData.skipped` holds them all.
REPORTED_FILES = 20


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
    TensorFlow's decoders, as the pipeline decodes it, in threads (JPEGs at an eighth of
    their size, which reads all their data for a third of the work; the check costs at
    most one epoch's decoding, once). Empty, truncated or corrupt files, files of
    another format and BMPs other than 24- and 32-bit are skipped, reported in one warning
    and listed in `ImageData.skipped` with the reason (with `strict=True`, a ValueError
    names them instead), so `num_train` and `num_validation` count exactly the images the
    datasets yield. A training file that fails later anyway (changed after listing) is
    dropped with a logged error and another training image takes its place, so every epoch
    keeps `num_train` images; the validation and evaluation sets are never padded: there,
    such a file raises.

    Args:
        directory: The folder of class sub-folders.
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
    stats = None if isinstance(cache, bool) else [file_stat(path) for path in listed]
    return assemble(
        train,
        validation,
        class_names=class_names,
        settings=settings,
        fingerprint=cache_fingerprint(cache, stats, validation_directory, val_split, seed, image_size),
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
) -> tuple[list[str], Part, Part | None, dict[str, str], list[str], list[tuple]]:
    """Class names, training and validation parts, skipped files, every file listed and its
    `file_rows`.

    The validation part is `validation_directory`'s files when given, else a stratified
    `val_split` of `directory`'s (None when `val_split` is 0).
    """
    class_names, paths, labels, skipped = list_folder(
        directory, strict=strict, max_image_pixels=max_image_pixels
    )
    if validation_directory is None:
        in_validation = np.zeros(len(paths), dtype=bool)
        if not val_split:
            rows = file_rows(directory, paths, labels, in_validation)
            return class_names, file_part(paths, labels), None, skipped, list(paths), rows
        train_index, val_index = stratified_split(labels, val_split, seed)
        in_validation[val_index] = True
        train = file_part(paths[train_index], labels[train_index])
        validation = file_part(paths[val_index], labels[val_index])
        rows = file_rows(directory, paths, labels, in_validation)
        return class_names, train, validation, skipped, list(paths), rows
    val_names, val_paths, val_labels, val_skipped = list_folder(
        validation_directory, strict=strict, max_image_pixels=max_image_pixels
    )
    if val_names != class_names:
        raise ValueError(
            f"The class sub-folders of {os.fspath(validation_directory)!r} differ from "
            f"those of {os.fspath(directory)!r}: {val_names} vs {class_names}. Give both "
            f"folders the same sub-folders."
        )
    train, validation = file_part(paths, labels), file_part(val_paths, val_labels)
    skipped.update(val_skipped)
    rows = file_rows(directory, paths, labels, np.zeros(len(paths), dtype=bool))
    rows += file_rows(validation_directory, val_paths, val_labels, np.ones(len(val_paths), dtype=bool))
    return class_names, train, validation, skipped, list(paths) + list(val_paths), rows


def file_rows(
    folder: str | os.PathLike, paths: np.ndarray, labels: np.ndarray, in_validation: np.ndarray
) -> list[tuple[str, int, int, bool]]:
    """`(path relative to folder, size, label, in validation)` per file: what the data is, for
    its fingerprint (a folder moved elsewhere keeps it; a renamed, resized or relabelled file
    does not). A multi-hot row stands as the tuple of its labels.

    Example:
        file_rows("flowers/", np.array(["flowers/roses/1.jpg"]), np.array([1]), np.array([False]))
        # [('roses/1.jpg', 48213, 1, False)]
    """
    return [
        (os.path.relpath(path, folder), os.path.getsize(path), _label_key(label), bool(held_out))
        for path, label, held_out in zip(paths, labels, in_validation)
    ]


def _label_key(label: np.ndarray) -> int | tuple[int, ...]:
    """A class index as an int, a multi-hot row as the tuple of its labels' indices."""
    if np.ndim(label) == 0:
        return int(label)
    return tuple(int(j) for j in np.flatnonzero(label))


def file_stat(path: str) -> tuple[str, int, int]:
    """A file's path, size and modification time: what tells a stale file cache."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def file_part(paths: np.ndarray, labels: np.ndarray) -> Part:
    """A part that reads each image file when the pipeline needs it."""
    items = tf.data.Dataset.from_tensor_slices((paths, labels))
    return Part(items=items, load=tf.io.read_file, labels=labels, paths=[str(path) for path in paths])


def list_folder(
    directory: str | os.PathLike, *, strict: bool, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, str]]:
    """Class names, image paths, labels and skipped files of a folder, checked."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Image folder not found: {directory!r}. Pass a folder holding one sub-folder of "
            f"images per class."
        )
    class_names = sorted(
        entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise ValueError(
            f"No class sub-folders in {directory!r}. Put the images of each class in a "
            f"sub-folder named after it, e.g. {os.path.join(directory, 'cats', '1.jpg')!r}."
        )
    candidates = [
        (path, label)
        for label, name in enumerate(class_names)
        for path in files_under(os.path.join(directory, name))
    ]
    skipped = check_files(
        [path for path, _ in candidates], where=directory, strict=strict, max_pixels=max_image_pixels
    )
    kept = [(path, label) for path, label in candidates if path not in skipped]
    counts = np.bincount([label for _, label in kept], minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            bad = sum(path.startswith(os.path.join(directory, name, "")) for path in skipped)
            raise ValueError(
                f"Class folder {os.path.join(directory, name)!r} holds no readable images "
                f"({bad} files skipped). Add {', '.join(IMAGE_EXTENSIONS)} images to it or "
                f"remove it."
            )
    check_class_count(class_names, repr(directory))
    paths = np.array([path for path, _ in kept], dtype=str)
    labels = np.array([label for _, label in kept], dtype=np.int32)
    return class_names, paths, labels, skipped


def files_under(folder: str, *, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """The files under `folder`, recursively, in sorted order, without hidden files and folders;
    with `suffixes`, only those whose lower-case name ends with one of them.

    Example:
        files_under("flowers/daisy", suffixes=IMAGE_EXTENSIONS)[:1]
        # ['flowers/daisy/1.jpg']
    """
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [
            os.path.join(root, name)
            for name in sorted(files)
            if not name.startswith(".") and (suffixes is None or name.lower().endswith(suffixes))
        ]
    return found


def check_files(
    paths: list[str], *, where: str, strict: bool, max_pixels: int = MAX_IMAGE_PIXELS
) -> dict[str, str]:
    """The files of `paths` that are not usable images, mapped to the reason, checked in
    threads; reported in one warning naming `where` (with `strict`, a ValueError)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:
        reasons = list(pool.map(lambda path: check_file(path, max_pixels=max_pixels), paths))
    skipped = {path: reason for path, reason in zip(paths, reasons) if reason}
    _report(skipped, where, strict)
    return skipped


def check_file(path: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why `path` is not a usable image, or None: measures it from its header (an image over
    `max_pixels` is refused undecoded), then reads it whole and
    decodes it."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not a {', '.join(IMAGE_EXTENSIONS)} file"
    try:
        with open(path, "rb") as file:
            contents = file.read()
    except OSError as error:
        return f"unreadable: {error.strerror}"
    if not contents:
        return "empty file"
    kind = next((kind for kind, (starts, _) in FILE_SIGNATURES.items() if contents.startswith(starts)), None)
    if kind is None:
        return "not a JPEG, PNG, GIF or BMP image"
    if kind == "BMP":
        bits = int.from_bytes(contents[28:30], "little")
        if bits not in BMP_BITS:
            return f"{bits}-bit BMP (only 24- and 32-bit BMP decode correctly)"
    too_large = size_error(image_pixels(path) or 0, max_pixels)
    if too_large:
        return too_large
    error = _decode_error(contents, kind)
    if error is None:
        return None
    return f"{'corrupt' if _looks_complete(contents, kind) else 'truncated'}: {error}"


def _decode_error(contents: bytes, kind: str) -> str | None:
    """TensorFlow's reason for failing to decode `contents`, or None when it decodes."""
    try:
        if kind == "JPEG":
            tf.io.decode_jpeg(contents, channels=3, ratio=CHECK_JPEG_RATIO)
        else:
            tf.io.decode_image(contents, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        # Drop the op's location and name around TensorFlow's message.
        return re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", error.message, flags=re.DOTALL) or "fails to decode"
    return None


def _looks_complete(contents: bytes, kind: str) -> bool:
    """Whether the file's end is there: its trailer, or the size a BMP header declares."""
    if kind == "BMP":
        return int.from_bytes(contents[2:6], "little") <= len(contents)
    return FILE_SIGNATURES[kind][1] in contents[-16:]


def _report(skipped: dict[str, str], directory: str, strict: bool) -> None:
    if not skipped:
        return
    listed = "; ".join(f"{path} ({reason})" for path, reason in list(skipped.items())[:REPORTED_FILES])
    more = len(skipped) - REPORTED_FILES
    listed += f"; and {more} more" if more > 0 else ""
    if strict:
        raise ValueError(
            f"{len(skipped)} files in {directory!r} are not readable images: {listed}. "
            f"Remove or replace them, or pass strict=False to skip them."
        )
    warnings.warn(
        f"Skipped {len(skipped)} files in {directory!r} that are not readable images: "
        f"{listed}. ImageData.skipped lists them.",
        stacklevel=6,  # the caller of from_folder or from_csv
    )
