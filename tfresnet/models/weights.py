"""Resolving and loading backbone weights: the Keras cache, local files, torchvision's files.

`resolve_weights(row, weights)` turns what users pass as `weights=` into a file (Keras
downloads ImageNet files once into its cache, `~/.keras/models` or `$KERAS_HOME/models`), and
`load_weights(network, path, row)` loads one into a backbone, with an error that says what is
wrong and how to fix it when the file is missing, of another kind or of another architecture.
A user's file may be on any file system TensorFlow has (`gs://bucket/resnet50.weights.h5`): a
Keras file is copied to a local temporary file to load (HDF5 reads local files only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import Iterator

import h5py
import keras

from tfresnet import paths
from tfresnet.models.backbones import BACKBONES, TORCHVISION_PREFIX, Backbone
from tfresnet.models.torchvision_resnet import STATE_DICT_SUFFIXES, load_state_dict


def resolve_weights(row: Backbone, weights: str | os.PathLike | None) -> str | None:
    """The file that `weights=` names for the backbone `row` (None: random weights).

    Args:
        row: The backbone's row of `tfresnet.models.backbones.BACKBONES`.
        weights: `"imagenet"`, None, a file path (local or on a store, `gs://...`), or for
            torchvision backbones `"torchvision:<version>"`.

    Returns:
        The path of the file to load, downloaded into the Keras cache when needed, or None.

    Example:
    >>> resolve_weights(BACKBONES["resnet50"], None) is None
    True
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'imagenet', None or a file path. Received: weights={weights!r}")
    if weights is None:
        return None
    if row.test_only:
        raise ValueError(
            f"backbone={row.name!r} is a tiny network for tests and smoke runs, without "
            f"pretrained weights: pass weights=None. Received: weights={weights!r}"
        )
    if weights == "imagenet" and row.torchvision_weights:
        weights = f"{TORCHVISION_PREFIX}DEFAULT"
    if isinstance(weights, str) and weights.startswith(TORCHVISION_PREFIX):
        return _torchvision_weights_path(row, weights[len(TORCHVISION_PREFIX) :])
    if weights == "imagenet":
        return _imagenet_weights_path(row)
    return os.fspath(weights)


def _weights_cache_dir() -> str:
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def _file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_file(file_name: str, url: str, file_hash: str | None, what: str, example: str) -> str:
    """`file_name` in the Keras cache, downloaded by Keras when missing.

    A cached file whose hash is not `file_hash` (MD5, or SHA256 when 64 digits long) is refused
    and left in place: Keras would delete it to download it again, and offline lose it.
    """
    path = os.path.join(_weights_cache_dir(), file_name)
    if os.path.isfile(path):
        algorithm = "sha256" if file_hash and len(file_hash) == 64 else "md5"
        actual = _file_digest(path, algorithm) if file_hash else file_hash
        if actual != file_hash:
            raise ValueError(
                f"{path!r} is in the Keras cache but is not {what}: its {algorithm.upper()} is "
                f"{actual}, not the published {file_hash} (an interrupted download, or another "
                f"file of that name?). Delete it to download it again, or pass weights={path!r} "
                "to load that file as it is."
            )
        return path
    try:
        return keras.utils.get_file(
            file_name,
            url,
            cache_subdir="models",
            cache_dir=os.path.dirname(_weights_cache_dir()),
            file_hash=file_hash,
        )
    except Exception as error:  # Keras raises a bare Exception on a failed fetch
        raise OSError(
            f"Could not download {what} ({file_name}): {error}. Without network access, download "
            f"that file elsewhere and put it in {_weights_cache_dir()} (the Keras cache; KERAS_HOME "
            f"moves it), or pass weights={example!r}, or weights=None for random initialisation."
        ) from None


def _imagenet_weights_path(backbone: Backbone) -> str:
    """The cached ImageNet weight file of `backbone`, downloaded by Keras when missing."""
    return _cached_file(
        backbone.weights_file,
        backbone.weights_url,
        backbone.weights_hash,
        f"the ImageNet weights of {backbone.name}",
        "/path/to/file.h5",
    )


def _torchvision_weights_path(backbone: Backbone, version: str) -> str:
    """torchvision's `version` file of `backbone` in the Keras cache, its SHA256 checked."""
    weights = f"{TORCHVISION_PREFIX}{version}"
    if not backbone.torchvision_weights:
        takers = [name for name, row in BACKBONES.items() if row.torchvision_weights]
        raise ValueError(
            f"torchvision weights load into backbone={' or '.join(map(repr, takers))} only. "
            f"Received: backbone={backbone.name!r}, weights={weights!r}"
        )
    if version not in backbone.torchvision_weights:
        allowed = ", ".join(repr(TORCHVISION_PREFIX + name) for name in backbone.torchvision_weights)
        raise ValueError(
            f"Unknown torchvision weights. Expected one of {allowed}. Received: weights={weights!r}"
        )
    published = backbone.torchvision_weights[version]
    path = _cached_file(
        published.file,
        published.url,
        None,  # torchvision publishes the start of the SHA256 only, in the file name
        f"torchvision's {version} weights of {backbone.name}",
        f"/path/to/{published.file}",
    )
    sha256 = _file_digest(path, "sha256")
    if not sha256.startswith(published.sha256_prefix):
        raise ValueError(
            f"{path!r} is not torchvision's {published.file}: its SHA256 starts with "
            f"{sha256[:8]}, not {published.sha256_prefix} (an interrupted download?). "
            "Delete it to download it again."
        )
    return path


def load_weights(network: keras.Model, path: str, backbone: Backbone) -> None:
    """Loads a Keras `.h5` / `.weights.h5` file or a PyTorch state dict (local, or on any file
    system TensorFlow has) into `network`.

    Example:
        load_weights(network, "resnet50_notop.h5", BACKBONES["resnet50"])
    """
    state_dicts = " (or a .pth/.safetensors state dict)" if backbone.torchvision_weights else ""
    if not paths.isfile(path):
        raise FileNotFoundError(
            f"Weights file not found: {path!r}. Pass 'imagenet', None, or the path of an "
            f".h5 or .weights.h5 file saved from a Keras backbone{state_dicts}."
        )
    if path.endswith(STATE_DICT_SUFFIXES):
        if not backbone.torchvision_weights:
            takers = [name for name, row in BACKBONES.items() if row.torchvision_weights]
            raise ValueError(
                f"{path!r} is a PyTorch state dict: backbone={' or '.join(map(repr, takers))} "
                f"takes those. Received: backbone={backbone.name!r}"
            )
        load_state_dict(network, path)
        return
    with _local_copy(path) as local:
        if not h5py.is_hdf5(local):
            raise ValueError(
                f"{path!r} is not a weights file: Keras weights are HDF5 files (.h5 or "
                f".weights.h5), e.g. the ones keras.applications caches in ~/.keras/models{state_dicts}."
            )
        try:
            network.load_weights(local)
        except Exception as error:  # Keras reports mismatches with several exception types
            raise ValueError(
                f"The weights in {path!r} do not fit the {backbone.name} backbone "
                f"(saved from another architecture or input shape?): {error}"
            ) from None


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """`path` itself when local; else a copy in a temporary folder (under the file's own name,
    whose suffix tells Keras the format), removed when the block ends."""
    if paths.is_local(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="tfresnet-weights-")
    try:
        local = os.path.join(folder, os.path.basename(path))
        paths.copy_file(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
