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


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct ports of this machine that nothing listens on (for processes of a cluster)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


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


def built_once(tmp_path_factory, name: str, build) -> str:
    """The folder `build(path)` writes, written once for all the test processes of a run (each
    pytest-xdist worker has a session of its own): the first to ask builds it, the others wait."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's
    path = root / "built_once" / name
    path.parent.mkdir(exist_ok=True)
    with open(path.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path.parent / f"{name}.done").exists():
            build(str(path))
            (path.parent / f"{name}.done").touch()
    return str(path)


def fitted_once(tmp_path_factory, name: str, model: keras.Model, fit) -> keras.Model:
    """`model` with the weights `fit(model)` trains it to: trained by the first test process of
    the run that asks, loaded from its weights file by the others."""
    fitted_here = []

    def build(folder: str) -> None:
        fit(model)
        os.makedirs(folder)
        model.save_weights(os.path.join(folder, "model.weights.h5"))
        fitted_here.append(True)

    folder = built_once(tmp_path_factory, name, build)
    if not fitted_here:
        model.load_weights(os.path.join(folder, "model.weights.h5"))
    return model


@pytest.fixture(scope="session")
def hub_module_dir(tmp_path_factory) -> str:
    """Path of a Hub-format ResNet50V2 feature-vector module, built once per run."""
    return built_once(tmp_path_factory, "resnet_v2_50", save_hub_feature_vector)


@pytest.fixture(scope="session")
def tiny_hub_module_dir(tmp_path_factory) -> str:
    """Path of the test backbone (`resnet-test`, 55 layers, 128 features) as a Hub-format
    feature-vector module: for runs through a Hub module that do not need ResNet50V2's shapes."""
    from tfresnet.models.tiny_resnet import resnet_test

    network = resnet_test(input_shape=(None, None, 3))
    pooled = keras.Model(network.input, keras.layers.GlobalAveragePooling2D()(network.output))
    return save_hub_module(str(tmp_path_factory.mktemp("hub") / "resnet_test"), pooled)


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

import shutil  # noqa: E402

import keras_tuner  # noqa: E402

from tfresnet.data import ImageData, from_arrays  # noqa: E402
from tfresnet.data.examples import CLASS_COLORS, CLASS_SHAPES, draw_shape  # noqa: E402
from tfresnet.tuning import search  # noqa: E402


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


# The searches below and in the tuning tests build every model on the tiny test backbone (128
# features), and run on 32 images of 32 px in three imbalanced classes.
TINY = {"backbone": "resnet-test", "weights": None}
# Images per class: imbalanced, so the balanced class weights differ from 1. A quarter of each
# class is held out: 24 training images (12, 6, 6), 3 batches of 8, and 8 validation images.
CLASS_SIZES = (16, 8, 8)
NUM_CLASSES = len(CLASS_SIZES)
FEATURE_SIZE = 128  # resnet-test's


def make_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32 px images in which class k is the k-th colour and shape on a noisy background."""
    rng = np.random.default_rng(seed)
    colors = list(CLASS_COLORS.values())
    labels = np.repeat(np.arange(NUM_CLASSES), CLASS_SIZES)
    images = np.stack([np.asarray(draw_shape(CLASS_SHAPES[k], colors[k], 32, rng)) for k in labels])
    return images, labels


def make_data(seed: int = 0) -> ImageData:
    images, labels = make_arrays(seed)
    return from_arrays(
        images, labels, image_size=32, batch_size=8, val_split=0.25, augmentation="none", seed=0
    )


@pytest.fixture
def data() -> ImageData:
    return make_data()


def fixed_hp(**values) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


class RecordTraining(keras.callbacks.Callback):
    """Records each trial's optimizer step and `predictions` kernel when its fit starts and ends.

    The record is a class attribute, so it survives the copy the search makes for each trial.
    """

    record = []

    def on_train_begin(self, logs=None):
        self.record.append(("begin", *self.state()))

    def on_train_end(self, logs=None):
        self.record.append(("end", *self.state()))

    def state(self):
        kernel = self.model.get_layer("predictions").kernel
        return int(self.model.optimizer.iterations), keras.ops.convert_to_numpy(kernel)


@pytest.fixture(scope="session")
def hyperband_search(tmp_path_factory):
    """A finished default-tuner search, run once: `(directory, best, RecordTraining.record)`."""
    RecordTraining.record = []
    directory = tmp_path_factory.mktemp("hyperband") / "search"
    best = search(
        make_data(),
        max_trials=4,
        tune_epochs=3,
        seed=0,
        directory=directory,
        callbacks=[RecordTraining()],
        verbose=0,
        **TINY,
    )
    keras.backend.clear_session()
    return directory, best, list(RecordTraining.record)


def copy_search(directory, tmp_path):
    shutil.copytree(directory, tmp_path / "search")
    return tmp_path / "search"


# === Backbone networks ===

from tfresnet.models.backbones import BACKBONES  # noqa: E402

IMAGE_SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def networks():
    """`networks(name)`: the row's network, built on first use and kept for the module."""
    built = {}

    def get(name: str) -> keras.Model:
        if name not in built:
            built[name] = BACKBONES[name].builder(include_top=False, weights=None, input_shape=IMAGE_SHAPE)
        return built[name]

    return get


def layer_names(network: keras.Model) -> list[str]:
    return [layer.name for layer in network.layers]


# === Folders for the dataset check ===

import csv  # noqa: E402

from PIL import Image  # noqa: E402

from tfresnet.data.folder import list_folder  # noqa: E402
from tfresnet.data.pipeline import stratified_split  # noqa: E402

CHECK_CLASSES = ("cats", "dogs", "foxes")
CHECK_SIZE = 48
# The planted files, relative to the folder.
EXACT = ("cats/00.png", "dogs/dup_of_cat.bmp")  # the same pixels, in two classes
ORIGINAL, RESIZED = "foxes/02.png", "foxes/02_small.jpg"  # re-encoded and resized, across the split
GRAY, TRUNCATED = "cats/gray.png", "cats/truncated.jpg"


def photo(seed: int, size: int = CHECK_SIZE) -> Image.Image:
    """A photo-like RGB image, unlike any other seed's: random colour fields at four scales, the
    finer the fainter (as the spectrum of a photograph falls), plus a little noise."""
    rng = np.random.default_rng(seed)
    total = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((3, 1.0), (6, 0.6), (12, 0.35), (24, 0.2)):
        field = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        channels = [
            Image.fromarray(field[..., k], mode="F").resize((size, size), Image.BICUBIC) for k in range(3)
        ]
        total += weight * np.stack([np.asarray(channel) for channel in channels], axis=-1)
    pixels = 128 + 60 * total + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_clean_folder(root: str, per_class: int = 8) -> str:
    """Three classes of distinct photos, PNG and JPEG alternately."""
    for number, name in enumerate(CHECK_CLASSES):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            extension, options = (".png", {}) if i % 2 == 0 else (".jpg", {"quality": 90})
            photo(100 * number + i).save(os.path.join(root, name, f"{i:02d}{extension}"), **options)
    return root


def _side(root: str, val_split: float, seed: int) -> dict[str, bool]:
    """Whether each readable file lies in the validation set, by the split `from_folder` makes."""
    _, paths, labels, _ = list_folder(root, strict=False)
    validation = set(stratified_split(labels, val_split, seed)[1])
    return {os.path.relpath(path, root): i in validation for i, path in enumerate(paths)}


@pytest.fixture(scope="session")
def clean_folder(tmp_path_factory) -> str:
    return write_clean_folder(str(tmp_path_factory.mktemp("clean") / "images"))


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> tuple[str, int]:
    """A clean folder plus the planted problems; returns it and a seed whose split puts the
    resized copy and its original on different sides."""
    root = write_clean_folder(str(tmp_path_factory.mktemp("planted") / "images"))
    Image.open(os.path.join(root, EXACT[0])).save(os.path.join(root, EXACT[1]))
    Image.open(os.path.join(root, ORIGINAL)).resize((40, 40)).save(os.path.join(root, RESIZED), quality=70)
    photo(999).convert("L").save(os.path.join(root, GRAY))
    photo(998).save(os.path.join(root, "whole.jpg"))
    with open(os.path.join(root, "whole.jpg"), "rb") as file:
        contents = file.read()
    with open(os.path.join(root, TRUNCATED), "wb") as file:
        file.write(contents[: len(contents) // 2])
    os.remove(os.path.join(root, "whole.jpg"))
    seed = next(
        seed for seed in range(100) if len({_side(root, 0.25, seed)[p] for p in (ORIGINAL, RESIZED)}) == 2
    )
    return root, seed


def exit_code(main, argv: list[str]) -> int:
    """A command's `main(argv)` exit code, also when argparse exits (a bad flag)."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def write_labels_csv(path, rows, header=("path", "label")) -> str:
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return str(path)


def folder_rows(root: str) -> list[tuple[str, str]]:
    """Every file of a folder of class folders, as `from_folder` lists them: (path, class)."""
    return [
        (os.path.join(name, file), name)
        for name in sorted(os.listdir(root))
        for file in sorted(os.listdir(os.path.join(root, name)))
    ]


# === Reports ===

REPORT_CLASS_NAMES = ["cat", "dog", "fox"]
# Image i of the set: label REPORT_LABELS[i]; the "model" below is wrong on the images in REPORT_WRONG.
REPORT_LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
REPORT_WRONG = {1, 3, 8, 10}
REPORT_SIZE = 8


def report_images() -> np.ndarray:
    """Each image says what it is: channel 0 its label (x100), 1 whether the model errs on it
    (255), 2 its index (x10)."""
    images = np.zeros((len(REPORT_LABELS), REPORT_SIZE, REPORT_SIZE, 3), "float32")
    for i, label in enumerate(REPORT_LABELS):
        images[i, ..., 0] = 100 * label
        images[i, ..., 1] = 255 * (i in REPORT_WRONG)
        images[i, ..., 2] = 10 * i
    return images


class _ReadsThePixels(keras.layers.Layer):
    """Predicts the label written in channel 0 (0.9), or the next class on images marked in
    channel 1; less sure of later images, so that every loss differs."""

    def call(self, images):
        label = keras.ops.round(keras.ops.mean(images[..., 0], axis=(1, 2)) / 100)
        wrong = keras.ops.cast(keras.ops.mean(images[..., 1], axis=(1, 2)) > 127, "float32")
        index = keras.ops.mean(images[..., 2], axis=(1, 2)) / 10
        guess = keras.ops.cast(keras.ops.mod(label + wrong, 3), "int32")
        sure = 0.9 - 0.02 * index
        return keras.ops.one_hot(guess, 3) * sure[:, None] + (1 - sure[:, None]) / 3


def report_model() -> keras.Model:
    inputs = keras.Input((REPORT_SIZE, REPORT_SIZE, 3))
    return keras.Model(inputs, _ReadsThePixels()(inputs))


def reshuffling_dataset(batch_size=5) -> tf.data.Dataset:
    """The images in a new order on every pass, in uneven batches."""
    dataset = tf.data.Dataset.from_tensor_slices((report_images(), REPORT_LABELS))
    return dataset.shuffle(len(REPORT_LABELS), seed=0, reshuffle_each_iteration=True).batch(batch_size)


@pytest.fixture
def folder_with_a_conflict(make_image_folder):
    """A learnable folder where one "blue" image is also filed, unchanged, under "red"."""
    folder = make_image_folder(num_classes=3, images_per_class=6, size=40)
    shutil.copy(os.path.join(folder, "blue", "000.jpg"), os.path.join(folder, "red", "copy_of_blue.jpg"))
    return folder


# === A trained classifier and its LiteRT and ONNX exports ===

import tfresnet  # noqa: E402
from tfresnet.export import saved_model  # noqa: E402
from tfresnet.export.formats import export_formats, predict_all  # noqa: E402
from tfresnet.models.classifier import compile_classifier, one_hot_labels  # noqa: E402

# The int8 checks need a trained model (on random weights every class is about as likely, and
# int8 rounding decides the label): a tiny ResNet trained for a few seconds on a learnable folder.
TRAINED_IMAGE_SIZE = 32


# test_hub.py trains a model of its own under this name; test_saved_model.py exports this one.
@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`(model, class_names, folders, held-out data)`: a tiny ResNet trained on 3 x 20 images
    (once a run), and 3 x 10 images of the same classes it never saw."""
    root = tmp_path_factory.mktemp("formats")
    folders = {"train": str(root / "train"), "held_out": str(root / "held_out")}
    write_image_folder(folders["train"], images_per_class=20, size=40, seed=0)
    write_image_folder(folders["held_out"], images_per_class=10, size=40, seed=5)
    options = {
        "image_size": TRAINED_IMAGE_SIZE,
        "batch_size": 16,
        "val_split": 0,
        "augmentation": "none",
        "seed": 0,
    }
    data = tfresnet.from_folder(folders["train"], **options)
    held_out = tfresnet.from_folder(folders["held_out"], **options)
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        3, backbone="resnet-test", weights=None, image_size=TRAINED_IMAGE_SIZE, dropout=0.0, freeze_until=0
    )
    compile_classifier(model, learning_rate=3e-3, jit_compile=False)

    def fit(model):
        model.fit(data.train.map(one_hot_labels(3)), epochs=6, shuffle=False, verbose=0)

    fitted_once(tmp_path_factory, "trained", model, fit)
    return model, data.class_names, folders, held_out


@pytest.fixture(scope="session")
def keras_exports(trained, tmp_path_factory):
    """`(folder, figures)`: `export_formats` of the trained model (a SavedModel, float32 LiteRT and
    ONNX files, measured on the held-out set), written once a run; the tests only read them."""
    import json

    model, class_names, _, held_out = trained

    def build(output_dir: str) -> None:
        formats = ["saved_model", "litert", "onnx"]
        figures = export_formats(
            model, output_dir, formats, validation=held_out.train_evaluation, class_names=class_names
        )
        with open(os.path.join(output_dir, "figures.json"), "w") as file:
            json.dump(figures, file)

    output_dir = built_once(tmp_path_factory, "keras_exports", build)
    with open(os.path.join(output_dir, "figures.json")) as file:
        return output_dir, json.load(file)


@pytest.fixture(scope="session")
def held_out_images(trained):
    """`(images, labels, Keras probabilities)` of the held-out set, evaluation transform."""
    model, _, _, held_out = trained
    outputs = predict_all(held_out.train_evaluation, {"keras": model.predict_on_batch, "images": lambda x: x})
    return outputs["images"], outputs["labels"], outputs["keras"]


@pytest.fixture(scope="session")
def saved_model_dir(trained, tmp_path_factory):
    model, class_names, _, _ = trained
    return saved_model.export_saved_model(
        model, str(tmp_path_factory.mktemp("saved") / "1"), class_names=class_names
    )


# === Exported models to classify image files with ===

from tfresnet.export.litert import export_litert  # noqa: E402
from tfresnet.export.onnx_export import export_onnx  # noqa: E402

# The model tells the shapes folder's classes by their colour (global average pooling, then a
# dense layer whose weights pick the red, green and blue channels): it converts in a second or
# two and is right on every image, so each row's label can be checked against its folder.
EXPORTED_IMAGE_SIZE = 32
EXPORTED_CLASS_NAMES = ["blue", "green", "red"]
EXPORTED_KINDS = ("saved_model", "litert", "onnx")


def colour_classifier() -> keras.Model:
    """Raw pixels -> mean colour -> softmax over blue, green, red (a channel each, scaled)."""
    inputs = keras.Input((EXPORTED_IMAGE_SIZE, EXPORTED_IMAGE_SIZE, 3), name="images")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, dense(pooled))
    picks = np.zeros((3, 3), np.float32)  # channel (R, G, B) -> class (blue, green, red)
    picks[2, 0] = picks[1, 1] = picks[0, 2] = 30 / 255
    dense.set_weights([picks, np.zeros(3, np.float32)])
    return model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """`{kind: model path}`, the Keras model, and a folder of 3 x 4 images with 3 bad files in "red"."""
    root = tmp_path_factory.mktemp("predict")
    model = colour_classifier()
    paths = {
        "saved_model": saved_model.export_saved_model(
            model, str(root / "saved" / "1"), class_names=EXPORTED_CLASS_NAMES
        ),
        "litert": export_litert(
            model, str(root / "files" / "model.tflite"), class_names=EXPORTED_CLASS_NAMES
        ),
        "onnx": export_onnx(model, str(root / "files" / "model.onnx"), class_names=EXPORTED_CLASS_NAMES),
    }
    images = str(root / "images")
    write_image_folder(images, images_per_class=4, size=40, seed=3)
    bad = write_bad_files(os.path.join(images, "red"))
    return paths, model, images, bad


# === Label issues ===

# Moved into the next class's folder: the planted label errors, and the class each came from.
FLIPPED = {"green/flipped_002.jpg": "blue", "red/flipped_005.jpg": "green", "blue/flipped_008.jpg": "red"}


COLOURS = {"blue": (40, 60, 200), "green": (50, 180, 60), "red": (200, 50, 40)}


@pytest.fixture(scope="session")
def flipped_folder(tmp_path_factory) -> str:
    """Three classes of 14 noisy colour fields (what even a random backbone tells apart), one
    image of each filed under the next class."""
    root = tmp_path_factory.mktemp("flipped") / "images"
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        os.makedirs(root / name)
        for i in range(14):
            pixels = np.array(colour) * rng.uniform(0.7, 1.2) + rng.normal(0, 25, (40, 40, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.jpg")
    for planted, source in FLIPPED.items():
        name = os.path.basename(planted).replace("flipped_", "")
        shutil.move(root / source / name, root / planted)
    return str(root)


# === Multi-label ===

# Label j puts a bright patch of its own colour in its own corner; an image has any of them.
MULTI_LABEL_NAMES = ["blue", "green", "red"]
MULTI_LABEL_CORNERS = ((0, 0), (0, 16), (16, 0))
MULTI_LABEL_IMAGES = 48


def make_multi_label_arrays(seed: int = 0, count: int = MULTI_LABEL_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """32 px noisy images and their multi-hot rows: about half the images have each label, a
    few have none (the rows of `MULTI_LABEL_NAMES`)."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(count, len(MULTI_LABEL_NAMES))) < 0.45).astype(np.float32)
    images = rng.uniform(0, 80, size=(count, 32, 32, 3)).astype(np.float32)
    for i, row in enumerate(labels):
        for j in np.flatnonzero(row):
            top, left = MULTI_LABEL_CORNERS[j]
            images[i, top : top + 16, left : left + 16, 2 - j] = 255
    return images, labels


def make_multi_label_data(seed: int = 0) -> ImageData:
    images, labels = make_multi_label_arrays(seed)
    return from_arrays(
        images,
        labels,
        class_names=MULTI_LABEL_NAMES,
        image_size=32,
        batch_size=8,
        val_split=0.25,
        augmentation="none",
        seed=0,
        multi_label=True,
    )


@pytest.fixture
def multi_label_data() -> ImageData:
    return make_multi_label_data()


def write_multi_label_csv(root, delimiter: str = " ", seed: int = 0) -> str:
    """`root/images/<i>.png` and `root/labels.csv` (`path,label`, the labels of each image joined
    by `delimiter`; an image without labels has an empty cell)."""
    images, labels = make_multi_label_arrays(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for i, (image, row) in enumerate(zip(images, labels)):
        path = os.path.join("images", f"{i}.png")
        Image.fromarray(image.astype(np.uint8)).save(os.path.join(root, path))
        rows.append((path, delimiter.join(MULTI_LABEL_NAMES[j] for j in np.flatnonzero(row))))
    return write_labels_csv(os.path.join(root, "labels.csv"), rows)


@pytest.fixture(scope="session")
def multi_label_csv(tmp_path_factory) -> str:
    """A CSV of 48 PNGs with space-separated labels (see `write_multi_label_csv`)."""
    return write_multi_label_csv(str(tmp_path_factory.mktemp("multi_label_csv")))


@pytest.fixture(scope="session")
def multi_label_model(tmp_path_factory):
    """`(model, data)`: a tiny multi-label classifier trained a few epochs on
    `make_multi_label_data()` (once a run)."""
    from tfresnet.models import build_classifier, compile_classifier

    keras.utils.set_random_seed(0)
    data = make_multi_label_data()
    model = build_classifier(
        len(data.class_names),
        backbone="resnet-test",
        weights=None,
        image_size=32,
        multi_label=True,
        freeze_until=0,
    )
    compile_classifier(model, learning_rate=3e-3, label_smoothing=0.0, multi_label=True)

    def fit(model):
        model.fit(data.train, validation_data=data.validation, epochs=8, verbose=0)

    fitted_once(tmp_path_factory, "multi_label_model", model, fit)
    return model, data


# A multi-label report's case, counted by hand: six images, three labels; at 0.5, red is missed
# on images 0 and 1, blue on image 2, green added on 1 and 3.
REPORT_CASE_NAMES = ["blue", "green", "red"]
REPORT_CASE_PROBABILITIES = np.array(
    [[0.9, 0.1, 0.2], [0.1, 0.7, 0.3], [0.4, 0.8, 0.1], [0.2, 0.6, 0.15], [0.1, 0.9, 0.8], [0.7, 0.2, 0.1]],
    "float32",
)
REPORT_CASE_LABELS = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 0]], "float32")
REPORT_CASE_PATHS = [f"images/{i}.png" for i in range(len(REPORT_CASE_LABELS))]


def report_case_model() -> keras.Model:
    """Probabilities = the sigmoid of the images' channel means (images filled with logit(p) get p)."""
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(3, activation="sigmoid", name="predictions", kernel_initializer="identity")
    return keras.Model(inputs, dense(pooled))


def report_case_dataset() -> tf.data.Dataset:
    """The case's images (each filled with the logits of its probabilities) and labels, in batches of 4."""
    logits = np.log(REPORT_CASE_PROBABILITIES / (1 - REPORT_CASE_PROBABILITIES))
    images = np.broadcast_to(logits[:, None, None, :], (len(REPORT_CASE_LABELS), 8, 8, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, REPORT_CASE_LABELS)).batch(4)


# === Folders on TensorFlow's in-memory file system (ram://), read through tf.io.gfile ===

import base64  # noqa: E402
import uuid  # noqa: E402

from tfresnet import paths  # noqa: E402


@pytest.fixture
def ram_dir() -> str:
    """A fresh folder on `ram://`, TensorFlow's in-memory file system, removed after the test."""
    root = f"ram://{uuid.uuid4().hex}"
    paths.makedirs(root)
    yield root
    paths.rmtree(root)


def copy_to_ram(local_folder: str, ram_folder: str) -> str:
    """Copies a local folder (images, a CSV) to `ram_folder`; returns `ram_folder`."""
    paths.copy_tree(local_folder, ram_folder)
    return ram_folder


def assert_pictures_in_the_page(output_dir: str, pictures: list[str], html_file: str) -> None:
    """Each PNG of a report folder (local or on a store) is embedded in its page, whole."""
    page = paths.read_bytes(paths.join(output_dir, html_file)).decode("utf-8")
    for name in pictures:
        picture = paths.read_bytes(paths.join(output_dir, name))
        assert picture[:8] == b"\x89PNG\r\n\x1a\n" and base64.b64encode(picture).decode() in page, name


def ram_files(folder: str) -> list[str]:
    """Every file under a `ram://` folder, relative to it, sorted."""
    return sorted(
        os.path.relpath(paths.join(root, name), folder)
        for root, _, names in paths.walk(folder)
        for name in names
    )


# === Kept check results: in a folder of the test session, never in the user's cache ===


@pytest.fixture(scope="session", autouse=True)
def _check_cache_folder(tmp_path_factory):
    """Points `TFRESNET_CACHE_DIR` (where the file check and the dataset check keep their
    results) at a folder of this session, for every test and every command a test starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFRESNET_CACHE_DIR", str(tmp_path_factory.mktemp("tfresnet-cache")))
        yield


# === A run stopped right after an epoch's backup, as a kill there would stop it ===


class EpochBackups:
    """Controls the epoch backups of the runs a test starts (`EpochBackup.on_epoch_end`)."""

    def __init__(self, monkeypatch):
        from tfresnet.training.checkpoints import EpochBackup

        self._monkeypatch, self._class, self._backup = monkeypatch, EpochBackup, EpochBackup.on_epoch_end
        self.ended: list[tuple[str, int]] = []

    def kill_after_the_first_fine_tuning_epoch(self) -> None:
        """The next run stops (KeyboardInterrupt) once its first fine-tuning epoch is backed up."""
        backup = self._backup

        def killed(callback, epoch, logs=None):
            backup(callback, epoch, logs)
            if callback.directory.endswith("fine_tune"):
                raise KeyboardInterrupt("killed")

        self._monkeypatch.setattr(self._class, "on_epoch_end", killed)

    def record(self) -> None:
        """Later runs back up as usual, and `ended` lists each epoch they end: `(phase, epoch)`."""
        backup, ended = self._backup, self.ended

        def recorded(callback, epoch, logs=None):
            ended.append((os.path.basename(callback.directory), epoch))
            backup(callback, epoch, logs)

        self._monkeypatch.setattr(self._class, "on_epoch_end", recorded)


@pytest.fixture
def epoch_backups(monkeypatch) -> EpochBackups:
    return EpochBackups(monkeypatch)
