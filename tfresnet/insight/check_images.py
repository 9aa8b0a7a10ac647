"""What the dataset check reads of each image: its size, its colour mode, its perceptual hash
and its average colours on a grid (`ImageFacts`), read with PIL at reduced size and kept between
runs (`tfresnet.data.check_cache`); and the summaries of sizes and modes. The duplicates found
among them: `tfresnet.insight.duplicates`.

The perceptual hash (pHash): the image's 32x32 grayscale thumbnail goes through a 2-D DCT, and
each of the 8x8 lowest frequencies gives a bit, set when the coefficient is above their median.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import time
from typing import Sequence

import numpy as np

from tfresnet import paths as fs
from tfresnet.data.check_cache import Check, CheckCache, all_local, file_keys, file_stats, run_in_threads

HASH_SIDE = 8  # the hash keeps the HASH_SIDE x HASH_SIDE lowest DCT frequencies: 64 bits
THUMBNAIL_SIDE = 32
COLOR_GRID = 4
# JPEGs decode at the smallest libjpeg scale (1/2, 1/4, 1/8) that keeps this size.
DRAFT_SIZE = (64, 64)
THREADS = 16
# PIL modes counted under each key of `modes`; every other mode is "rgb" or "other".
MODE_KEYS = {
    "1": "grayscale",
    "L": "grayscale",
    "LA": "grayscale",
    "I": "grayscale",
    "I;16": "grayscale",
    "F": "grayscale",
    "RGBA": "rgba",
    "RGBa": "rgba",
    "CMYK": "cmyk",
    "P": "palette",
    "PA": "palette",
    "RGB": "rgb",
}
MODES = ("grayscale", "rgba", "cmyk", "palette", "rgb", "other")
# What the check keeps of each image between runs (`tfresnet.data.check_cache`): its
# `ImageFacts`, or why PIL cannot read it ("" when it can).
IMAGE_CHECK = Check(
    "image",
    {
        "width": ("int64", ()),
        "height": ("int64", ()),
        "mode": ("text", ()),
        "hash": ("uint64", ()),
        "colors": ("float32", (COLOR_GRID, COLOR_GRID, 3)),
        "reason": ("text", ()),
    },
)


@dataclasses.dataclass(slots=True)
class ImageFacts:
    """What the check keeps of one readable image: its size, PIL mode, perceptual hash and
    average colours on a `COLOR_GRID` x `COLOR_GRID` grid."""

    width: int
    height: int
    mode: str
    hash: int
    colors: np.ndarray


# === Reading the images ===


def describe_images(
    paths: Sequence[str], *, source: str | None = None, stats: np.ndarray | None = None
) -> list[ImageFacts | str]:
    """Each path's `ImageFacts`, or the reason PIL cannot read it (read in threads on a store,
    in turn locally: see `tfresnet.data.check_cache.run_in_threads`).

    With `source` (the folder or CSV listing the images), the facts are kept between runs
    (`tfresnet.data.check_cache`): an image whose size and modification time (`stats`, from
    `file_stats`; measured here when not given) are those it had when described is not read
    again.

    Example:
        facts = describe_images(["photos/cat.jpg"])
        facts[0].width, facts[0].mode
        # (500, 'RGB')
    """
    if source is None:
        return run_in_threads(_describe, list(paths), THREADS, local=all_local(paths))
    started = time.time_ns()
    paths = list(paths)
    stats = file_stats(paths) if stats is None else stats
    keys = file_keys(paths)
    kept = CheckCache(source)
    rows = kept.lookup(IMAGE_CHECK, keys, stats)
    facts: list[ImageFacts | str | None] = [None] * len(paths)
    found = np.flatnonzero(rows >= 0)
    for i, known in zip(found, _kept_facts(kept, rows[found])):
        facts[i] = known
    todo = np.flatnonzero(rows < 0)
    todo_paths = [paths[i] for i in todo]
    for i, described in zip(
        todo, run_in_threads(_describe, todo_paths, THREADS, local=all_local(todo_paths))
    ):
        facts[i] = described
    if len(todo):
        columns = _columns([facts[i] for i in todo])
        kept.record(IMAGE_CHECK, [keys[i] for i in todo], stats[todo], columns, started=started)
        kept.save()
    return facts


def _kept_facts(kept: CheckCache, rows: np.ndarray) -> list[ImageFacts | str]:
    """The facts (or the reasons) kept in `rows`."""
    column = functools.partial(kept.column, IMAGE_CHECK)
    widths, heights = column("width")[rows].tolist(), column("height")[rows].tolist()
    modes, hashes, colors = column("mode")[rows], column("hash")[rows].tolist(), column("colors")[rows]
    return [
        reason or ImageFacts(widths[j], heights[j], modes[j], hashes[j], colors[j])
        for j, reason in enumerate(column("reason")[rows])
    ]


def _columns(facts: list[ImageFacts | str]) -> dict[str, list]:
    """`IMAGE_CHECK`'s columns of `facts`."""
    blank = ImageFacts(0, 0, "", 0, np.zeros((COLOR_GRID, COLOR_GRID, 3), np.float32))
    described = [blank if isinstance(found, str) else found for found in facts]
    return {
        "width": [found.width for found in described],
        "height": [found.height for found in described],
        "mode": [found.mode for found in described],
        "hash": [found.hash for found in described],
        "colors": [found.colors for found in described],
        "reason": [found if isinstance(found, str) else "" for found in facts],
    }


def open_image(path: str):
    """A PIL image of the file `path`, local (read as PIL needs it) or on a store (read whole).

    Example:
        with open_image("gs://bucket/photos/cat.jpg") as image:
            image.size
    """
    from PIL import Image

    return Image.open(path if fs.is_local(path) else io.BytesIO(fs.read_bytes(path)))


def _describe(path: str) -> ImageFacts | str:
    """Reads one image at reduced size: its size, mode, perceptual hash and colour grid."""
    from PIL import Image

    try:
        with open_image(path) as image:
            width, height, mode = image.width, image.height, image.mode
            image.draft(None, DRAFT_SIZE)  # JPEG: decode at 1/2, 1/4 or 1/8 of the size
            thumbnail = image.convert("RGB").resize(
                (THUMBNAIL_SIDE,) * 2, Image.Resampling.LANCZOS, reducing_gap=3.0
            )
    except Exception as error:  # noqa: BLE001 - PIL's decoders raise many kinds of errors
        return f"cannot be decoded by PIL: {error}"
    colors = np.asarray(thumbnail.resize((COLOR_GRID,) * 2, Image.Resampling.BOX), np.float32)
    gray = np.asarray(thumbnail.convert("L"), np.float64)
    return ImageFacts(width, height, mode, perceptual_hash(gray), colors)


def _dct_matrix(size: int) -> np.ndarray:
    """The (unnormalised) DCT-II matrix: `matrix @ x` transforms the columns of `x`."""
    frequency, position = np.arange(size)[:, None], np.arange(size)[None, :]
    return np.cos(np.pi * (2 * position + 1) * frequency / (2 * size))


_DCT = _dct_matrix(THUMBNAIL_SIDE)[:HASH_SIDE]


def perceptual_hash(thumbnail: np.ndarray) -> int:
    """The 64-bit pHash of a 32x32 grayscale thumbnail: the 8x8 lowest DCT frequencies, each
    bit set when its coefficient is above their median.

    Example:
    >>> pixels = np.random.default_rng(0).uniform(0, 255, (32, 32))
    >>> perceptual_hash(pixels) == perceptual_hash(0.5 * pixels + 40)  # contrast and brightness aside
    True
    """
    low = (_DCT @ thumbnail @ _DCT.T).ravel()
    middle = np.partition(low, (low.size // 2 - 1, low.size // 2))[low.size // 2 - 1 : low.size // 2 + 1]
    median = (middle[0] + middle[1]) / 2  # np.median's, a tenth of its time on 64 values
    return int.from_bytes(np.packbits(low > median).tobytes(), "big")


# === Summaries ===


def size_summary(images: list[ImageFacts]) -> dict:
    """The min, median and max of the images' widths and heights.

    Example:
        size_summary(describe_images(["a.png"]))["width"]
        # {'min': 48, 'median': 48.0, 'max': 48}
    """
    summary = {}
    for name in ("width", "height"):
        values = np.array([getattr(image, name) for image in images] or [0])
        summary[name] = {
            "min": int(values.min()),
            "median": float(np.median(values)),
            "max": int(values.max()),
        }
    return summary


def mode_counts(images: list[ImageFacts]) -> dict[str, int]:
    """How many images have each kind of colour mode in `MODES`.

    Example:
        mode_counts(describe_images(["a.png"]))
        # {'grayscale': 0, 'rgba': 0, 'cmyk': 0, 'palette': 0, 'rgb': 1, 'other': 0}
    """
    counts = dict.fromkeys(MODES, 0)
    for image in images:
        counts[MODE_KEYS.get(image.mode, "other")] += 1
    return counts
