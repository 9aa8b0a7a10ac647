"""The results of the file check and the dataset check, kept between runs, per file: a second
run, or a `--resume`, on a folder of unchanged images decodes none of them before training.

Each check's result for a file is kept with the file's absolute path, size and modification
time (in nanoseconds), and trusted only while all three match: a file replaced, rewritten or
touched is checked again. No result is kept for a file modified less than `RACY_SECONDS`
before its check began (a change within the file system's clock tick would keep its time),
nor where the file system keeps no modification time (`ram://`): such files are checked on
every run.

Where: one file per data folder or CSV, `<cache folder>/checks/<hash of its absolute
path>.npz`, the cache folder being `$TFRESNET_CACHE_DIR`, else `$XDG_CACHE_HOME/tfresnet`,
else `~/.cache/tfresnet` (`cache_folder`). It holds arrays only (read without pickle), is
written atomically (`tfresnet.files`), and one that cannot be read, or that is not of this
format and this data, counts as empty; where it cannot be written, nothing is kept (the
checks run as without it). Deleting the folder forgets everything.

Example:
    check = Check("file", {"reason": ("text", ())})
    kept, keys, stats = CheckCache("flowers/"), file_keys(listed), file_stats(listed)
    rows = kept.lookup(check, keys, stats)  # -1: check that file
    kept.record(check, keys, stats, {"reason": reasons}, started=started)
    kept.save()
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from typing import Callable, Sequence, TypeVar

import numpy as np

from tfresnet import paths

CACHE_ENV = "TFRESNET_CACHE_DIR"
FORMAT = "tfresnet-checks/1"
RACY_SECONDS = 2
# Files are measured in this many threads on a store (a request each); locally in a loop.
STAT_THREADS = 16
# Items in flight at a time in `run_in_threads`.
CHUNK = 1024
_TEXT, _NUMBER = "text:", "number:"
T, R = TypeVar("T"), TypeVar("R")


def cache_folder() -> str:
    """Where tfresnet keeps what it may compute again: `$TFRESNET_CACHE_DIR`, else
    `$XDG_CACHE_HOME/tfresnet`, else `~/.cache/tfresnet`.

    Example:
        cache_folder()
        # '/home/me/.cache/tfresnet'
    """
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfresnet")


def file_keys(listed: Sequence[str]) -> list[str]:
    """What names each file in the kept results: its absolute path (a URL as it is).

    Example:
        file_keys(["flowers/roses/1.jpg"])
        # ['/home/me/flowers/roses/1.jpg']
    """
    cwd = os.getcwd()
    return [_key(os.fspath(path), cwd) for path in listed]


def _key(path: str, cwd: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif not paths.is_local(path):
        return path
    return path if path.startswith("/") else os.path.join(cwd, path)


def file_stats(listed: Sequence[str]) -> np.ndarray:
    """Each file's `(size, modification time in ns)`, as an int64 array of shape `(files, 2)`:
    `(-1, -1)` for a file that cannot be measured, a time of 0 where the store keeps none.

    Example:
        file_stats(["flowers/roses/1.jpg"])
        # array([[48213, 1733000000123456789]])
    """

    def measured(path: str) -> tuple[int, int]:
        try:
            return paths.stat(path)
        except Exception:  # noqa: BLE001 - OSError, or tf.errors.NotFoundError on a store
            return -1, -1

    stats = run_in_threads(measured, listed, STAT_THREADS, local=all_local(listed))
    return np.array(stats, dtype=np.int64).reshape(len(stats), 2)


def run_in_threads(
    function: Callable[[T], R], items: Sequence[T], threads: int, *, local: bool = False
) -> list[R]:
    """`[function(item) for item in items]`, in `threads` threads, with at most `CHUNK` items in
    flight at a time (`ThreadPoolExecutor.map` would hold a future for every item at once: memory
    that grows with the number of files).

    With `local` (files on this machine's disks), in turn, in this thread: there, the work is
    Python's (headers, small decodes), and threads only contend for its lock (measured on 64 px
    JPEGs in the page cache: 2 to 2.5 times slower in 2 to 16 threads); threads are for stores,
    where each read waits on a request.

    Example:
    >>> run_in_threads(len, ["a", "bb"], threads=2)
    [1, 2]
    """
    if local or threads <= 1:
        return [function(item) for item in items]
    results: list[R] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(items), CHUNK):
            results += pool.map(function, items[start : start + CHUNK])
    return results


def all_local(listed: Sequence[str]) -> bool:
    """Whether every path of `listed` is on this machine's file system (see `run_in_threads`).

    Example:
    >>> all_local(["flowers/roses/1.jpg", "gs://bucket/flowers/daisy/2.jpg"])
    False
    """
    return all(paths.is_local(path) for path in listed)


@dataclasses.dataclass(frozen=True)
class Check:
    """A check whose results are kept: its name and its columns, each `(type, shape per file)`,
    the type `"text"` or a NumPy type name.

    Example:
    >>> Check("file", {"limit": ("int64", ()), "reason": ("text", ())}).name
    'file'
    """

    name: str
    columns: dict[str, tuple[str, tuple[int, ...]]]


class CheckCache:
    """The kept results of the checks of one data folder or CSV (`source`); see the module.

    A `Check` keeps its columns of results, one row per file: `lookup` gives the rows still
    trusted, `column` their values, `record` adds or replaces results, `retain` forgets files
    no longer listed, `save` writes the file. Recording a file whose size or time changed drops
    every check's result for it.

    Args:
        source: The folder or CSV the results are of.
        folder: The cache folder (default `cache_folder()`).

    Example:
        kept = CheckCache("flowers/")
        rows = kept.lookup(FILE_CHECK, keys, stats)
        reasons = kept.column(FILE_CHECK, "reason")[rows[rows >= 0]]
    """

    def __init__(self, source: str | os.PathLike, *, folder: str | None = None):
        self.source = paths.absolute(source).rstrip("/") or "/"
        digest = hashlib.sha256(self.source.encode()).hexdigest()[:32]
        self.path = paths.join(folder or cache_folder(), "checks", f"{digest}.npz")
        self.changed = False
        try:
            self.keys, self.sizes, self.mtimes, self.columns = _read(self.path, self.source)
        except Exception:  # noqa: BLE001 - missing, unreadable, corrupt or foreign: empty
            self.keys, self.sizes, self.mtimes, self.columns = [], _numbers(0), _numbers(0), {}
        self._index = {key: row for row, key in enumerate(self.keys)}

    def lookup(self, check: Check, keys: Sequence[str], stats: np.ndarray) -> np.ndarray:
        """The row of each file whose `check` result is kept and trusted (its key, size and
        time match, and it has a time), else -1.

        Example:
            rows = kept.lookup(FILE_CHECK, file_keys(listed), file_stats(listed))
        """
        if not self._has(check):
            return np.full(len(keys), -1, np.int64)
        rows = np.fromiter((self._index.get(key, -1) for key in keys), np.int64, len(keys))
        found = np.flatnonzero(rows >= 0)
        at = rows[found]
        trusted = (
            self.columns[f"{check.name}.kept"][at]
            & (self.sizes[at] == stats[found, 0])
            & (self.mtimes[at] == stats[found, 1])
            & (stats[found, 1] > 0)
        )
        rows[found[~trusted]] = -1
        return rows

    def _has(self, check: Check) -> bool:
        """Whether `check`'s columns are all there, of their types and shapes (if not, its
        columns are dropped: a file of another version keeps nothing of it)."""
        wanted = {**check.columns, "kept": ("bool", ())}
        names = {f"{check.name}.{name}": spec for name, spec in wanted.items()}
        found = [name for name in self.columns if name.startswith(check.name + ".")]
        if set(found) == set(names) and all(
            _fits(self.columns[name], kind, shape) for name, (kind, shape) in names.items()
        ):
            return True
        for name in found:
            del self.columns[name]
        return False

    def column(self, check: Check, name: str) -> np.ndarray:
        """The values of `check`'s column `name`, by row (rows from `lookup`).

        Example:
            kept.column(FILE_CHECK, "reason")[rows[0]]
            # ''
        """
        if f"{check.name}.{name}" in self.columns:
            return self.columns[f"{check.name}.{name}"]
        kind, shape = check.columns[name]  # nothing kept of the check: no row is trusted
        return np.zeros((len(self.keys), *shape), dtype=object if kind == "text" else kind)

    def record(
        self,
        check: Check,
        keys: Sequence[str],
        stats: np.ndarray,
        values: dict[str, Sequence],
        *,
        started: int,
    ) -> None:
        """Keeps `check`'s results (`values`: a sequence per column, a value per file) for the
        files whose time is known and older than `started` (ns, when the check began) by
        `RACY_SECONDS`.

        Example:
            kept.record(FILE_CHECK, keys, stats, {"limit": [MAX_IMAGE_PIXELS], "reason": [""]}, started=now)
        """
        keep = np.flatnonzero((stats[:, 1] > 0) & (stats[:, 1] < started - RACY_SECONDS * 10**9))
        if not len(keep):
            return
        self._has(check)
        rows = self._rows([keys[i] for i in keep])
        moved = (self.sizes[rows] != stats[keep, 0]) | (self.mtimes[rows] != stats[keep, 1])
        for name in [name for name in self.columns if name.endswith(".kept")]:
            self.columns[name][rows[moved]] = False
        self.sizes[rows], self.mtimes[rows] = stats[keep, 0], stats[keep, 1]
        for name, (kind, _) in {**check.columns, "kept": ("bool", ())}.items():
            given = np.ones(len(keys), bool) if name == "kept" else values[name]
            array = np.array(given, dtype=object if kind == "text" else kind)[keep]
            if f"{check.name}.{name}" not in self.columns:
                self.columns[f"{check.name}.{name}"] = _blank(array, len(self.keys))
            self.columns[f"{check.name}.{name}"][rows] = array
        self.changed = True

    def _rows(self, keys: list[str]) -> np.ndarray:
        """The rows of `keys`, new rows (without results) added for keys not there."""
        new = [key for key in dict.fromkeys(keys) if key not in self._index]
        if new:
            start = len(self.keys)
            self.keys += new
            self._index.update((key, start + i) for i, key in enumerate(new))
            self.sizes = np.concatenate([self.sizes, np.full(len(new), -1, np.int64)])
            self.mtimes = np.concatenate([self.mtimes, np.full(len(new), -1, np.int64)])
            for name, array in self.columns.items():
                self.columns[name] = np.concatenate([array, _blank(array, len(new))])
        return np.array([self._index[key] for key in keys], dtype=np.int64)

    def retain(self, keys: Sequence[str]) -> None:
        """Forgets the files not among `keys` (those gone from the folder or the CSV).

        Example:
            kept.retain(file_keys(listed))
        """
        wanted = set(keys)
        rows = np.array([row for row, key in enumerate(self.keys) if key in wanted], dtype=np.int64)
        if len(rows) == len(self.keys):
            return
        self.keys = [self.keys[row] for row in rows]
        self._index = {key: row for row, key in enumerate(self.keys)}
        self.sizes, self.mtimes = self.sizes[rows], self.mtimes[rows]
        self.columns = {name: array[rows] for name, array in self.columns.items()}
        self.changed = True

    def save(self) -> None:
        """Writes the kept results, if they changed, atomically; where the folder cannot be
        written, nothing is kept.

        Example:
            kept.save()
        """
        from tfresnet.files import save_arrays

        if not self.changed:
            return
        arrays = {
            "format": _bytes([FORMAT]),
            "source": _bytes([self.source]),
            "keys": _bytes(self.keys),
            "sizes": self.sizes,
            "mtimes": self.mtimes,
        }
        for name, array in self.columns.items():
            text = array.dtype == object
            arrays[(_TEXT if text else _NUMBER) + name] = _bytes(array) if text else array
        try:
            folder = os.path.dirname(self.path)
            if paths.is_local(folder):
                os.makedirs(folder, mode=0o700, exist_ok=True)  # the names of one's files
            else:
                paths.makedirs(folder)
            save_arrays(self.path, **arrays)
        except Exception:  # noqa: BLE001 - OSError, or a store's error: the checks ran anyway
            return
        self.changed = False


def _read(path: str, source: str) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The keys, sizes, times and columns of the kept results at `path`, checked to be of this
    format and of `source`; raises on anything else."""
    if not paths.exists(path):
        return [], _numbers(0), _numbers(0), {}
    with paths.open_file(path, "rb") as file, np.load(file, allow_pickle=False) as arrays:
        loaded = {name: arrays[name] for name in arrays.files}
    if _text(loaded.pop("format")) != [FORMAT] or _text(loaded.pop("source")) != [source]:
        raise ValueError("not this data's kept results")
    keys, sizes, mtimes = _text(loaded.pop("keys")), loaded.pop("sizes"), loaded.pop("mtimes")
    columns = {}
    for name, array in loaded.items():
        if name.startswith(_TEXT):
            columns[name[len(_TEXT) :]] = np.array(_text(array), dtype=object)
        elif name.startswith(_NUMBER) and array.dtype.kind in "biuf":
            columns[name[len(_NUMBER) :]] = array
        else:
            raise ValueError(f"unknown array {name!r}")
    if not (_fits(sizes, "int64", ()) and _fits(mtimes, "int64", ())):
        raise ValueError("sizes and times are not int64 numbers")
    if any(len(array) != len(keys) for array in (sizes, mtimes, *columns.values())):
        raise ValueError("arrays of different lengths")
    return keys, sizes, mtimes, columns


def _fits(array: np.ndarray, kind: str, shape: tuple[int, ...]) -> bool:
    """Whether `array` holds values of type `kind` ("text" or a NumPy type) and `shape` each."""
    dtype = np.dtype(object if kind == "text" else kind)
    return array.dtype == dtype and array.shape[1:] == tuple(shape)


def _numbers(count: int) -> np.ndarray:
    return np.zeros(count, np.int64)


def _blank(like: np.ndarray, count: int) -> np.ndarray:
    """`count` empty values of `like`'s kind: "" for text, False or 0 otherwise."""
    if like.dtype.kind in "UO":
        return np.full(count, "", dtype=object)
    return np.zeros((count, *like.shape[1:]), dtype=like.dtype)


def _bytes(texts: Sequence[str]) -> np.ndarray:
    """Texts as one uint8 array, each ended by a NUL (a NUL inside a text becomes U+FFFD)."""
    joined = "".join(str(text).replace("\0", "\ufffd") + "\0" for text in texts)
    return np.frombuffer(joined.encode("utf-8", "surrogateescape"), dtype=np.uint8)


def _text(array: np.ndarray) -> list[str]:
    """The texts `_bytes` wrote."""
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError("not text")
    return array.tobytes().decode("utf-8", "surrogateescape").split("\0")[:-1]
