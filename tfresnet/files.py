"""Files written whole or not at all: atomic writes, JSON, figures.

Every file here is written beside its target and renamed over it, so a process killed at any
moment leaves either the previous file or the new one, never half of one. The standard
library only (the model and the figure are passed in), so every layer of tfresnet can use it.
A path may name any file system TensorFlow has (`gs://bucket/runs`): see `tfresnet.paths`,
which says what holds on stores without atomic renames.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import TYPE_CHECKING, Any, Callable

from tfresnet.paths import copy_file, current_umask, exists, is_local, join, open_file

if TYPE_CHECKING:
    import keras


def write_atomically(path: str, write: Callable[[str], Any]) -> None:
    """Calls `write(temporary_path)` beside `path`, then renames the result over `path`.

    If `write` fails, `path` keeps its previous content and the temporary file is removed.
    The file gets the permissions of a file `open()` creates (0644 under umask 022), not the
    owner-only ones of `tempfile.mkstemp`.

    On a store named by a scheme (`gs://...`), `write` writes a local temporary file, which
    is copied beside `path` and renamed over it through `tf.io.gfile` (see the module's note).

    Example:
    >>> write_atomically("notes.txt", lambda temporary: open(temporary, "w").write("done"))
    """
    path = os.fspath(path)
    if not is_local(path):
        _write_remote(path, write)
        return
    handle, temporary = tempfile.mkstemp(
        dir=os.path.dirname(path) or ".", prefix=".", suffix=os.path.basename(path)
    )
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_remote(path: str, write: Callable[[str], Any]) -> None:
    """`write_atomically` for a path on a store named by a scheme."""
    import tensorflow as tf

    gfile = tf.io.gfile
    handle, local = tempfile.mkstemp(suffix=os.path.basename(path))
    os.close(handle)
    beside = join(os.path.dirname(path), f".{uuid.uuid4().hex}.{os.path.basename(path)}")
    try:
        write(local)
        gfile.copy(local, beside, overwrite=True)
        gfile.rename(beside, path, overwrite=True)
    finally:
        os.remove(local)
        if gfile.exists(beside):
            gfile.remove(beside)


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Writes the model's weights beside `path`, then renames them over it.

    Example:
        save_weights_atomically(model, "runs/flowers/best.weights.h5")
    """
    write_atomically(path, lambda temporary: model.save_weights(temporary, overwrite=True))


def copy_atomically(source: str, path: str) -> None:
    """Copies the file `source` beside `path`, then renames the copy over it.

    Example:
        copy_atomically("runs/flowers/backup/head/latest.weights.h5", "runs/flowers/best.weights.h5")
    """
    write_atomically(path, lambda temporary: copy_file(source, temporary))


def write_text(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically.

    Example:
    >>> write_text("notes.txt", "trained on flowers/")
    """

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as file:
            file.write(text)

    write_atomically(path, write)


def save_arrays(path: str, **arrays) -> None:
    """Writes NumPy arrays to the `.npz` file `path` atomically (`np.savez`; read with `np.load`).

    Example:
        save_arrays("runs/tuning/features.npz", train=np.zeros((4, 2048)))
    """
    import numpy as np

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:  # a file object: savez adds no ".npz" to it
            np.savez(file, **arrays)

    write_atomically(path, write)


def write_json(path: str, value: Any) -> None:
    """Writes `value` as JSON to `path` atomically (values JSON lacks are written as text).

    Example:
        write_json("runs/flowers/config.json", {"epochs": 10})
    """

    def write(temporary: str) -> None:
        with open(temporary, "w") as file:
            json.dump(value, file, indent=2, default=str)

    write_atomically(path, write)


def new_figure(width: float, height: float, *, needed_by: str = "The plots"):
    """A matplotlib `Figure` of `width` x `height` inches, drawn off screen (no pyplot).

    matplotlib is imported here, when a plot is drawn, and only then.

    Raises:
        ImportError: matplotlib is missing; the message says that `needed_by` needs it and
            how to install it.

    Example:
        figure = new_figure(6, 4, needed_by="find_lr's plot")
        figure.subplots().plot([1, 2, 3])
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"{needed_by} need matplotlib ({error}): pip install matplotlib.") from error
    return Figure(figsize=(width, height))


def save_figure(figure, path: str, **options) -> None:
    """Saves a matplotlib figure beside `path` (in the format its suffix names; `options` go to
    `figure.savefig`), then renames it over `path`.

    Example:
        save_figure(figure, "runs/flowers/confusion_matrix.png")
    """
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    write_atomically(path, lambda temporary: figure.savefig(temporary, format=suffix, **options))


def read_json(path: str) -> Any:
    """The JSON value in `path`, or None when there is no such file.

    Raises:
        ValueError: The file is not JSON (written by hand, or half-written by a tool that
            does not rename); the message names it.

    Example:
        read_json("runs/flowers/best.json")["value"]
        # 0.93
    """
    if not exists(path):
        return None
    with open_file(path, "rb") as file:
        try:
            return json.load(file)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(
                f"{path!r} is not valid JSON ({error}): it was cut short or edited by hand. "
                f"Restore or delete it."
            ) from None
