"""Fingerprints and caches: what data is, as a hash (`fingerprint_of`, which a resumed run
checks), and the loaders' caches, in memory or in files named after everything that decides
their contents (`cache_fingerprint`), with the cleanup of what a killed run left of them.

Example:
    dataset = cached(dataset, "/tmp/cache", "validation-" + cache_fingerprint("/tmp/cache", "flowers"))
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import os
from typing import IO

import numpy as np
import tensorflow as tf

from tfresnet import paths

# The file caches this process may fill, each claimed by an exclusive lock held until it ends.
_CLAIMED_CACHES: dict[str, IO] = {}


def fingerprint_of(*parts) -> str:
    """A SHA-256 of `parts`: arrays by their shape, type and bytes, anything else by its `repr`.

    Example:
    >>> fingerprint_of("tf_flowers/3.0.1", "train", np.array([3, 7]))[:12]
    'c742130eed7a'
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(repr((part.shape, part.dtype.str)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cache_fingerprint(cache: bool | str | os.PathLike, *parts) -> str:
    """Names a file cache after everything that decides its contents, so none goes stale
    (nothing to name for a memory cache or none)."""
    if isinstance(cache, bool):
        return ""
    return fingerprint_of(*parts)[:16]


def cached(dataset: tf.data.Dataset, cache: bool | str | os.PathLike, name: str) -> tf.data.Dataset:
    """`dataset` cached as asked: in memory (True), not at all (False), or in files named `name`
    in the folder `cache` (local or on a store, `gs://...`), after clearing what a killed run
    left there."""
    if cache is True:
        return dataset.cache()
    if cache is False:
        return dataset
    paths.makedirs(cache)
    prefix = paths.join(os.fspath(cache), name)
    clear_stale_cache(prefix)
    return dataset.cache(prefix)


def clear_stale_cache(prefix: str) -> None:
    """Removes what a killed run left of the file cache `prefix`, so that the cache fills anew.

    While tf.data fills a file cache it keeps `<prefix>_<shard>.lockfile` and temporary files,
    and removes them when the cache is complete or its iterator is dropped; a run killed
    meanwhile leaves them, and the lockfile then stops every later run ("concurrent caching
    iterator running"). A complete cache (`<prefix>.index`) is left alone. Leftovers are
    removed only by the process holding an exclusive lock on `<prefix>.lock`, which it keeps
    until it ends (the system releases it however the process ends): a cache that another
    live run is filling is never touched, and fails as tf.data says instead. On a store
    (`gs://...`) there is no lock: a cache folder there serves one run at a time.

    Example:
        clear_stale_cache("/tmp/cache/validation-3f2a9c1d0b7e4a55")
    """
    if paths.exists(prefix + ".index"):
        return
    if not paths.is_local(prefix):
        folder, name = os.path.dirname(prefix), os.path.basename(prefix)
        for left in paths.listdir(folder):
            if left.startswith(name + "_"):
                paths.remove(paths.join(folder, left))
        return
    if not _claim_cache(prefix):
        return
    for path in glob.glob(glob.escape(prefix) + "_*"):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _claim_cache(prefix: str) -> bool:
    """Takes, or already holds, the exclusive lock on `<prefix>.lock` (without waiting)."""
    if prefix in _CLAIMED_CACHES:
        return True
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): a cache directory serves one run at a time
        return True
    handle = open(prefix + ".lock", "a")  # held open until the process ends
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _CLAIMED_CACHES[prefix] = handle
    atexit.register(handle.close)
    return True
