"""Labels from a CSV file: `from_csv` reads one line per image (its path, its label and
optionally its split), checks every file as `from_folder` does, and builds the same pipeline."""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from tfresnet import paths as fs
from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
from tfresnet.data.cache import cache_fingerprint, fingerprint_of
from tfresnet.data.check_cache import file_stats
from tfresnet.data.file_check import IMAGE_EXTENSIONS, check_files
from tfresnet.data.folder import file_part, file_rows, path_stats
from tfresnet.data.image_size import MAX_IMAGE_PIXELS
from tfresnet.data.label_sets import LABEL_DELIMITER, iterative_split, multi_hot, read_label_sets
from tfresnet.data.pipeline import (
    AUGMENTATION,
    BATCH_SIZE,
    IMAGE_SIZE,
    VAL_SPLIT,
    ImageData,
    assemble,
    check_class_count,
    make_settings,
    stratified_split,
)
from tfresnet.data.transforms import CROP_FRACTION

# A column of this name, when the CSV has one, puts each image in training or validation.
SPLIT_COLUMN = "split"
# The values of the split column (any case), mapped to "in validation".
SPLIT_VALUES = {"train": False, "validation": True, "valid": True, "val": True}


@dataclasses.dataclass(frozen=True)
class CsvListing:
    """The images a CSV lists, checked: what `from_csv` loads and the dataset check reads.

    Attributes:
        class_names: The distinct labels, sorted; label `i` is `class_names[i]`.
        paths: The readable images' paths, in the CSV's order.
        labels: Their labels (int32), or float32 multi-hot rows `(images, labels)` when
            `multi_label`.
        in_validation: Whether each image is in the validation set.
        skipped: The files left out (path: reason).
        image_dir: The folder the CSV's relative paths are resolved in.
        split_column: Whether the CSV's split column decided `in_validation`.
        multi_label: Whether each image has a set of labels (see `from_csv`).
        stats: Each readable image's `(size, modification time in ns)`, as measured when
            listed (int64, shape `(images, 2)`).
    """

    class_names: list[str]
    paths: np.ndarray
    labels: np.ndarray
    in_validation: np.ndarray
    skipped: dict[str, str]
    image_dir: str
    split_column: bool
    multi_label: bool = False
    stats: np.ndarray | None = None


def from_csv(
    csv_path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
    image_size: int = IMAGE_SIZE,
    crop_fraction: float = CROP_FRACTION,
    batch_size: int = BATCH_SIZE,
    val_split: float = VAL_SPLIT,
    augmentation: str = AUGMENTATION,
    randaugment_magnitude: float = RANDAUGMENT_MAGNITUDE,
    randaugment_ops: int = RANDAUGMENT_OPS,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int | None = None,
    cache: bool | str | os.PathLike = True,
    drop_remainder: bool = False,
    strict: bool = False,
    multi_label: bool = False,
    label_delimiter: str = LABEL_DELIMITER,
) -> ImageData:
    """Loads the images a CSV file lists, with their labels.

    The CSV (UTF-8, a byte-order mark is fine) starts with a header line naming its columns;
    each further line is one image. Values are stripped of surrounding spaces; blank lines
    are ignored. Paths are relative to `image_dir`, or to the CSV's folder without it;
    absolute paths and URLs (`gs://bucket/cats/1.jpg`) stay as they are. Class names are the
    distinct labels, sorted as strings, and labels are their indices, as with `from_folder`.
    A `split` column, when there is one, decides the split (`train`, or `validation` / `valid`
    / `val`, in any case) and `val_split` is ignored. Files that are missing or not usable
    images are skipped, reported in one warning and listed in `ImageData.skipped` with the
    reason, as `from_folder` does (the check's results kept between runs likewise); the images
    are then read, transformed, cached and batched by the same pipeline.

    With `multi_label`, each label cell lists an image's labels separated by `label_delimiter`
    (`"clear primary road"`); an empty cell is an image with no label (every label negative).
    Class names are the distinct labels, sorted; labels are float32 multi-hot rows; the split
    holds out `val_split` of every label's images as far as images shared between labels
    allow (iterative stratification: `tfresnet.data.label_sets.iterative_split`).

    Args:
        csv_path: The CSV file: local, or on any file system TensorFlow reads (`gs://...`),
            as may be its image paths and `image_dir`.
        image_dir: The folder the CSV's relative paths start from (default: the CSV's folder).
        path_column: The column holding the image paths.
        label_column: The column holding the labels.
        image_size: Side of the square images, in pixels.
        crop_fraction: The evaluation transform's central crop, as a fraction of the shorter
            side: 0.875 (224 of 256 px) by default; the backbone's weights may want another
            (`tfresnet.models.eval_crop_fraction(backbone, weights)`).
        batch_size: Images per batch.
        val_split: Fraction of each class held out for validation (0: no validation set),
            as `from_folder` splits; ignored when the CSV has a `split` column.
        augmentation: As `from_folder`'s (`"standard"`, `"flip"`, `"none"`, ...).
        randaugment_magnitude: RandAugment's strength on timm's 0-10 scale (see `augment`).
        randaugment_ops: RandAugment's operations per image.
        max_image_pixels: The largest image read, in pixels, from its header before decoding
            (default PIL's cap, about 89 megapixels); a larger file is skipped as unreadable.
        extra_augmentation: Called on each training batch of float32 images after the
            augmentation above; must return float32 pixel values in [0, 255].
        seed: Seeds the split, the shuffle and the augmentation (None: the split of seed 0,
            a different shuffle in each run).
        cache: True caches in memory, a directory path on disk, False not at all.
        drop_remainder: Drop the training set's last partial batch.
        strict: Raise a ValueError naming the unusable files instead of skipping them.
        multi_label: Several labels per image, in one cell (see above).
        label_delimiter: What separates an image's labels in its cell with `multi_label`.

    Returns:
        An `ImageData`.

    Raises:
        FileNotFoundError: `csv_path` or `image_dir` does not exist.
        ValueError: An empty CSV, a missing column, an empty path or label, an unknown split,
            a single class, a class without readable (training) images, no readable image at
            all, or an invalid argument.

    Example:
        data = from_csv("labels.csv", image_dir="photos/", image_size=224, seed=0)
        data.class_names
        # ['cat', 'dog']
        images, labels = next(iter(data.train))
        images.shape
        # TensorShape([32, 224, 224, 3])
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
    listing = list_csv(
        csv_path,
        image_dir=image_dir,
        path_column=path_column,
        label_column=label_column,
        val_split=val_split,
        seed=seed,
        strict=strict,
        max_image_pixels=max_image_pixels,
        multi_label=multi_label,
        label_delimiter=label_delimiter,
    )
    paths, labels, held_out = listing.paths, listing.labels, listing.in_validation
    validation = file_part(paths[held_out], labels[held_out]) if held_out.any() else None
    stats = path_stats(paths, listing.stats)
    rows = file_rows(listing.image_dir, paths, labels, held_out, sizes=listing.stats[:, 0])
    return assemble(
        file_part(paths[~held_out], labels[~held_out]),
        validation,
        class_names=listing.class_names,
        settings=settings,
        fingerprint=cache_fingerprint(cache, stats, labels, held_out, image_size),
        data_fingerprint=fingerprint_of(sorted(rows)),
        skipped=listing.skipped,
    )


def list_csv(
    csv_path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
    val_split: float = VAL_SPLIT,
    seed: int | None = None,
    strict: bool = False,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    multi_label: bool = False,
    label_delimiter: str = LABEL_DELIMITER,
) -> CsvListing:
    """The images a CSV lists, their files checked, and the split `from_csv` makes of them
    (`multi_label` and `label_delimiter` as `from_csv`'s).

    Example:
        listing = list_csv("labels.csv", val_split=0.2, seed=0)
        listing.class_names, int(listing.in_validation.sum())
        # (['cat', 'dog'], 20)
    """
    csv_path = os.fspath(csv_path)
    rows = _read_rows(csv_path, path_column, label_column, allow_empty_label=multi_label)
    folder = _image_folder(csv_path, image_dir)
    rows = [(_image_path(folder, path), label, held_out) for path, label, held_out in rows]
    if multi_label:
        label_sets = read_label_sets(
            [label for _, label, _ in rows], label_delimiter, repr(csv_path), label_column
        )
        rows = [(path, sets, held_out) for (path, _, held_out), sets in zip(rows, label_sets)]
    else:
        rows = [(path, (label,), held_out) for path, label, held_out in rows]
    class_names = sorted({label for _, labels, _ in rows for label in labels})
    check_class_count(class_names, repr(csv_path))
    kept, skipped, stats = _readable_rows(rows, csv_path, folder, class_names, strict, max_image_pixels)
    paths = np.array([path for path, _, _ in kept], dtype=str)
    if multi_label:
        labels = multi_hot([sets for _, sets, _ in kept], class_names)
        present = labels > 0
    else:
        index = {name: label for label, name in enumerate(class_names)}
        labels = np.array([index[sets[0]] for _, sets, _ in kept], dtype=np.int32)
        present = np.eye(len(class_names), dtype=bool)[labels]
    split_column = kept[0][2] is not None  # every row has a split, or none has
    if split_column:
        in_validation = np.array([held_out for _, _, held_out in kept], dtype=bool)
        untrained = np.flatnonzero(~present[~in_validation].any(axis=0))
        if len(untrained):
            raise ValueError(
                f"Class {class_names[untrained[0]]!r} has no readable training image in "
                f"{csv_path!r}: its column {SPLIT_COLUMN!r} puts all its images in validation. "
                f"Mark some of them 'train'."
            )
    else:
        in_validation = np.zeros(len(labels), dtype=bool)
        if val_split:
            split = iterative_split if multi_label else stratified_split
            in_validation[split(labels, val_split, seed)[1]] = True
    return CsvListing(
        class_names, paths, labels, in_validation, skipped, folder, split_column, multi_label, stats
    )


# A row: its path, label (a label set, once split), and whether the split column puts it in
# validation (None without a split column).
_Row = tuple[str, str, bool | None]


def _read_rows(
    csv_path: str, path_column: str, label_column: str, *, allow_empty_label: bool = False
) -> list[_Row]:
    """The CSV's rows, checked: the columns are there, no path (or, unless allowed, label) is empty."""
    if not fs.isfile(csv_path):
        raise FileNotFoundError(
            f"CSV file not found: {csv_path!r}. Pass a CSV file with a header line and a line "
            f"per image, e.g. '{path_column},{label_column}' then 'cats/1.jpg,cat'."
        )
    try:
        with fs.open_file(csv_path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            lines = [(reader.line_num, cells) for cells in reader if any(cell.strip() for cell in cells)]
    except UnicodeDecodeError as error:
        raise ValueError(f"The CSV {csv_path!r} is not UTF-8 text ({error}). Save it as UTF-8.") from None
    except csv.Error as error:
        raise ValueError(f"The CSV {csv_path!r} cannot be parsed: {error}. Fix that line.") from None
    if not lines:
        raise ValueError(
            f"The CSV {csv_path!r} is empty. Give it a header line naming its columns "
            f"(e.g. '{path_column},{label_column}') and a line per image."
        )
    header = [name.strip() for name in lines[0][1]]
    for column, flag in ((path_column, "path_column"), (label_column, "label_column")):
        if column not in header:
            headless = any(name.lower().endswith(IMAGE_EXTENSIONS) for name in header)
            hint = f", or start the file with a header line such as '{path_column},{label_column}'"
            raise ValueError(
                f"The CSV {csv_path!r} has no column {column!r}; its columns are: "
                f"{', '.join(header)}. Pass {flag}=... (--{flag.replace('_', '-')})"
                f"{hint if headless else ''}."
            )
    if len(lines) == 1:
        raise ValueError(f"The CSV {csv_path!r} has a header but no image lines. Add a line per image.")
    columns = (path_column, label_column)
    return [
        _parse_row(line, cells, header, csv_path, columns, allow_empty_label) for line, cells in lines[1:]
    ]


def _parse_row(
    line: int,
    cells: list[str],
    header: list[str],
    csv_path: str,
    columns: tuple[str, str],
    allow_empty_label: bool,
) -> _Row:
    if len(cells) != len(header):
        raise ValueError(
            f"Line {line} of {csv_path!r} has {len(cells)} values, the header {len(header)}. "
            f"Give every line one value per column (quote values that hold a comma)."
        )
    values = dict(zip(header, (cell.strip() for cell in cells)))
    for column in columns[:1] if allow_empty_label else columns:
        if not values[column]:
            raise ValueError(
                f"Line {line} of {csv_path!r} has an empty {column!r}. Give every line a path "
                f"and a label, or remove the line."
            )
    split = values.get(SPLIT_COLUMN)
    if split is not None and split.lower() not in SPLIT_VALUES:
        raise ValueError(
            f"Line {line} of {csv_path!r} has {SPLIT_COLUMN} {split!r}; the column takes "
            f"{', '.join(SPLIT_VALUES)} (any case)."
        )
    held_out = None if split is None else SPLIT_VALUES[split.lower()]
    return values[columns[0]], values[columns[1]], held_out


def _image_folder(csv_path: str, image_dir: str | os.PathLike | None) -> str:
    """The folder the CSV's relative paths start from."""
    if image_dir is None:
        folder = os.path.dirname(csv_path)
        return folder + "//" if folder.endswith(":") and not fs.is_local(csv_path) else folder
    image_dir = os.fspath(image_dir)
    if not fs.isdir(image_dir):
        raise FileNotFoundError(
            f"Image folder not found: {image_dir!r}. Pass the folder the CSV's paths are "
            f"relative to as image_dir (--image-dir), or none for the CSV's own folder."
        )
    return image_dir


def _image_path(folder: str, path: str) -> str:
    """A CSV's image path, relative to `folder` unless absolute or on a store (`gs://...`)."""
    return path if not fs.is_local(path) else os.path.join(folder, path)


def _readable_rows(
    rows: list[_Row], csv_path: str, folder: str, class_names: list[str], strict: bool, max_pixels: int
) -> tuple[list[_Row], dict[str, str], np.ndarray]:
    """The rows whose file is a usable image, the files skipped (path: reason), and the kept
    files' sizes and modification times."""
    listed = [path for path, _, _ in rows]
    stats = file_stats(listed)
    skipped = check_files(listed, where=csv_path, strict=strict, max_pixels=max_pixels, stats=stats)
    usable = np.array([path not in skipped for path in listed], dtype=bool)
    kept = [row for row, ok in zip(rows, usable) if ok]
    if not kept:
        path, reason = next(iter(skipped.items()))
        raise ValueError(
            f"None of the {len(rows)} images {csv_path!r} lists is readable (e.g. {path!r}: "
            f"{reason}). Relative paths start from {folder or '.'!r}: pass image_dir=... "
            f"(--image-dir) if they start elsewhere."
        )
    empty = sorted(set(class_names) - {label for _, labels, _ in kept for label in labels})
    if empty:
        raise ValueError(
            f"Class {empty[0]!r} has no readable image in {csv_path!r} (its "
            f"{sum(empty[0] in labels for _, labels, _ in rows)} files are skipped). Replace "
            f"its files or remove its lines."
        )
    return kept, skipped, stats[usable]
