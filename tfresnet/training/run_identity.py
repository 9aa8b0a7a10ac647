"""What a run is: the settings that decide what its weights mean, recorded in `run.json` when
the run starts and compared when it resumes.

A run's weights mean something only with the network they fit (backbone, weights it started
from, head, image size), the classes they score, whether they are a moving average, and the
data they were trained on. `run_identity` gathers those facts (a weights file by its SHA-256,
the data by `ImageData.fingerprint`); `compare` raises `RunMismatch`, naming what changed, when
a resume would continue a run with other ones.

Example:
    identity = run_identity(data, backbone="resnet50", weights="imagenet", head_units=None,
                            dropout=0.2, ema=False)
    compare(read_json("runs/flowers/run.json"), identity, "runs/flowers")
"""

from __future__ import annotations

import functools
import hashlib
import os

from tfresnet import paths

IDENTITY_FILE = "run.json"
# The facts compared, in the order a difference is told; each decides what the weights mean.
FIELDS = ("backbone", "weights", "head_units", "dropout", "image_size", "ema", "class_names", "data")
# Class names shown when a list of them changed.
SHOWN_NAMES = 5


class ResumeError(ValueError):
    """A resume that cannot continue the run its folder holds: bad input, found before training."""


class RunMismatch(ResumeError):
    """The run in `output_dir` was started with other settings than those of the resume.

    `str()` words it for the library (`resume=True`), `for_command()` for the command's flags.
    """

    def __init__(self, output_dir: str, changes: list[str]):
        self.output_dir = output_dir
        self.changes = changes
        super().__init__(
            f"resume=True: the run in {output_dir!r} was started with {'; '.join(changes)}. "
            f"Start afresh: pass another output_dir, or resume=False."
        )

    def for_command(self) -> str:
        """The same, in the command's words.

        Example:
        >>> RunMismatch("runs/a", ["image_size 64, now 96"]).for_command()[:60]
        "--resume: the run in 'runs/a' was started with image_size 64"
        """
        return (
            f"--resume: the run in {self.output_dir!r} was started with {'; '.join(self.changes)}; "
            f"start afresh with another --output-dir or without --resume."
        )


def run_identity(
    data,
    *,
    backbone: str,
    weights: str | os.PathLike | None,
    head_units: int | None,
    dropout: float,
    ema: bool,
) -> dict:
    """The facts that decide what a run's weights mean (see `FIELDS`), as `run.json` holds them.

    Example:
        run_identity(data, backbone="resnet-tiny", weights=None, head_units=None, dropout=0.2, ema=False)
        # {'backbone': 'resnet-tiny', 'weights': None, 'head_units': None, 'dropout': 0.2, ...}
    """
    return {
        "backbone": backbone,
        "weights": weights_identity(weights),
        "head_units": head_units or None,
        "dropout": float(dropout),
        "image_size": int(data.image_size),
        "ema": bool(ema),
        "class_names": [str(name) for name in data.class_names],
        "data": data.fingerprint,
    }


def weights_identity(weights: str | os.PathLike | None) -> str | dict | None:
    """A name (`"imagenet"`, `"torchvision:..."`, None) as it is; a file (local or on a store,
    `gs://...`) by its path and SHA-256.

    Example:
        weights_identity("my.weights.h5")
        # {'file': 'my.weights.h5', 'sha256': '9f2c...'}
    """
    if weights is None:
        return None
    path = os.fspath(weights)
    if not paths.isfile(path):
        return path
    size, mtime_ns = paths.stat(path)
    # A store that keeps no modification time (ram://) cannot tell a change: read each time.
    sha256 = _cached_sha256(paths.absolute(path), size, mtime_ns) if mtime_ns else _sha256(path)
    return {"file": path, "sha256": sha256}


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """`_sha256`, once per process for a file unchanged (the command checks, then trains)."""
    return _sha256(path)


def _sha256(path: str) -> str:
    """The SHA-256 of a file, local or on a store."""
    digest = hashlib.sha256()
    with paths.open_file(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compare(recorded: dict, identity: dict, output_dir: str) -> None:
    """Raises `RunMismatch` naming every fact of `identity` that differs from `recorded`.

    Example:
        compare({"image_size": 64, ...}, {"image_size": 96, ...}, "runs/flowers")
        # Traceback (most recent call last):
        # RunMismatch: resume=True: the run in 'runs/flowers' was started with image_size 64, now 96. ...
    """
    changes = [
        _change(name, recorded.get(name), identity.get(name))
        for name in FIELDS
        if not _same(name, recorded.get(name), identity.get(name))
    ]
    if changes:
        raise RunMismatch(output_dir, changes)


def _same(name: str, recorded, now) -> bool:
    if name == "weights" and isinstance(recorded, dict) and isinstance(now, dict):
        return recorded.get("sha256") == now.get("sha256")  # a file moved keeps its contents
    return recorded == now


def _change(name: str, recorded, now) -> str:
    """One difference, in words: `"image_size 64, now 96"`."""
    if name == "class_names":
        return _class_change(recorded or [], now or [])
    if name == "data":
        return (
            "other data: the files (their names, sizes, labels or split) or the dataset differ "
            "from those it trained on"
        )
    if name == "ema":
        return f"ema {'on' if recorded else 'off'}, now {'on' if now else 'off'}"
    if name == "weights" and isinstance(recorded, dict) and isinstance(now, dict):
        before, after = (f"{value['file']!r} (sha256 {value['sha256'][:12]})" for value in (recorded, now))
        return f"weights {before}, now {after}"
    return f"{name} {_shown(recorded)}, now {_shown(now)}"


def _shown(value) -> str:
    if isinstance(value, dict) and "file" in value:
        return repr(value["file"])
    return "none" if value is None else repr(value) if isinstance(value, str) else str(value)


def _class_change(recorded: list[str], now: list[str]) -> str:
    gone = [name for name in recorded if name not in now]
    new = [name for name in now if name not in recorded]
    if not gone and not new:
        return f"classes {_names(recorded)}, now in another order: {_names(now)}"
    told = [f"gone: {_names(gone)}" if gone else "", f"new: {_names(new)}" if new else ""]
    return f"classes {_names(recorded)}, now {_names(now)} ({', '.join(part for part in told if part)})"


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return f"[{shown}{f', and {more} more' if more > 0 else ''}]"
