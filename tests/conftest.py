"""Shared fixtures: seeds, tiny images and models built on the spot, never downloaded."""

import ipaddress
import os
import socket

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

HUB_IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test reaches the network: a connection to anything but this machine fails at once."""
    connect = socket.socket.connect

    def local_only(sock, address):
        if isinstance(address, tuple) and not _is_local(address[0]):  # not a Unix socket's path
            raise OSError(f"tests run offline: refused a connection to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


def _is_local(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    # Fresh layer names for the next test; garbage collection (0.4 s a test) is left to Python.
    keras.backend.clear_session(free_memory=False)


def save_hub_module(path: str, network: keras.Model) -> str:
    """Writes `network` (from [-1, 1] images to pooled features) as a TF2 reusable SavedModel.

    The module takes float images in [0, 1] of any size, with `__call__(images, training)`,
    `variables`, `trainable_variables` and `regularization_losses`, as the reusable-SavedModel
    API defines (and TF Hub's `resnet_v2_50/feature_vector` has).
    """

    @tf.function
    def call(images, training=False):
        return network(images * 2.0 - 1.0, training=training)

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    root = tf.train.Checkpoint()
    root.variables = [v.value for v in network.variables]
    root.trainable_variables = [v.value for v in network.trainable_variables]
    root.regularization_losses = []
    root.__call__ = call
    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    tf.saved_model.save(root, path)
    return path


def save_hub_feature_vector(path: str) -> str:
    """Writes a module shaped like TF Hub's `resnet_v2_50/feature_vector`: 2048 features."""
    network = keras.applications.ResNet50V2(
        include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
    )
    return save_hub_module(path, network)


@pytest.fixture(scope="session")
def hub_module_dir(tmp_path_factory) -> str:
    """Path of a Hub-format ResNet50V2 feature-vector module, built once per session."""
    return save_hub_feature_vector(str(tmp_path_factory.mktemp("hub") / "resnet_v2_50"))


@pytest.fixture
def images() -> np.ndarray:
    """Four random RGB images, 32 px, raw pixel values in [0, 255]."""
    return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


# === Comparing float32 results ===

# The same network computed by other kernels (another batch size, a strategy, a SavedModel graph
# whose convolutions grappler fused, LiteRT or ONNX Runtime, another process or instruction set)
# sums in another order: float32 results then agree to about 1e-5 of the values' scale, not to
# float32's rounding. oneDNN picks its kernels by batch size and by the CPU's instruction set
# (AVX2 or AVX-512), so a tighter tolerance passes on one machine and fails on another.
ACROSS_KERNELS_RTOL = 1e-4


def assert_close_across_kernels(actual, expected, *, rtol: float = ACROSS_KERNELS_RTOL) -> None:
    """Asserts that two float32 results of one computation, run by other kernels, agree.

    Elementwise within `rtol` of the value, or of the largest magnitude in `expected` for values
    near zero (a sum's rounding error scales with its terms, not with its result).
    """
    expected = np.asarray(expected, dtype="float64")
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, dtype="float64"), expected, rtol=rtol, atol=rtol * scale)


# === Datasets ===


def take_all(dataset):
    """All images and labels of one pass, concatenated."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def file_index(images: np.ndarray, decoded: np.ndarray) -> list[int]:
    """For each image, the index of the one file in `decoded` it equals exactly."""
    found = []
    for image in images:
        matches = np.flatnonzero((decoded == image).all(axis=(1, 2, 3)))
        assert len(matches) == 1, f"an image matches {len(matches)} files"
        found.append(int(matches[0]))
    return found


# === Image folders ===

from tfresnet.data.examples import write_shapes_folder  # noqa: E402


def write_image_folder(
    root, *, num_classes: int = 3, images_per_class: int = 7, size: int = 40, seed: int = 0
):
    """A learnable folder (each class a colour and a shape) in every format and colour mode."""
    return write_shapes_folder(
        root,
        num_classes=num_classes,
        images_per_class=images_per_class,
        size=size,
        seed=seed,
        mixed_formats=True,
    )


def write_bad_files(folder) -> list[str]:
    """Writes a zero-byte, a truncated and a text "JPEG" into `folder`; returns their paths."""
    import io

    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, name) for name in ("empty.jpg", "truncated.jpg", "notes.jpg")]
    open(paths[0], "wb").close()
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    with open(paths[1], "wb") as file:
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with open(paths[2], "w") as file:
        file.write("Not an image: notes about the photos.\n")
    return paths


def write_png_bomb(path, side: int = 20000) -> str:
    """Writes a real, valid PNG of `side` x `side` black pixels (1-bit grayscale): about 50 KB
    on disk, `side**2 * 3` bytes once decoded to RGB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the row's bits
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="session")
def png_bomb(tmp_path_factory) -> str:
    """A 20000 x 20000 PNG (400 million pixels, 1.2 GB decoded) of about 50 KB, written once."""
    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


@pytest.fixture
def make_image_folder(tmp_path):
    """Factory: `make_image_folder(num_classes=3, images_per_class=7, size=40, seed=0)` writes
    a fresh learnable image folder under `tmp_path` and returns its path."""
    made = []

    def make(**kwargs) -> str:
        root = str(tmp_path / f"images{len(made)}")
        write_image_folder(root, **kwargs)
        made.append(root)
        return root

    return make


@pytest.fixture
def image_folder(make_image_folder) -> str:
    """A learnable image folder: 3 classes ("blue", "green", "red") of 7 images, 40 px,
    every format and colour mode."""
    return make_image_folder()


@pytest.fixture
def bad_image_folder(image_folder) -> tuple[str, list[str]]:
    """`image_folder` plus three bad files in its "red" class; returns (folder, bad paths)."""
    return image_folder, write_bad_files(os.path.join(image_folder, "red"))


# === Tuning ===


@pytest.fixture(scope="session")
def tuning_folder(tmp_path_factory) -> str:
    """A learnable image folder for searches, written once: 3 classes of 10 images, 40 px."""
    root = str(tmp_path_factory.mktemp("tuning") / "images")
    write_image_folder(root, images_per_class=10)
    return root


@pytest.fixture
def tuning_data(tuning_folder):
    """`tuning_folder` loaded for a search: 32 px, no augmentation, batches of 8, 3 validation
    images per class (21 training images)."""
    from tfresnet.data import from_folder

    return from_folder(tuning_folder, image_size=32, batch_size=8, val_split=0.3, augmentation="none", seed=0)
