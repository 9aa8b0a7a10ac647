"""Paths on any file system TensorFlow has: local folders and stores named by a scheme.

A path with a scheme (`gs://bucket/photos`, `s3://...`, `hdfs://...`, `ram://...`) is read and
written through `tf.io.gfile`, so every store TensorFlow (or one of its plugins) reaches works;
a local path goes through the standard library, which keeps atomic renames and the umask's
file modes. Every function here takes either; TensorFlow is imported for the first path that
names a store, so this module, like `tfresnet.files`, sits below every other.

What holds on a store without atomic renames (object stores: GCS, S3; `ram://`): a file is
written whole under a temporary name and then renamed (copied) to its own, so an object
appears whole or not at all; a folder (`replace_folder`) is moved file by file, so a process
killed meanwhile can leave it part old, part new, and the next export (or `--resume`) writes
it again. There is no file lock there either: a file cache on such a store serves one run at
a time.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from typing import Iterator


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on the local file system (no scheme, or `file://`), rather than on a
    store `tf.io.gfile` reaches (`gs://`, `s3://`, `hdfs://`, `ram://`, ...).

    Example:
    >>> is_local("flowers/roses/1.jpg"), is_local("gs://bucket/flowers")
    (True, False)
    """
    path = os.fspath(path)
    return "://" not in path or path.startswith("file://")


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _local(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    return path[len("file://") :] if path.startswith("file://") else path


def join(folder: str | os.PathLike, *names: str) -> str:
    """`os.path.join` for local paths and URLs alike (`gs://bucket` + `a.jpg`).

    Example:
    >>> join("gs://bucket/flowers", "roses", "1.jpg")
    'gs://bucket/flowers/roses/1.jpg'
    """
    return os.path.join(os.fspath(folder), *names)


def absolute(path: str | os.PathLike) -> str:
    """`os.path.abspath` for a local path; a URL as it is (`abspath` would mangle its `//`).

    Example:
    >>> absolute("gs://bucket/runs/flowers")
    'gs://bucket/runs/flowers'
    """
    path = os.fspath(path)
    return os.path.abspath(_local(path)) if is_local(path) else path


def exists(path: str | os.PathLike) -> bool:
    """Whether a file or folder `path` exists.

    Example:
        exists("gs://bucket/flowers")
    """
    if is_local(path):
        return os.path.exists(_local(path))
    return _gfile().exists(os.fspath(path)) and _listed(path)


# How many levels `_listed` looks down for a file under a `ram://` folder.
RAM_FOLDER_DEPTH = 8


def _listed(path: str | os.PathLike) -> bool:
    """Whether `path` is a file or a folder of files by its full name. TensorFlow's in-memory
    `ram://` file system says that a name exists (and is a folder) when another name merely
    starts with it (`a.onnx` when only `a.onnx.json` is there); its glob matches whole names.
    Other stores answer for the name itself."""
    path = os.fspath(path).rstrip("/")
    if not path.startswith("ram://"):
        return True
    pattern = "".join(f"[{character}]" if character in "*?[" else character for character in path)
    # A folder there is only the names under it: look a few levels down for one.
    return any(_gfile().glob(pattern + "/*" * depth) for depth in range(RAM_FOLDER_DEPTH + 1))


def isdir(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder.

    Example:
        isdir("gs://bucket/flowers")
    """
    if is_local(path):
        return os.path.isdir(_local(path))
    return _gfile().isdir(os.fspath(path)) and _listed(path)


def isfile(path: str | os.PathLike) -> bool:
    """Whether `path` is a file (it exists and is not a folder).

    Example:
        isfile("gs://bucket/labels.csv")
    """
    if is_local(path):
        return os.path.isfile(_local(path))
    return exists(path) and not _gfile().isdir(os.fspath(path))


def listdir(path: str | os.PathLike) -> list[str]:
    """The names in the folder `path`, sorted (no trailing `/` on folder names).

    Example:
        listdir("gs://bucket/flowers")
        # ['daisy', 'roses']
    """
    if is_local(path):
        return sorted(os.listdir(_local(path)))
    return sorted(name.rstrip("/") for name in _gfile().listdir(os.fspath(path)))


def walk(folder: str | os.PathLike) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(folder)` (top down; prune by editing the folder list in place) on any file system.

    Example:
        for root, folders, files in walk("gs://bucket/flowers"):
            folders.sort()
    """
    if is_local(folder):
        yield from os.walk(os.fspath(folder))
        return
    for root, folders, files in _gfile().walk(os.fspath(folder)):
        folders[:] = [name.rstrip("/") for name in folders]
        yield root.rstrip("/"), folders, files


def stat(path: str | os.PathLike) -> tuple[int, int]:
    """A file's size in bytes and modification time in nanoseconds (0 where the store keeps
    none, as `ram://`).

    Example:
        size, modified = stat("flowers/roses/1.jpg")
    """
    if is_local(path):
        result = os.stat(_local(path))
        return result.st_size, result.st_mtime_ns
    result = _gfile().stat(os.fspath(path))
    return int(result.length), int(result.mtime_nsec)


def open_file(
    path: str | os.PathLike, mode: str = "r", *, encoding: str = "utf-8", newline: str | None = None
):
    """A file object for `path`: `open()` for a local path; `tf.io.gfile.GFile` for a store
    (a text file read from a store is read whole, so that `encoding` and `newline` apply as
    `open()` applies them).

    Example:
        with open_file("gs://bucket/labels.csv", newline="") as file:
            rows = list(csv.reader(file))
    """
    binary = "b" in mode
    if is_local(path):
        if binary:
            return open(_local(path), mode)
        return open(_local(path), mode, encoding=encoding, newline=newline)
    gfile = _gfile().GFile(os.fspath(path), mode if binary or "r" not in mode else "rb")
    if binary or "r" not in mode:
        return gfile
    with gfile:
        return io.TextIOWrapper(io.BytesIO(gfile.read()), encoding=encoding, newline=newline)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The contents of the file `path`.

    Example:
        read_bytes("gs://bucket/flowers/roses/1.jpg")[:3]  # a JPEG starts with FF D8 FF
    """
    with open_file(path, "rb") as file:
        return file.read()


def makedirs(path: str | os.PathLike) -> None:
    """Creates the folder `path` and its parents (nothing to do where it exists).

    Example:
        makedirs("gs://bucket/runs/flowers")
    """
    if is_local(path):
        os.makedirs(_local(path), exist_ok=True)
    else:
        _gfile().makedirs(os.fspath(path))


def remove(path: str | os.PathLike) -> None:
    """Deletes the file `path`, if it is there.

    Example:
        remove("runs/flowers/training_done.json")
    """
    try:
        if is_local(path):
            os.remove(_local(path))
        else:
            _gfile().remove(os.fspath(path))
    except FileNotFoundError:
        pass
    except Exception as error:  # tf.errors.NotFoundError
        if type(error).__name__ != "NotFoundError":
            raise


def rmtree(path: str | os.PathLike) -> None:
    """Deletes the folder `path` and everything in it, if it is there.

    Example:
        rmtree("runs/flowers/backup")
    """
    if is_local(path):
        shutil.rmtree(_local(path), ignore_errors=True)
    elif _gfile().exists(os.fspath(path)):
        _gfile().rmtree(os.fspath(path))


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies the file `source` to `target` (either may be on a store), replacing it; on a store,
    under another name first, then renamed over `target` (some stores append to a file they
    are told to overwrite).

    Example:
        copy_file("gs://bucket/best.weights.h5", "/tmp/best.weights.h5")
    """
    if is_local(target):
        if is_local(source):
            shutil.copyfile(_local(source), _local(target))
        else:
            _gfile().copy(os.fspath(source), _local(target), overwrite=True)
        return
    target = os.fspath(target)
    beside = join(os.path.dirname(target), f".{uuid.uuid4().hex}.{os.path.basename(target)}")
    _gfile().copy(os.fspath(source), beside)
    _gfile().rename(beside, target, overwrite=True)


def copy_tree(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies the folder `source` into the new folder `target` (either may be on a store).

    Example:
        copy_tree("gs://bucket/runs/flowers/backup", "/tmp/backup")
    """
    if is_local(source) and is_local(target):
        shutil.copytree(_local(source), _local(target))
        return
    source = os.fspath(source)
    for root, _, names in walk(source):
        relative = os.path.relpath(root, source)
        folder = target if relative == "." else join(target, relative)
        makedirs(folder)
        for name in names:
            copy_file(join(root, name), join(folder, name))


def staging_folder(target: str | os.PathLike) -> str:
    """A new, empty folder beside `target` to write a folder into before `replace_folder`;
    created with the modes `mkdir` gives (not `mkdtemp`'s owner-only ones).

    Example:
        staging = staging_folder("exports/flowers/1")
    """
    target = os.fspath(target).rstrip("/")
    parent, name = os.path.dirname(target), os.path.basename(target)
    makedirs(parent or ".")
    if not is_local(target):
        staging = join(parent, f".{name}.{uuid.uuid4().hex}")
        makedirs(staging)
        return staging
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=_local(parent) or ".")
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Moves the folder `source` to `target`, replacing the folder there.

    Locally, by renames: an existing `target` is renamed aside first and removed after, so
    that after a kill at any moment one whole folder is at `target` (or aside, where
    `restore_folder` puts it back). On a store without folder renames, file by file (see the
    module's note).

    Example:
        staging = staging_folder("exports/flowers/1")
        write_json(join(staging, "config.json"), {})
        replace_folder(staging, "exports/flowers/1")
    """
    source, target = os.fspath(source), os.fspath(target).rstrip("/")
    if not is_local(target):
        rmtree(target)
        for root, _, names in walk(source):
            relative = os.path.relpath(root, source)
            folder = target if relative == "." else join(target, relative)
            makedirs(folder)
            for name in names:
                _gfile().rename(join(root, name), join(folder, name), overwrite=True)
        rmtree(source)
        return
    source, target = _local(source), _local(target)
    if not os.path.exists(target):
        os.rename(source, target)
        return
    aside = _aside(target)
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(target, aside)
    try:
        os.rename(source, target)
    except BaseException:
        if not os.path.exists(target):
            os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _aside(target: str) -> str:
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.previous")


def restore_folder(target: str | os.PathLike) -> None:
    """Puts back a folder that a `replace_folder` killed between its two renames left aside.

    Example:
        restore_folder("exports/flowers/1")
    """
    if not is_local(target):
        return
    target = _local(target).rstrip("/")
    aside = _aside(target)
    if os.path.isdir(aside) and not os.path.exists(target):
        os.rename(aside, target)


def current_umask() -> int:
    """The process's umask (Python can only read it by setting it, so it is set back at once).

    Example:
    >>> umask = os.umask(0o022)
    >>> oct(0o777 & ~current_umask())  # the mode of a new folder
    '0o755'
    >>> _ = os.umask(umask)
    """
    umask = os.umask(0o077)
    os.umask(umask)
    return umask
