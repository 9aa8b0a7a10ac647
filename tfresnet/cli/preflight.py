"""Checks a run's inputs before any training: the backbone, its weights, the output folders,
and where multi-label data can come from.

What the backbone's row of `tfresnet.models.backbones` answers is checked without building anything
(the image size, where training starts, the package a weights file needs); the network is built
(then dropped) only where nothing else can tell: a user's weights file, a Hub module, a layer
name that is not a stage. `check_writable` creates the folders a run writes into.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import uuid

from tfresnet import paths

# The optional packages that reading a weights file needs, by its suffix.
WEIGHTS_PACKAGES = {
    ".pth": ("torch", "pip install torch"),
    ".pt": ("torch", "pip install torch"),
    ".safetensors": ("safetensors", "pip install safetensors"),
}


def check_backbone(*, backbone: str, weights: str | None, image_size: int, freeze_until: int | str) -> bool:
    """The checks that the backbone's row answers: image size, `freeze_until`, packages.

    Returns:
        Whether the network must be built (by `check_weights`) to check the rest: to load a
        weights file, to open a Hub module, or to find a `freeze_until` that is not a stage.

    Example:
    >>> check_backbone(backbone="resnet50", weights=None, image_size=224, freeze_until="conv5")
    False
    """
    from tfresnet import models
    from tfresnet.models import backbones
    from tfresnet.models.backbones import TORCHVISION_PREFIX
    from tfresnet.models.freezing import first_trainable_from_table

    row, handle = backbones.get_backbone(backbone)
    if image_size < models.MIN_IMAGE_SIZE:
        raise ValueError(
            f"--image-size must be at least {models.MIN_IMAGE_SIZE} for a ResNet50. "
            f"Received: --image-size {image_size}"
        )
    named = weights in (None, "imagenet") or weights.startswith(TORCHVISION_PREFIX)
    if handle is None and not named:  # a file of the user's: it must load
        _check_weights_packages(row, weights)
    try:
        known = first_trainable_from_table(row, freeze_until) is not None or freeze_until == 0
    except ValueError as error:
        raise ValueError(f"--freeze-until {freeze_until}: {error}") from None
    return handle is not None or not named or not known


def check_weights(
    *, backbone: str, weights: str | None, image_size: int, freeze_until: int | str, build: bool
) -> None:
    """Fetches named weights into the Keras cache (once) and, if `build`, builds the classifier
    with its weights and `freeze_until`, then drops it.

    Example:
        check_weights(backbone="resnet50", weights="imagenet", image_size=224, freeze_until=0, build=False)
    """
    from tfresnet import models
    from tfresnet.models import backbones
    from tfresnet.models.weights import resolve_weights

    row, handle = backbones.get_backbone(backbone)
    if handle is None:
        resolve_weights(row, weights)
    if build:
        model = models.build_classifier(
            2,
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            freeze_until=freeze_until,
        )
        del model


def _check_weights_packages(row, path: str) -> None:
    """A PyTorch or safetensors file needs its package: say which, and how to install it."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in WEIGHTS_PACKAGES or not row.torchvision_weights:
        return  # not a state dict, or a backbone that refuses state dicts (said when loading)
    package, install = WEIGHTS_PACKAGES[suffix]
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"--weights {path!r} is a {suffix} file: reading it needs the {package} package, "
            f"which is not installed: {install}"
        )


def check_writable(folders: list[tuple[str, str]]) -> None:
    """Creates each folder and writes a file in it; on failure removes the folders it created.

    A folder may be on a store (`gs://bucket/runs`): it is created, a file written in it and
    removed (a store's folders are names, none is removed on failure).

    Args:
        folders: `(flag, folder)` pairs; the flag names the folder in the error.

    Example:
    >>> check_writable([("--output-dir", "runs/flowers")])
    """
    created: list[str] = []
    try:
        for flag, folder in folders:
            if not paths.is_local(folder):
                _check_store_folder(flag, folder)
                continue
            missing = []
            path = os.path.abspath(folder)
            while not os.path.exists(path):
                missing.append(path)
                path = os.path.dirname(path)
            try:
                os.makedirs(folder, exist_ok=True)
                created.extend(reversed(missing))
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as error:
                raise _not_writable(flag, folder, error.strerror or error) from None
    except OSError:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise


def _check_store_folder(flag: str, folder: str) -> None:
    """Creates `folder` on its store and writes (then removes) a file in it."""
    import tensorflow as tf

    probe = paths.join(folder, f".tfresnet-write-check-{uuid.uuid4().hex}")
    try:
        paths.makedirs(folder)
        with paths.open_file(probe, "wb") as file:
            file.write(b"")
        paths.remove(probe)
    except tf.errors.OpError as error:
        raise _not_writable(flag, folder, error.message or type(error).__name__) from None


def _not_writable(flag: str, folder: str, why: object) -> OSError:
    return OSError(f"{flag} {folder!r} cannot be written ({why}). Pass a folder you can write to.")


def check_multi_label(*, multi_label: bool, label_delimiter: str, source: str, calibrate: bool) -> None:
    """Raises a ValueError unless the multi-label flags fit together: `--multi-label` reads label
    sets from a CSV (`source` is the data flag given), `--label-delimiter` goes with it, and
    `--calibrate` (one softmax temperature) does not.

    Example:
    >>> check_multi_label(multi_label=True, label_delimiter=" ", source="--csv", calibrate=False)
    """
    from tfresnet.data.label_sets import LABEL_DELIMITER

    if multi_label and source != "--csv":
        given = "--data-dir (a folder of class folders)" if source == "--data-dir" else source
        raise ValueError(
            f"--multi-label reads each image's labels from a CSV's label column, and {given} gives "
            f"one label per image. Pass --csv FILE whose label column lists the labels, e.g. "
            f"'clear primary road'."
        )
    if label_delimiter != LABEL_DELIMITER and not multi_label:
        raise ValueError(
            "--label-delimiter separates the labels of --multi-label. Pass --multi-label or drop it."
        )
    if multi_label and calibrate:
        raise ValueError(
            "--calibrate fits one softmax temperature, and --multi-label models have a sigmoid per label "
            "with thresholds chosen on the validation set. Drop --calibrate."
        )
