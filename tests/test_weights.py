"""Weights: the Keras cache, local files, torchvision's files, and the errors that say why not.

The tiny backbone stands in for ResNet50 wherever only the loading is tested: its row is
patched to accept weights (`loadable_tiny`), and a tiny torchvision-structured network stands
in for torchvision's ResNet50 (`tiny_torchvision`). Downloads go to a closed local port, so they
fail the same way online and offline.
"""

import dataclasses
import hashlib
import os
import shutil
import sys

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet import paths
from tfresnet.models import backbones, tiny_resnet, torchvision_resnet
from tfresnet.models.backbones import BACKBONES
from tfresnet.models.torchvision_resnet import resnet_v1_5

CLOSED_PORT = "http://127.0.0.1:9/"
REFERENCE = os.path.join(os.path.dirname(__file__), "data", "torchvision_reference.npz")
TINY_V1_5 = {"stage_blocks": (1, 2, 1, 1), "width": 4}  # the reference's configuration


@pytest.fixture
def offline(tmp_path, monkeypatch) -> str:
    """An empty Keras cache under `tmp_path` and download URLs that fail; returns the cache."""
    monkeypatch.setattr(backbones, "KERAS_WEIGHTS_URL", CLOSED_PORT)
    monkeypatch.setattr(backbones, "TORCHVISION_WEIGHTS_URL", CLOSED_PORT)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return str(tmp_path / "keras" / "models")


@pytest.fixture
def loadable_tiny(monkeypatch) -> backbones.Backbone:
    """The resnet-test row, allowed to load weights as the real rows are."""
    row = dataclasses.replace(BACKBONES["resnet-test"], test_only=False)
    monkeypatch.setitem(BACKBONES, "resnet-test", row)
    return row


def _tiny_v1_5(input_shape=(None, None, 3), name="tiny") -> keras.Model:
    return resnet_v1_5(
        TINY_V1_5["stage_blocks"], width=TINY_V1_5["width"], input_shape=input_shape, name=name
    )


@pytest.fixture
def tiny_torchvision(monkeypatch) -> None:
    """`backbone="resnet50-torchvision"` builds a tiny network of torchvision's structure."""
    row = dataclasses.replace(
        BACKBONES["resnet50-torchvision"],
        builder=lambda include_top, weights, input_shape, name: _tiny_v1_5(input_shape, name),
    )
    monkeypatch.setitem(BACKBONES, "resnet50-torchvision", row)


@pytest.fixture(scope="module")
def reference_state_dict() -> dict:
    with np.load(REFERENCE) as data:
        prefix = "state_dict/"
        return {key[len(prefix) :]: data[key] for key in data.files if key.startswith(prefix)}


def _save(network: keras.Model, path: str) -> str:
    if path.endswith(".weights.h5"):
        network.save_weights(path)
    else:
        network.save(path)  # a legacy full-model HDF5 file, as keras.applications publishes
    return path


def _assert_same_weights(expected: keras.Model, actual: keras.Model) -> None:
    assert len(actual.weights) == len(expected.weights)
    for want, got in zip(expected.weights, actual.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)


def _md5(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.md5(file.read()).hexdigest()


# === Offline: the message says what to download and where to put it ===


@pytest.mark.parametrize(
    "backbone, file_name",
    [
        ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet50v2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ],
)
def test_imagenet_weights_offline_error(offline, backbone, file_name):
    with pytest.raises(OSError, match="Could not download the ImageNet weights") as error:
        tfresnet.build_classifier(2, backbone=backbone, weights="imagenet", image_size=32)
    message = str(error.value)
    assert file_name in message
    assert offline in message
    assert "weights='/path/to/file.h5'" in message
    assert "weights=None" in message


@pytest.mark.parametrize(
    "weights, file_name",
    [
        ("torchvision:IMAGENET1K_V1", "resnet50-0676ba61.pth"),
        ("torchvision:IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
        ("imagenet", "resnet50-11ad3fa6.pth"),
    ],
)
def test_torchvision_weights_offline_error(offline, weights, file_name):
    with pytest.raises(OSError, match="Could not download torchvision's") as error:
        tfresnet.build_backbone("resnet50-torchvision", weights=weights, image_size=32)
    message = str(error.value)
    assert file_name in message
    assert offline in message
    assert f"weights='/path/to/{file_name}'" in message


# === The Keras cache ===


@pytest.fixture
def cached_tiny(offline, monkeypatch, loadable_tiny) -> keras.Model:
    """A tiny network saved under a published-looking name in the cache, its MD5 on the row."""
    source = tiny_resnet.resnet_test(input_shape=(32, 32, 3))
    os.makedirs(offline)
    path = _save(source, os.path.join(offline, "resnet_test_notop.h5"))
    row = dataclasses.replace(loadable_tiny, weights_file="resnet_test_notop.h5", weights_hash=_md5(path))
    monkeypatch.setitem(BACKBONES, "resnet-test", row)
    return source


def test_imagenet_weights_found_in_the_cache(cached_tiny):
    # The download URL is a closed port: the file can only come from $KERAS_HOME/models.
    model = tfresnet.build_classifier(2, backbone="resnet-test", weights="imagenet", image_size=32)
    _assert_same_weights(cached_tiny, model.get_layer("backbone"))


def test_cached_file_with_another_md5_is_refused_and_kept(cached_tiny, offline, monkeypatch):
    row = dataclasses.replace(BACKBONES["resnet-test"], weights_hash="0" * 32)
    monkeypatch.setitem(BACKBONES, "resnet-test", row)
    path = os.path.join(offline, "resnet_test_notop.h5")
    with pytest.raises(
        ValueError, match=r"is in the Keras cache but is not .*its MD5 is [0-9a-f]{32}"
    ) as error:
        tfresnet.build_backbone("resnet-test", weights="imagenet", image_size=32)
    assert f"not the published {'0' * 32}" in str(error.value)
    assert "Delete it to download it again" in str(error.value)
    assert os.path.isfile(path)  # Keras would have deleted it to download it again


def test_cached_torchvision_file_is_loaded(offline, monkeypatch, tiny_torchvision, reference_state_dict):
    # A cached file of torchvision's name whose SHA256 starts as the name says loads without a download.
    save_file = pytest.importorskip("safetensors.numpy").save_file
    os.makedirs(offline)
    written = os.path.join(offline, "written.safetensors")
    save_file(reference_state_dict, written)
    with open(written, "rb") as file:
        file_name = f"tiny-{hashlib.sha256(file.read()).hexdigest()[:8]}.safetensors"
    shutil.move(written, os.path.join(offline, file_name))
    row = dataclasses.replace(
        BACKBONES["resnet50-torchvision"],
        torchvision_weights={"IMAGENET1K_V2": backbones.TorchvisionWeights(file_name, 0.0, 232)},
    )
    monkeypatch.setitem(BACKBONES, "resnet50-torchvision", row)
    network, _ = tfresnet.build_backbone(
        "resnet50-torchvision", weights="torchvision:IMAGENET1K_V2", image_size=32
    )
    np.testing.assert_array_equal(
        network.get_layer("layer4_0_conv3").kernel.numpy(),
        reference_state_dict["layer4.0.conv3.weight"].transpose(2, 3, 1, 0),
    )


def test_cached_torchvision_file_with_another_sha256_is_refused(offline):
    os.makedirs(offline)
    with open(os.path.join(offline, "resnet50-11ad3fa6.pth"), "wb") as file:
        file.write(b"half a download")
    with pytest.raises(
        ValueError, match="is not torchvision's resnet50-11ad3fa6.pth: its SHA256 starts with"
    ):
        tfresnet.build_backbone("resnet50-torchvision", weights="torchvision:IMAGENET1K_V2", image_size=32)


# === Local Keras files ===


@pytest.mark.parametrize("file_name", ["backbone.h5", "backbone.weights.h5"])
def test_weights_from_a_file(tmp_path, loadable_tiny, file_name):
    source = tiny_resnet.resnet_test(input_shape=(32, 32, 3))
    path = _save(source, str(tmp_path / file_name))
    model = tfresnet.build_classifier(2, backbone="resnet-test", weights=path, image_size=32)
    _assert_same_weights(source, model.get_layer("backbone"))


def test_resnet50_weights_from_a_file(tmp_path):
    # The one test on the real network: a file saved from ResNet50 fits build_classifier's ResNet50.
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = _save(source, str(tmp_path / "resnet50_notop.h5"))
    model = tfresnet.build_classifier(2, backbone="resnet50", weights=path, image_size=32)
    _assert_same_weights(source, model.get_layer("backbone"))


def _wider_tiny(monkeypatch) -> keras.Model:
    """The tiny network's layers and names, with a wider last stage."""
    with monkeypatch.context() as patch:
        patch.setattr(tiny_resnet, "STAGE_FILTERS", (4, 8, 16, 64))
        return tiny_resnet.resnet_test(input_shape=(32, 32, 3))


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, on the refused files
@pytest.mark.parametrize(
    "source, file_name, reason",
    [
        ("other layers", "other.h5", "Layer count mismatch"),
        ("other layers", "other.weights.h5", "could not be loaded"),
        ("same names, wider", "wider.h5", "Shape mismatch in layer #26 \\(named conv5_block1_1_conv\\)"),
        ("same names, wider", "wider.weights.h5", "could not be loaded"),
    ],
)
def test_weights_of_another_architecture_are_refused(
    tmp_path, monkeypatch, loadable_tiny, source, file_name, reason
):
    network = _tiny_v1_5((32, 32, 3)) if source == "other layers" else _wider_tiny(monkeypatch)
    path = _save(network, str(tmp_path / file_name))
    with pytest.raises(ValueError, match="do not fit the resnet-test backbone") as error:
        tfresnet.build_classifier(2, backbone="resnet-test", weights=path, image_size=32)
    assert "saved from another architecture or input shape?" in str(error.value)
    assert error.match(reason)


def test_a_file_that_is_not_hdf5_is_refused(tmp_path, loadable_tiny):
    path = tmp_path / "resnet50.h5"
    path.write_text("not weights")
    with pytest.raises(ValueError, match=r"is not a weights file: Keras weights are HDF5 files"):
        tfresnet.build_classifier(2, backbone="resnet-test", weights=str(path), image_size=32)


@pytest.mark.parametrize(
    "backbone, state_dicts",
    [("resnet-test", False), ("resnet50-torchvision", True)],
    ids=["keras", "torchvision"],
)
def test_missing_file(tmp_path, loadable_tiny, tiny_torchvision, backbone, state_dicts):
    with pytest.raises(FileNotFoundError, match="Weights file not found") as error:
        tfresnet.build_backbone(backbone, weights=str(tmp_path / "nope.h5"), image_size=32)
    assert ("or a .pth/.safetensors state dict" in str(error.value)) == state_dicts


# === Files on a store (ram://, TensorFlow's in-memory file system, read through tf.io.gfile) ===


@pytest.mark.parametrize("file_name", ["backbone.h5", "backbone.weights.h5"])
def test_weights_from_a_file_on_a_store(tmp_path, ram_dir, loadable_tiny, file_name):
    source = tiny_resnet.resnet_test(input_shape=(32, 32, 3))
    path = paths.join(ram_dir, "models", file_name)
    paths.makedirs(paths.join(ram_dir, "models"))
    paths.copy_file(_save(source, str(tmp_path / file_name)), path)
    model = tfresnet.build_classifier(2, backbone="resnet-test", weights=path, image_size=32)
    _assert_same_weights(source, model.get_layer("backbone"))


def test_a_missing_or_foreign_file_on_a_store_is_named(ram_dir, loadable_tiny):
    with pytest.raises(FileNotFoundError, match=f"Weights file not found: '{ram_dir}/nope.h5'"):
        tfresnet.build_backbone("resnet-test", weights=paths.join(ram_dir, "nope.h5"), image_size=32)
    with paths.open_file(paths.join(ram_dir, "text.h5"), "w") as file:
        file.write("not weights")
    with pytest.raises(ValueError, match=f"'{ram_dir}/text.h5' is not a weights file"):
        tfresnet.build_backbone("resnet-test", weights=paths.join(ram_dir, "text.h5"), image_size=32)


def test_a_safetensors_file_on_a_store_loads(tmp_path, ram_dir, tiny_torchvision):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    state_dict = _random_state_dict(_tiny_v1_5())
    save_file(state_dict, str(tmp_path / "finetuned.safetensors"))
    path = paths.join(ram_dir, "finetuned.safetensors")
    paths.copy_file(str(tmp_path / "finetuned.safetensors"), path)
    network, _ = tfresnet.build_backbone("resnet50-torchvision", weights=path, image_size=32)
    np.testing.assert_array_equal(
        network.get_layer("layer4_0_conv3").kernel.numpy(),
        state_dict["layer4.0.conv3.weight"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize("weights", [3, 1.5, ["imagenet"]])
def test_weights_of_another_type_are_refused(weights):
    with pytest.raises(
        ValueError, match="weights must be 'imagenet', None or a file path. Received: weights="
    ):
        tfresnet.build_backbone("resnet50", weights=weights, image_size=32)


# === PyTorch state dicts ===


def _random_state_dict(network: keras.Model) -> dict:
    """A random state dict for `network`, in PyTorch's layout, with a head and counters."""
    rng = np.random.default_rng(0)
    features = network.output_shape[-1]
    state_dict = {"fc.weight": np.ones((10, features), "float32"), "fc.bias": np.zeros(10, "float32")}
    for layer in network.layers:
        module = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            kernel = rng.normal(0, 0.05, layer.kernel.shape).astype("float32")
            # safetensors writes an array's memory as it lies: a transposed view must be copied.
            state_dict[f"{module}.weight"] = np.ascontiguousarray(
                kernel.transpose(torchvision_resnet.HWIO_TO_OIHW)
            )
        elif isinstance(layer, keras.layers.BatchNormalization):
            for key in torchvision_resnet.BATCH_NORM_KEYS:
                state_dict[f"{module}.{key}"] = rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32")
            state_dict[f"{module}.num_batches_tracked"] = np.array(7, "int64")
    return state_dict


def test_safetensors_file_loads_without_torch(tmp_path, monkeypatch, tiny_torchvision):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    monkeypatch.setitem(sys.modules, "torch", None)  # any import of torch fails
    state_dict = _random_state_dict(_tiny_v1_5())
    path = str(tmp_path / "finetuned.safetensors")
    save_file(state_dict, path)
    network, _ = tfresnet.build_backbone("resnet50-torchvision", weights=path, image_size=32)
    np.testing.assert_array_equal(
        network.get_layer("layer4_0_conv3").kernel.numpy(),
        state_dict["layer4.0.conv3.weight"].transpose(2, 3, 1, 0),
    )
    bn = network.get_layer("layer2_1_bn2")
    loaded = [bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance]
    for key, variable in zip(("weight", "bias", "running_mean", "running_var"), loaded):
        np.testing.assert_array_equal(variable.numpy(), state_dict[f"layer2.1.bn2.{key}"])


def test_pth_without_torch_says_pip_install_torch(tmp_path, monkeypatch, tiny_torchvision):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "finetuned.pth"
    path.write_bytes(b"never read")
    with pytest.raises(ImportError, match="needs PyTorch: pip install torch") as error:
        tfresnet.build_backbone("resnet50-torchvision", weights=str(path), image_size=32)
    assert "pass the .safetensors file" in str(error.value)


def test_state_dict_for_a_keras_backbone_is_refused(tmp_path):
    path = tmp_path / "resnet50.safetensors"
    path.write_bytes(b"never read")
    with pytest.raises(ValueError, match="is a PyTorch state dict: backbone='resnet50-torchvision' takes"):
        tfresnet.build_backbone("resnet50v2", weights=str(path), image_size=32)


@pytest.mark.parametrize(
    "backbone, weights, message",
    [
        (
            "resnet50",
            "torchvision:IMAGENET1K_V2",
            "torchvision weights load into backbone='resnet50-torchvision'",
        ),
        ("resnet50-torchvision", "torchvision:IMAGENET1K_V3", "Expected one of 'torchvision:IMAGENET1K_V1'"),
    ],
)
def test_torchvision_weights_errors(backbone, weights, message):
    with pytest.raises(ValueError, match=message):
        tfresnet.build_backbone(backbone, weights=weights, image_size=32)
