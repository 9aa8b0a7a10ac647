"""Listing the files under a folder, local or on a store (`gs://bucket/photos`), in the order
`os.walk` visits them, with each file's size and modification time measured once: what the
loaders list, and what tells the file check's kept results (`check_cache`) that a file changed.

Locally, one directory scan per folder and one `stat` per file; on a store, one listing per
folder (`tf.io.gfile.walk`) and one request per file, in threads.

Example:
    found, stats = list_files("flowers/daisy")
    found[0], stats[0]
    # ('flowers/daisy/1.jpg', array([48213, 1733000000123456789]))
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from tfresnet import paths
from tfresnet.data.check_cache import file_stats


def class_folders(directory: str) -> list[str]:
    """The names of the folders in `directory` (links to folders too), sorted, hidden ones left out.

    Example:
        class_folders("flowers/")
        # ['daisy', 'roses']
    """
    if paths.is_local(directory):
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries if entry.is_dir()]
        return sorted(name for name in names if not name.startswith("."))
    return [
        name
        for name in paths.listdir(directory)
        if not name.startswith(".") and paths.isdir(paths.join(directory, name))
    ]


def files_under(folder: str, *, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """The files under `folder` (local or on a store), recursively, in sorted order, without
    hidden files and folders; with `suffixes`, only those whose lower-case name ends with one
    of them.

    Example:
        files_under("flowers/daisy", suffixes=(".jpg", ".png"))[:1]
        # ['flowers/daisy/1.jpg']
    """
    return _listed(folder, suffixes, measure=False)[0]


def list_files(folder: str, *, suffixes: tuple[str, ...] | None = None) -> tuple[list[str], np.ndarray]:
    """`files_under(folder, suffixes=suffixes)`, and each file's `(size, modification time in
    ns)` as an int64 array of shape `(files, 2)` (`(-1, -1)` where it cannot be measured; a time
    of 0 where the store keeps none).

    Example:
        found, stats = list_files("flowers/daisy")
    """
    found, stats = _listed(folder, suffixes, measure=True)
    return found, np.array(stats, dtype=np.int64).reshape(len(found), 2)


def _listed(folder: str, suffixes: tuple[str, ...] | None, *, measure: bool) -> tuple[list[str], list]:
    def wanted(name: str) -> bool:
        return not name.startswith(".") and (suffixes is None or name.lower().endswith(suffixes))

    folder = os.fspath(folder)
    if not paths.is_local(folder):
        found = []
        for root, folders, files in paths.walk(folder):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            found += [paths.join(root, name) for name in sorted(files) if wanted(name)]
        return found, list(file_stats(found)) if measure else []
    found, stats = [], []
    _scan(folder, wanted, found, stats if measure else None)
    return found, stats


def _scan(folder: str, wanted: Callable[[str], bool], found: list[str], stats: list | None) -> None:
    """Adds the files of `folder` (sorted), then those of its sub-folders (sorted, recursively),
    to `found`, as `os.walk` visits them (a folder it cannot read, or a link to a folder, is not
    entered); with `stats`, their sizes and times too."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError:
        return
    folders = []
    for entry in entries:
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        if is_folder:
            if not entry.name.startswith(".") and not entry.is_symlink():
                folders.append(entry.path)
        elif wanted(entry.name):
            found.append(entry.path)
            if stats is not None:
                try:
                    measured = entry.stat()
                    stats.append((measured.st_size, measured.st_mtime_ns))
                except OSError:
                    stats.append((-1, -1))
    for path in folders:
        _scan(path, wanted, found, stats)
