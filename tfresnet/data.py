"""tf.data sources and transforms: image folders, TFDS datasets and arrays in, batches out.

Every loader returns an `ImageData` whose datasets yield `(images, labels)` batches: images
float32 RGB of shape `(batch, image_size, image_size, 3)` holding raw pixel values in
[0, 255] (each model normalises them in its own first layer), labels int32 class indices.

Two transforms exist:
- evaluation (`decode_for_eval`): the central square of 87.5% of the shorter side (the
  224 px crop of an image resized to 256 px), resized to `image_size`;
- training with `augmentation="standard"`: a random crop of 8% to 100% of the area with an
  aspect ratio of 3/4 to 4/3, resized to `image_size`, then a random horizontal flip.
JPEG files are decoded only inside the crop window, shrunk 2, 4 or 8 times by libjpeg
when the crop is that much larger than `image_size`; other formats are decoded, then cropped.
Resizing is bilinear.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

# === Facts ===

AUGMENTATIONS = ("none", "flip", "standard")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CROP_FRACTION = 0.875
RANDOM_CROP_AREA = (0.08, 1.0)
RANDOM_CROP_ASPECT = (3 / 4, 4 / 3)
RANDOM_CROP_ATTEMPTS = 10
JPEG_SHRINK_RATIOS = (1, 2, 4, 8)
# TFDS records are read in order; the training set is shuffled in a buffer of this many.
TFDS_SHUFFLE_BUFFER = 10_000
# Leading bytes of each format, and bytes found in the last 16 of a complete file.
FILE_SIGNATURES = {
    "JPEG": ((b"\xff\xd8\xff",), b"\xff\xd9"),
    "PNG": ((b"\x89PNG\r\n\x1a\n",), b"IEND"),
    "GIF": ((b"GIF87a", b"GIF89a"), b";"),
    "BMP": ((b"BM",), None),
}
# TensorFlow reads 8-bit BMPs as gray levels, ignoring their palette: those are skipped.
BMP_BITS = (24, 32)
# Files are checked in this many threads: opening files is I/O bound (network disks).
CHECK_THREADS = 16
# A warning or error lists this many bad files; `ImageData.skipped` holds them all.
REPORTED_FILES = 20


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
        skipped: Files left out because they are not readable images, mapped to the reason.
        batch_size: Images per batch (None when unknown).

    Example:
    >>> data = from_folder("flowers/", image_size=224, seed=0)
    >>> data.class_names, data.num_train, data.num_validation
    (['daisy', 'roses', 'tulips'], 240, 60)
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    class_names: list[str]
    class_counts: list[int]
    num_train: int
    num_validation: int
    image_size: int
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None


# === Transforms ===


def decode_for_eval(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image exactly as the evaluation pipeline does.

    JPEG, PNG, BMP (24- and 32-bit) and GIF (first frame); grayscale, RGBA and palette
    images become RGB. The central square of 87.5% of the shorter side is resized
    bilinearly to `image_size` (a JPEG crop at least twice that size is first shrunk 2, 4
    or 8 times by libjpeg while decoding), and values are rounded to whole pixel values.
    Graph-safe: use it inside `tf.function`, `tf.map_fn` or a serving signature.

    Args:
        image_bytes: Scalar string tensor holding the encoded file.
        image_size: Side of the square output, in pixels.

    Returns:
        float32 tensor of shape `(image_size, image_size, 3)` with values in [0, 255].

    Example:
    >>> image = decode_for_eval(tf.io.read_file("flowers/daisy/1.jpg"), 224)
    >>> image.shape, image.dtype
    (TensorShape([224, 224, 3]), tf.float32)
    """
    _check_positive_int("image_size", image_size)
    return _eval_transform(tf.convert_to_tensor(image_bytes, tf.string), image_size)


def _eval_transform(image: tf.Tensor, image_size: int) -> tf.Tensor:
    return tf.round(_crop_and_resize(image, _central_box, image_size))


def _train_transform(image: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = _crop_and_resize(image, _random_box(crop_seed), image_size)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def _central_box(height: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, ...]:
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    side = tf.maximum(tf.cast(CROP_FRACTION * shorter, tf.int32), 1)
    return (height - side) // 2, (width - side) // 2, side, side


def _random_box(seed: tf.Tensor) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    def box(height, width):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.stack([height, width, 3]),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=RANDOM_CROP_AREA[0],
            aspect_ratio_range=RANDOM_CROP_ASPECT,
            area_range=RANDOM_CROP_AREA,
            max_attempts=RANDOM_CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        return begin[0], begin[1], size[0], size[1]

    return box


def _crop_and_resize(image: tf.Tensor, box: Callable, image_size: int) -> tf.Tensor:
    """Crops `box(height, width)` out of encoded bytes or decoded pixels, then resizes."""
    if image.dtype == tf.string:
        image = _decode_and_crop(image, box, image_size)
    else:
        image = _crop(_to_rgb(image), box)
    resized = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def _decode_and_crop(image_bytes: tf.Tensor, box: Callable, image_size: int) -> tf.Tensor:
    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes)
        top, left, height, width = box(shape[0], shape[1])
        # libjpeg shrinks by 2, 4 or 8 while decoding (a box filter, and far less work) as
        # long as the crop stays at least image_size; the bilinear resize does the rest.
        shorter = tf.minimum(height, width)
        larger = [ratio * image_size for ratio in JPEG_SHRINK_RATIOS[1:]]
        shrink = tf.reduce_sum(tf.cast(shorter >= larger, tf.int32))

        def decode(ratio):
            window = tf.stack(
                [top // ratio, left // ratio, tf.maximum(height // ratio, 1), tf.maximum(width // ratio, 1)]
            )
            return lambda: tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3, ratio=ratio)

        return tf.switch_case(shrink, [decode(ratio) for ratio in JPEG_SHRINK_RATIOS])

    def other():
        pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return _crop(pixels, box)

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def _crop(image: tf.Tensor, box: Callable) -> tf.Tensor:
    shape = tf.shape(image)
    top, left, height, width = box(shape[0], shape[1])
    return image[top : top + height, left : left + width]


def _to_rgb(pixels: tf.Tensor) -> tf.Tensor:
    channels = pixels.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(pixels)
    if channels == 4:
        return pixels[..., :3]
    if channels == 3:
        return pixels
    raise ValueError(
        f"Images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels. Received: shape={pixels.shape}"
    )


# === Pipeline ===


@dataclasses.dataclass(frozen=True)
class _Settings:
    image_size: int
    batch_size: int
    augmentation: str
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None
    seed: int | None
    cache: bool | str | os.PathLike
    drop_remainder: bool
    strict: bool


@dataclasses.dataclass(frozen=True)
class _Part:
    """One set before its transforms: `items` yields cheap `(item, label)` pairs to shuffle,
    `load` turns an item into encoded bytes or decoded pixels."""

    items: tf.data.Dataset
    load: Callable[[tf.Tensor], tf.Tensor]
    labels: np.ndarray


def _settings(
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
) -> _Settings:
    _check_positive_int("image_size", image_size)
    _check_positive_int("batch_size", batch_size)
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
    if extra_augmentation is not None and not callable(extra_augmentation):
        raise ValueError(
            f"extra_augmentation must be a callable on a batch of images, or "
            f"None. Received: extra_augmentation={extra_augmentation!r}"
        )
    if seed is not None and not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer or None. Received: seed={seed!r}")
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise ValueError(f"cache must be True (memory), False or a directory path. Received: cache={cache!r}")
    return _Settings(
        image_size,
        batch_size,
        augmentation,
        extra_augmentation,
        seed,
        cache,
        bool(drop_remainder),
        bool(strict),
    )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _assemble(
    train: _Part,
    validation: _Part | None,
    *,
    class_names: Sequence[str],
    settings: _Settings,
    fingerprint: str,
    skipped: dict[str, str] | None = None,
    shuffle_buffer: int | None = None,
) -> ImageData:
    parts = {"train": train, "validation": validation}
    for name, part in parts.items():
        if part is not None and settings.drop_remainder and len(part.labels) < settings.batch_size:
            raise ValueError(
                f"With drop_remainder=True, the {len(part.labels)} {name} images make no full "
                f"batch of batch_size={settings.batch_size}; lower batch_size."
            )
    datasets = {
        name: _pipeline(
            part,
            training=name == "train",
            settings=settings,
            cache_name=f"{name}-{fingerprint}",
            shuffle_buffer=shuffle_buffer,
        )
        for name, part in parts.items()
        if part is not None
    }
    counts = np.bincount(train.labels, minlength=len(class_names))
    return ImageData(
        train=datasets["train"],
        validation=datasets.get("validation"),
        class_names=list(class_names),
        class_counts=[int(count) for count in counts],
        num_train=len(train.labels),
        num_validation=0 if validation is None else len(validation.labels),
        image_size=settings.image_size,
        skipped=dict(skipped or {}),
        batch_size=settings.batch_size,
    )


def _pipeline(
    part: _Part, *, training: bool, settings: _Settings, cache_name: str, shuffle_buffer: int | None
) -> tf.data.Dataset:
    """Builds one set's batches.

    `standard` training decodes a fresh random crop of every file each epoch: caching would
    have to hold whole decoded images, so nothing is cached. Every other set decodes with the
    evaluation transform, which is the same every epoch: those images are cached as uint8
    (a quarter of float32's memory), then shuffled and flipped at random if training.
    Random ops are stateless, seeded per element from a seeded stream, so one seed gives the
    same batches, augmentation included, whatever the parallelism.
    """
    size = settings.image_size
    autotune = tf.data.AUTOTUNE
    buffer = min(shuffle_buffer or len(part.labels), len(part.labels))
    seeds = tf.data.Dataset.random(seed=settings.seed, rerandomize_each_iteration=True).batch(2)
    if training and settings.augmentation == "standard":
        dataset = part.items.shuffle(buffer, seed=settings.seed, reshuffle_each_iteration=True)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, seed: (_train_transform(part.load(pair[0]), seed, size), pair[1]),
            num_parallel_calls=autotune,
        )
        dataset = _skip_errors(dataset, len(part.labels), settings.strict)
    else:
        dataset = part.items.map(
            lambda item, label: (tf.cast(_eval_transform(part.load(item), size), tf.uint8), label),
            num_parallel_calls=autotune,
        )
        dataset = _skip_errors(dataset, len(part.labels), settings.strict)
        dataset = _cache(dataset, settings.cache, cache_name)
        if training:
            dataset = dataset.shuffle(buffer, seed=settings.seed, reshuffle_each_iteration=True)
        dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32), label))
        if training and settings.augmentation == "flip":
            dataset = tf.data.Dataset.zip((dataset, seeds)).map(
                lambda pair, seed: (tf.image.stateless_random_flip_left_right(pair[0], seed), pair[1]),
                num_parallel_calls=autotune,
            )
    dataset = dataset.batch(settings.batch_size, drop_remainder=settings.drop_remainder)
    if training and settings.extra_augmentation is not None:
        augment = settings.extra_augmentation
        dataset = dataset.map(
            lambda images, labels: (tf.cast(augment(images), tf.float32), labels),
            num_parallel_calls=autotune,
        )
    return dataset.prefetch(autotune)


def _skip_errors(dataset: tf.data.Dataset, count: int, strict: bool) -> tf.data.Dataset:
    """Safety net for files that pass the listing check yet fail to decode.

    The error is logged and the element dropped, so an epoch never stops on one file. Each
    epoch still yields `count` elements (a known length for Keras's progress and schedules):
    a dropped element is replaced by the first of the next pass. With `strict`, errors raise.
    """
    if strict:
        return dataset
    return dataset.ignore_errors(log_warning=True).repeat().take(count)


def _cache(dataset: tf.data.Dataset, cache: bool | str | os.PathLike, name: str) -> tf.data.Dataset:
    if cache is True:
        return dataset.cache()
    if cache is False:
        return dataset
    os.makedirs(cache, exist_ok=True)
    return dataset.cache(os.path.join(os.fspath(cache), name))


def _fingerprint(cache: bool | str | os.PathLike, *parts) -> str:
    """Names a file cache after everything that decides its contents, so none goes stale
    (nothing to name for a memory cache or none)."""
    if isinstance(cache, bool):
        return ""
    digest = hashlib.sha1()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()[:16]


def _stratified_split(labels: np.ndarray, val_split: float, seed: int | None):
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


def _check_class_count(class_names: Sequence[str], where: str) -> None:
    if len(class_names) < 2:
        raise ValueError(
            f"Found a single class, {class_names[0]!r}, in {where}; a classifier needs at "
            f"least two. Add images of another class."
        )


# === Image folders ===


def from_folder(
    directory: str | os.PathLike,
    *,
    image_size: int = 224,
    batch_size: int = 32,
    val_split: float = 0.2,
    validation_directory: str | os.PathLike | None = None,
    augmentation: str = "standard",
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

    Bad files are found when listing, cheaply: each file is opened once and its first 32
    and last 16 bytes are read (in threads) to check the format's signature, that the file
    is not empty, and that its end is there. Only a file that looks truncated is decoded to
    be sure. Files that fail are skipped, reported in one warning and listed in
    `ImageData.skipped` (with `strict=True`, a ValueError names them instead). The check
    cannot see damage inside the data of a complete file: when such a file fails to decode,
    `tf.data`'s `ignore_errors` drops it and logs the error (it is not listed in `skipped`),
    and another image takes its place so that every epoch keeps `num_train` images.

    Args:
        directory: The folder of class sub-folders.
        image_size: Side of the square images, in pixels.
        batch_size: Images per batch.
        val_split: Fraction of each class held out for validation (0: no validation set).
            The split is stratified and depends only on the files and `seed`. Ignored when
            `validation_directory` is given.
        validation_directory: A folder with the same class sub-folders, for validation.
        augmentation: `"standard"` (random resized crop and flip), `"flip"` (evaluation
            transform and random flip) or `"none"` (evaluation transform).
        extra_augmentation: Called on each training batch of float32 images after the
            augmentation above (e.g. Keras random layers given a seed); must return float32
            pixel values in [0, 255].
        seed: Seeds the split, the shuffle and the augmentation: one seed gives identical
            batches. None shuffles and augments differently in each run (the split is that
            of seed 0).
        cache: True caches the evaluation-transform images in memory, a directory path
            caches them on disk (file names encode the files listed and the image size),
            False caches nothing. Training with `"standard"` augmentation caches nothing:
            it decodes a fresh random crop each epoch.
        drop_remainder: Drop the last partial batch (for static shapes under a
            distribution strategy).
        strict: Raise a ValueError naming the bad files instead of skipping them.

    Returns:
        An `ImageData`.

    Raises:
        FileNotFoundError: `directory` or `validation_directory` does not exist.
        ValueError: No class sub-folders, a class without readable images, a single class,
            different classes in the two folders, or an invalid argument.

    Example:
    >>> data = from_folder("flowers/", image_size=224, batch_size=32, seed=0)
    >>> data.class_names
    ['daisy', 'roses', 'tulips']
    >>> images, labels = next(iter(data.train))
    >>> images.shape, labels.dtype
    (TensorShape([32, 224, 224, 3]), tf.int32)
    """
    settings = _settings(
        image_size=image_size,
        batch_size=batch_size,
        val_split=val_split,
        augmentation=augmentation,
        extra_augmentation=extra_augmentation,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
        strict=strict,
    )
    class_names, paths, labels, skipped = _list_folder(directory, strict=strict)
    listed = list(paths)
    if validation_directory is None:
        if val_split:
            train_index, val_index = _stratified_split(labels, val_split, seed)
            train = _file_part(paths[train_index], labels[train_index])
            validation = _file_part(paths[val_index], labels[val_index])
        else:
            train, validation = _file_part(paths, labels), None
    else:
        val_names, val_paths, val_labels, val_skipped = _list_folder(validation_directory, strict=strict)
        if val_names != class_names:
            raise ValueError(
                f"The class sub-folders of {os.fspath(validation_directory)!r} differ from "
                f"those of {os.fspath(directory)!r}: {val_names} vs {class_names}. Give both "
                f"folders the same sub-folders."
            )
        train, validation = _file_part(paths, labels), _file_part(val_paths, val_labels)
        skipped.update(val_skipped)
        listed += list(val_paths)
    stats = (
        None
        if isinstance(cache, bool)
        else [(path, os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in listed]
    )
    return _assemble(
        train,
        validation,
        class_names=class_names,
        settings=settings,
        fingerprint=_fingerprint(cache, stats, validation_directory, val_split, seed, image_size),
        skipped=skipped,
    )


def _file_part(paths: np.ndarray, labels: np.ndarray) -> _Part:
    items = tf.data.Dataset.from_tensor_slices((paths, labels))
    return _Part(items=items, load=tf.io.read_file, labels=labels)


def _list_folder(
    directory: str | os.PathLike, *, strict: bool
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
        for path in _files_under(os.path.join(directory, name))
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:
        reasons = list(pool.map(_check_file, [path for path, _ in candidates]))
    skipped = {path: reason for (path, _), reason in zip(candidates, reasons) if reason}
    _report(skipped, directory, strict)
    kept = [(path, label) for (path, label), reason in zip(candidates, reasons) if not reason]
    counts = np.bincount([label for _, label in kept], minlength=len(class_names))
    for name, count in zip(class_names, counts):
        if count == 0:
            bad = sum(path.startswith(os.path.join(directory, name, "")) for path in skipped)
            raise ValueError(
                f"Class folder {os.path.join(directory, name)!r} holds no readable images "
                f"({bad} files skipped). Add {', '.join(IMAGE_EXTENSIONS)} images to it or "
                f"remove it."
            )
    _check_class_count(class_names, repr(directory))
    paths = np.array([path for path, _ in kept], dtype=str)
    labels = np.array([label for _, label in kept], dtype=np.int32)
    return class_names, paths, labels, skipped


def _files_under(folder: str) -> list[str]:
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if not name.startswith(".")]
    return found


def _check_file(path: str) -> str | None:
    """Why `path` is not a readable image, or None. Reads 48 bytes of most files."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not a {', '.join(IMAGE_EXTENSIONS)} file"
    try:
        with open(path, "rb") as file:
            head = file.read(32)
            size = file.seek(0, os.SEEK_END)
            file.seek(max(size - 16, 0))
            tail = file.read()
    except OSError as error:
        return f"unreadable: {error.strerror}"
    if size == 0:
        return "empty file"
    kind = next((kind for kind, (starts, _) in FILE_SIGNATURES.items() if head.startswith(starts)), None)
    if kind is None:
        return "not a JPEG, PNG, GIF or BMP image"
    if kind == "BMP":
        bits = int.from_bytes(head[28:30], "little")
        if bits not in BMP_BITS:
            return f"{bits}-bit BMP (only 24- and 32-bit BMP decode correctly)"
        complete = int.from_bytes(head[2:6], "little") <= size
    else:
        complete = FILE_SIGNATURES[kind][1] in tail
    return None if complete else _decode_error(path)


def _decode_error(path: str) -> str | None:
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError:
        return "truncated or corrupt"
    return None


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
        stacklevel=4,
    )


# === TFDS ===


def from_tfds(
    name: str,
    *,
    split: str = "train",
    validation_split: str | None = None,
    val_split: float = 0.2,
    data_dir: str | os.PathLike | None = None,
    image_size: int = 224,
    batch_size: int = 32,
    augmentation: str = "standard",
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
    a buffer of up to `TFDS_SHUFFLE_BUFFER` records.

    Args:
        name: The TFDS name, e.g. `"tf_flowers"` or `"cifar10:3.0.2"`.
        split: The training split, slicing allowed, e.g. `"train[:80%]"`.
        validation_split: A split for validation, e.g. `"train[80%:]"`; None holds out
            `val_split` of `split` instead.
        val_split: Fraction of each class of `split` held out for validation when
            `validation_split` is None (0: no validation set).
        data_dir: Where TFDS keeps its data (TFDS's default when None).
        image_size: Side of the square images, in pixels.
        batch_size: Images per batch.
        augmentation: `"standard"`, `"flip"` or `"none"` (see `from_folder`).
        extra_augmentation: Called on each training batch (see `from_folder`).
        seed: Seeds the split, the shuffle and the augmentation (see `from_folder`).
        cache: True (memory), a directory path or False (see `from_folder`).
        drop_remainder: Drop the last partial batch.

    Returns:
        An `ImageData`.

    Raises:
        ValueError: The dataset has no supervised image and `ClassLabel` keys, a split is
            empty, or an argument is invalid.

    Example:
    >>> data = from_tfds("tf_flowers", split="train[:80%]", validation_split="train[80%:]")
    >>> data.class_names
    ['dandelion', 'daisy', 'tulips', 'sunflowers', 'roses']
    """
    import tensorflow_datasets as tfds  # here: it takes seconds to import, and only TFDS needs it

    settings = _settings(
        image_size=image_size,
        batch_size=batch_size,
        val_split=val_split,
        augmentation=augmentation,
        extra_augmentation=extra_augmentation,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
    )
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
    image_key, label_key = keys
    class_names = list(features[label_key].names)
    _check_class_count(class_names, f"TFDS dataset {name!r}")
    skip_decoding = isinstance(features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if skip_decoding else None

    def read_split(which: str) -> tuple[tf.data.Dataset, np.ndarray]:
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
                f"Split {which!r} of TFDS dataset {name!r} is empty. Pick a "
                f"split with examples, e.g. 'train'."
            )
        pairs = tfds.load(
            name, split=which, data_dir=data_dir, shuffle_files=False, as_supervised=True, decoders=decoders
        )
        pairs = pairs.map(lambda image, label: (image, tf.cast(label, tf.int32)))
        return pairs, labels.astype(np.int32)

    pairs, labels = read_split(split)
    if validation_split is not None:
        val_pairs, val_labels = read_split(validation_split)
        train = _Part(pairs, tf.identity, labels)
        validation = _Part(val_pairs, tf.identity, val_labels)
        held_out = None
    elif val_split:
        train_index, held_out = _stratified_split(labels, val_split, seed)
        train = _Part(_select(pairs, train_index, len(labels)), tf.identity, labels[train_index])
        validation = _Part(_select(pairs, held_out, len(labels)), tf.identity, labels[held_out])
    else:
        train, validation, held_out = _Part(pairs, tf.identity, labels), None, None
    return _assemble(
        train,
        validation,
        class_names=class_names,
        settings=settings,
        fingerprint=_fingerprint(
            cache, info.full_name, split, validation_split, data_dir, held_out, image_size
        ),
        shuffle_buffer=TFDS_SHUFFLE_BUFFER,
    )


def _select(pairs: tf.data.Dataset, index: np.ndarray, total: int) -> tf.data.Dataset:
    keep = np.zeros(total, dtype=bool)
    keep[index] = True
    keep = tf.constant(keep)
    chosen = pairs.enumerate().filter(lambda position, pair: keep[position])
    return chosen.map(lambda position, pair: pair)


# === Arrays ===


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    val_split: float = 0.2,
    image_size: int = 224,
    batch_size: int = 32,
    augmentation: str = "standard",
    extra_augmentation: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int | None = None,
    cache: bool | str | os.PathLike = True,
    drop_remainder: bool = False,
) -> ImageData:
    """Loads images and integer labels held in memory.

    Images go through the same transforms as files: the evaluation transform crops the
    central 87.5% even of images already at `image_size`, as serving will.

    Args:
        images: `(N, H, W, 3)` RGB, `(N, H, W, 4)` RGBA or `(N, H, W[, 1])` gray images,
            uint8 or float, raw pixel values in [0, 255].
        labels: `(N,)` integer class indices.
        class_names: Names of the classes, indexed by label; `["0", "1", ...]` up to the
            largest label when None.
        validation: `(images, labels)` for validation; None holds out `val_split` instead.
        val_split: Fraction of each class held out for validation when `validation` is None
            (0: no validation set).
        image_size: Side of the square images, in pixels.
        batch_size: Images per batch.
        augmentation: `"standard"`, `"flip"` or `"none"` (see `from_folder`).
        extra_augmentation: Called on each training batch (see `from_folder`).
        seed: Seeds the split, the shuffle and the augmentation (see `from_folder`).
        cache: True (memory), a directory path or False (see `from_folder`).
        drop_remainder: Drop the last partial batch.

    Returns:
        An `ImageData`.

    Raises:
        ValueError: Bad shapes, pixel values outside [0, 255] or all in [0, 1], labels out
            of range, a single class, or an invalid argument.

    Example:
    >>> images = np.random.randint(0, 256, (100, 32, 32, 3), dtype="uint8")
    >>> data = from_arrays(images, np.arange(100) % 2, image_size=32, seed=0)
    >>> data.class_names, data.num_train, data.num_validation
    (['0', '1'], 80, 20)
    """
    settings = _settings(
        image_size=image_size,
        batch_size=batch_size,
        val_split=val_split,
        augmentation=augmentation,
        extra_augmentation=extra_augmentation,
        seed=seed,
        cache=cache,
        drop_remainder=drop_remainder,
    )
    images, labels = _check_arrays(images, labels, "images", "labels")
    held = () if validation is None else _check_arrays(*validation, "validation[0]", "validation[1]")
    if class_names is None:
        largest = int(np.concatenate([labels, *held[1:]]).max())
        class_names = [str(label) for label in range(max(largest + 1, 1))]
    class_names = [str(name) for name in class_names]
    _check_labels(labels, len(class_names), "labels")
    if held:
        _check_labels(held[1], len(class_names), "validation[1]")
    _check_class_count(class_names, "the labels")
    tensor = tf.constant(images)
    everything = np.arange(len(labels))
    if held:
        train = _array_part(tensor, everything, labels)
        val = _array_part(tf.constant(held[0]), np.arange(len(held[1])), held[1])
    elif val_split:
        train_index, val_index = _stratified_split(labels, val_split, seed)
        train = _array_part(tensor, train_index, labels[train_index])
        val = _array_part(tensor, val_index, labels[val_index])
    else:
        train, val = _array_part(tensor, everything, labels), None
    return _assemble(
        train,
        val,
        class_names=class_names,
        settings=settings,
        fingerprint=_fingerprint(cache, images, labels, *held, val_split, seed, image_size),
    )


def _array_part(images: tf.Tensor, index: np.ndarray, labels: np.ndarray) -> _Part:
    items = tf.data.Dataset.from_tensor_slices((index, labels))
    return _Part(items=items, load=lambda position: tf.gather(images, position), labels=labels)


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f"Labels must lie in [0, {num_classes}) for {num_classes} class names. Received: "
            f"{where}[{bad[0]}]={labels[bad[0]]}. Fix the label or pass class_names naming "
            f"every class."
        )


def _check_arrays(images, labels, images_name: str, labels_name: str):
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
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        raise ValueError(
            f"{labels_name} must be {len(images)} integer class indices, one per image. "
            f"Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    return images, labels.astype(np.int32)
