"""Whether each file is a usable image: the check `from_folder` and `from_csv` run on every file
they list (its suffix, signature and bit depth, its size from its header, then a decode as the
pipeline's, in a `tf.data` pipeline for many files), with the results kept between runs
(`tfresnet.data.check_cache`), so that an unchanged file is decoded once, not on every run.

Example:
    skipped = check_files(["flowers/roses/1.jpg", "flowers/roses/notes.txt"], where="flowers", strict=False)
    # {'flowers/roses/notes.txt': 'not a .bmp, .gif, .jpeg, .jpg, .png file'}
"""

from __future__ import annotations

import errno
import os
import re
import time
import warnings
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfresnet import paths
from tfresnet.data.check_cache import Check, CheckCache, all_local, file_keys, file_stats, run_in_threads
from tfresnet.data.image_size import MAX_IMAGE_PIXELS, image_pixels, size_error
from tfresnet.data.transforms import BMP_BITS

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Leading bytes of each format, and bytes found in the last 16 of a complete file (which
# tells a truncated file from a corrupt one).
FILE_SIGNATURES = {
    "JPEG": ((b"\xff\xd8\xff",), b"\xff\xd9"),
    "PNG": ((b"\x89PNG\r\n\x1a\n",), b"IEND"),
    "GIF": ((b"GIF87a", b"GIF89a"), b";"),
    "BMP": ((b"BM",), None),
}
# Files on a store are checked in this many threads, each read a request (local files are
# checked in turn: see `check_cache.run_in_threads`).
CHECK_THREADS = 16
# The check decodes JPEGs at this fraction of their size: libjpeg still reads all their
# data, so it fails where a full decode fails, for a fraction of the work.
CHECK_JPEG_RATIO = 8
# A warning or error lists this many bad files; `ImageData.skipped` holds them all.
REPORTED_FILES = 20
# From this many files on, the decodes run in a tf.data pipeline (`check_many`), after a look
# at the first HEAD_BYTES of each file.
BATCH_FILES = 256
HEAD_BYTES = 1 << 16
# What the check keeps of each file: the pixel limit it checked against, and why the file is
# not usable ("" when it is).
FILE_CHECK = Check("file", {"limit": ("int64", ()), "reason": ("text", ())})
UNREADABLE = "unreadable: "


def check_files(
    listed: Sequence[str],
    *,
    where: str,
    strict: bool,
    max_pixels: int = MAX_IMAGE_PIXELS,
    stats: np.ndarray | None = None,
) -> dict[str, str]:
    """The files of `listed` that are not usable images, mapped to the reason; reported in one
    warning naming `where` (with `strict`, a ValueError).

    Each file is checked as by `check_file` (`check_many`), unless the results kept for `where` (the
    folder or CSV listing the files) hold its result for the same size and modification time
    (`stats`, from `file_stats`; measured here when not given) and pixel limit.

    Example:
        check_files(["flowers/roses/1.jpg"], where="flowers", strict=False)
        # {}
    """
    reasons = checked_reasons(listed, where=where, max_pixels=max_pixels, stats=stats)
    skipped = {path: reason for path, reason in zip(listed, reasons) if reason}
    _report(skipped, where, strict)
    return skipped


def checked_reasons(
    listed: Sequence[str], *, where: str, max_pixels: int = MAX_IMAGE_PIXELS, stats: np.ndarray | None = None
) -> list[str]:
    """`check_file`'s reason for each file of `listed` ("" for a usable image), from the results
    kept for `where` where they still hold, the other files checked by `check_many` (and kept).

    Example:
        checked_reasons(["flowers/roses/1.jpg", "flowers/roses/empty.jpg"], where="flowers")
        # ['', 'empty file']
    """
    started = time.time_ns()
    listed = [os.fspath(path) for path in listed]
    stats = file_stats(listed) if stats is None else stats
    keys = file_keys(listed)
    kept = CheckCache(where)
    rows = kept.lookup(FILE_CHECK, keys, stats)
    found = rows >= 0
    found[found] = kept.column(FILE_CHECK, "limit")[rows[found]] == max_pixels
    reasons = np.full(len(listed), "", dtype=object)
    reasons[found] = kept.column(FILE_CHECK, "reason")[rows[found]]
    todo = np.flatnonzero(~found)
    if len(todo):
        reasons[todo] = check_many([listed[i] for i in todo], max_pixels=max_pixels)
        # What the contents decide is kept; a file that could not be read may be readable later.
        todo = np.array([i for i in todo if not reasons[i].startswith(UNREADABLE)], dtype=np.int64)
        kept.record(
            FILE_CHECK,
            [keys[i] for i in todo],
            stats[todo],
            {"limit": np.full(len(todo), max_pixels), "reason": reasons[todo]},
            started=started,
        )
    kept.retain(keys)
    kept.save()
    return list(reasons)


def check_many(listed: Sequence[str], *, max_pixels: int = MAX_IMAGE_PIXELS) -> list[str]:
    """`check_file`'s reason for each file of `listed`, "" for a usable image.

    What comes before decoding (suffix, signature, bit depth, size from the header) runs on
    the first `HEAD_BYTES` of each file (the whole file where its header goes further, and for
    a GIF; in threads on a store); the decodes of the files that pass then run in a `tf.data`
    pipeline, off Python's lock and on every core, and a file that fails there gets
    `check_file`'s reason: the same files pass, for the same reasons, as with `check_file`.

    Example:
        check_many(["photos/cat.jpg", "photos/empty.jpg"])
        # ['', 'empty file']
    """
    listed = [os.fspath(path) for path in listed]
    local = all_local(listed)
    if len(listed) < BATCH_FILES:
        return run_in_threads(
            lambda path: check_file(path, max_pixels=max_pixels) or "", listed, CHECK_THREADS, local=local
        )
    early = run_in_threads(
        lambda path: _before_decoding(path, max_pixels, HEAD_BYTES)[:2], listed, CHECK_THREADS, local=local
    )
    reasons = [reason or "" for reason, _ in early]
    waiting = [i for i, (reason, _) in enumerate(early) if reason is None]
    decoded = _decoded([listed[i] for i in waiting], [early[i][1] == "JPEG" for i in waiting])
    failed = [i for i, ok in zip(waiting, decoded) if not ok]
    found = run_in_threads(
        lambda i: check_file(listed[i], max_pixels=max_pixels), failed, CHECK_THREADS, local=local
    )
    for i, reason in zip(failed, found):
        reasons[i] = reason or ""
    return reasons


def check_file(path: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why `path` is not a usable image, or None: measures it from its header (an image over
    `max_pixels` is refused undecoded), then decodes it as the pipeline does (JPEGs at an
    eighth of their size).

    Example:
        check_file("photos/empty.jpg")
        # 'empty file'
    """
    reason, kind, contents = _before_decoding(path, max_pixels)
    if reason is not None:
        return reason
    error = _decode_error(contents, kind)
    if error is None:
        return None
    return f"{'corrupt' if _looks_complete(contents, kind) else 'truncated'}: {error}"


def _before_decoding(path: str, max_pixels: int, head: int | None = None) -> tuple[str | None, str, bytes]:
    """Why `path` is refused before it is decoded (None if it is not), its kind ("JPEG", "PNG",
    "GIF", "BMP") and the contents read: the first `head` bytes, or the whole file where its
    header goes further, for a GIF (its frames are counted) and without `head`."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not a {', '.join(IMAGE_EXTENSIONS)} file", "", b""
    try:
        contents = _read(path, head)
        if not contents:
            return "empty file", "", contents
        kind = next(
            (kind for kind, (starts, _) in FILE_SIGNATURES.items() if contents.startswith(starts)), ""
        )
        if not kind:
            return "not a JPEG, PNG, GIF or BMP image", kind, contents
        if kind == "BMP":
            bits = int.from_bytes(contents[28:30], "little")
            if bits not in BMP_BITS:
                return f"{bits}-bit BMP (only 24- and 32-bit BMP decode correctly)", kind, contents
        pixels = image_pixels(contents) if kind != "GIF" or len(contents) != head else None
        if len(contents) == head and pixels is None:  # the header goes on after the bytes read
            contents = _read(path, None)
            pixels = image_pixels(contents)
    except OSError as error:
        return f"{UNREADABLE}{error.strerror}", "", b""
    except tf.errors.OpError as error:  # a file on a store, read through tf.io.gfile
        missing = isinstance(error, tf.errors.NotFoundError)
        return (
            UNREADABLE + (os.strerror(errno.ENOENT) if missing else error.message or type(error).__name__),
            "",
            b"",
        )
    return size_error(pixels or 0, max_pixels), kind, contents


def _read(path: str, head: int | None) -> bytes:
    """The first `head` bytes of the file `path`, or all of them."""
    with paths.open_file(path, "rb") as file:
        return file.read() if head is None else file.read(head)


def _decoded(listed: list[str], jpeg: list[bool]) -> np.ndarray:
    """Whether each file decodes as `check_file` decodes it (JPEGs at an eighth of their size),
    in a `tf.data` pipeline on every core (each was measured from its header first)."""
    if not listed:
        return np.zeros(0, dtype=bool)

    def decode(index: tf.Tensor, path: tf.Tensor, is_jpeg: tf.Tensor):
        contents = tf.io.read_file(path)
        pixels = tf.cond(
            is_jpeg,
            lambda: tf.io.decode_jpeg(contents, channels=3, ratio=CHECK_JPEG_RATIO),
            lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
        )
        return index, tf.shape(pixels)[0]  # the decode, not pruned

    items = tf.data.Dataset.from_tensor_slices(
        (np.arange(len(listed)), np.array(listed, dtype=object), np.array(jpeg, dtype=bool))
    )
    items = items.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    done = np.zeros(len(listed), dtype=bool)
    for indices, _ in items.ignore_errors().batch(4096):
        done[indices.numpy()] = True
    return done


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
