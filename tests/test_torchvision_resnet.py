"""torchvision's ResNet50 v1.5 in Keras: its architecture and the conversion of state dicts.

`tests/data/torchvision_reference.npz` holds a small torchvision ResNet v1.5 and its outputs,
written by `tools/make_torchvision_reference.py`; where torch and torchvision are installed, the
full ResNet50 is also compared with torchvision itself. Loading files (offline errors, the cache,
.pth and .safetensors) is tested in test_weights.py.
"""

import dataclasses
import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels

import tfresnet
from tfresnet.models import backbones, torchvision_resnet
from tfresnet.models.torchvision_resnet import load_state_dict, resnet_v1_5

HERE = os.path.dirname(__file__)
REFERENCE = os.path.join(HERE, "data", "torchvision_reference.npz")
TOOL = os.path.join(HERE, "..", "tools", "make_torchvision_reference.py")
TINY = {"stage_blocks": (1, 2, 1, 1), "width": 4}  # the reference's configuration
RESNET50_LAYERS = 191
# torchvision's resnet50 has 25,557,032 parameters, 2048 * 1000 + 1000 of them in fc.
RESNET50_PARAMS_WITHOUT_FC = 25_557_032 - 2_049_000


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture
def state_dict(reference) -> dict:
    prefix = "state_dict/"
    return {key[len(prefix) :]: value for key, value in reference.items() if key.startswith(prefix)}


def _tiny(input_shape=(None, None, 3), name="tiny") -> keras.Model:
    return resnet_v1_5(TINY["stage_blocks"], width=TINY["width"], input_shape=input_shape, name=name)


def _tiny_row(**changes) -> backbones.Backbone:
    """The resnet50-torchvision row with the tiny network of the same structure as its builder."""
    return dataclasses.replace(
        backbones.BACKBONES["resnet50-torchvision"],
        builder=lambda include_top, weights, input_shape, name: _tiny(input_shape, name),
        **changes,
    )


def _logits(features: np.ndarray, state_dict: dict) -> np.ndarray:
    return features.mean(axis=(1, 2)) @ state_dict["fc.weight"].T + state_dict["fc.bias"]


# === Architecture and conversion ===


def test_tiny_network_matches_torchvision_reference(reference, state_dict):
    network = _tiny()
    assert load_state_dict(network, state_dict) == ["fc.bias", "fc.weight"]
    features = keras.ops.convert_to_numpy(network(reference["images"]))
    assert features.shape == reference["features"].shape == (2, 2, 2, 128)
    # PyTorch computed the reference, on another machine: other kernels.
    assert_close_across_kernels(features, reference["features"])
    assert_close_across_kernels(_logits(features, state_dict), reference["logits"])


def test_resnet50_architecture_facts():
    # Stage indices and freezing are checked with the other rows in test_backbones / test_freezing.
    network = torchvision_resnet.resnet50(input_shape=(32, 32, 3))
    names = [layer.name for layer in network.layers]
    assert len(names) == RESNET50_LAYERS
    assert names[:7] == ["input", "conv1_pad", "conv1", "bn1", "relu", "maxpool_pad", "maxpool"]
    # v1.5: the first block of a stage strides in its 3x3 convolution and its shortcut.
    assert network.get_layer("layer2_0_conv1").strides == (1, 1)
    assert network.get_layer("layer2_0_conv2").strides == (2, 2)
    assert network.get_layer("layer2_0_downsample_0").strides == (2, 2)
    assert (network.get_layer("bn1").epsilon, network.get_layer("bn1").momentum) == (1e-5, 0.9)
    assert not any(getattr(layer, "use_bias", False) for layer in network.layers)
    moving = ("moving_mean", "moving_variance")  # PyTorch's buffers, not parameters
    params = sum(int(np.prod(v.shape)) for v in network.weights if not v.path.endswith(moving))
    assert params == RESNET50_PARAMS_WITHOUT_FC


def test_checkpoint_wrappers_and_data_parallel_prefix(state_dict):
    network = _tiny()
    wrapped = {"epoch": 3, "model": {f"module.{key}": value for key, value in state_dict.items()}}
    assert load_state_dict(network, wrapped) == ["fc.bias", "fc.weight"]
    kernel = network.get_layer("layer1_0_conv2").kernel.numpy()
    np.testing.assert_array_equal(kernel, state_dict["layer1.0.conv2.weight"].transpose(2, 3, 1, 0))


def test_missing_and_unexpected_keys_are_reported_and_nothing_is_loaded(state_dict):
    network = _tiny()
    before = network.get_layer("conv1").kernel.numpy().copy()
    del state_dict["layer4.0.conv3.weight"]
    state_dict["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), "float32")
    with pytest.raises(
        ValueError,
        match=r"missing keys \(1: layer4.0.conv3.weight\); unexpected keys \(1: layer5.0.conv1.weight\)",
    ):
        load_state_dict(network, state_dict)
    np.testing.assert_array_equal(network.get_layer("conv1").kernel.numpy(), before)


def test_shape_mismatch_is_reported_and_nothing_is_loaded(state_dict):
    network = _tiny()
    before = network.get_layer("conv1").kernel.numpy().copy()
    state_dict["layer4.0.conv3.weight"] = np.zeros((128, 32, 3, 3), "float32")
    with pytest.raises(ValueError, match=r"layer4.0.conv3.weight should have shape \(128, 32, 1, 1\)"):
        load_state_dict(network, state_dict)
    np.testing.assert_array_equal(network.get_layer("conv1").kernel.numpy(), before)


def test_include_top_is_refused():
    with pytest.raises(ValueError, match="Received: include_top=True"):
        torchvision_resnet.resnet50(include_top=True)


def test_export_saved_model(tmp_path, monkeypatch):
    # The tiny network has every kind of layer of ResNet50 and exports in a fraction of its time.
    monkeypatch.setitem(backbones.BACKBONES, "resnet50-torchvision", _tiny_row())
    model = tfresnet.build_classifier(2, backbone="resnet50-torchvision", weights=None, image_size=32)
    path = tfresnet.export_saved_model(model, str(tmp_path / "1"), class_names=["cat", "dog"])
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    loaded = tf.saved_model.load(path)  # kept: its signatures use its variables
    served = loaded.signatures["serve_images"](images=tf.constant(images))
    assert_close_across_kernels(served["probabilities"], model(images))


# === Against torchvision itself, where it is installed ===


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-9), ("float32", 5e-5)])
def test_full_resnet50_matches_torchvision(tmp_path, dtype, tolerance):
    # In float64 the two agree to rounding: the architecture and the conversion are exact. In
    # float32, rounding over 53 convolutions differs by up to about 2e-5 of the largest output.
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    spec = importlib.util.spec_from_file_location("make_torchvision_reference", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch_model = tool.random_resnet(seed=1)
    path = str(tmp_path / "resnet50.pth")
    torch.save(torch_model.state_dict(), path)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    images = keras.ops.convert_to_numpy(tfresnet.ImageNormalization("torch")(pixels)).astype(dtype)
    expected_features, expected_logits = tool.features_and_logits(
        torch_model.to(getattr(torch, dtype)), images.transpose(0, 3, 1, 2)
    )

    keras.config.set_dtype_policy(dtype)
    try:
        network, _ = tfresnet.build_backbone("resnet50-torchvision", weights=path, image_size=64)
        features = keras.ops.convert_to_numpy(network(images))
    finally:
        keras.config.set_dtype_policy("float32")
    state_dict = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    for actual, expected in [(features, expected_features), (_logits(features, state_dict), expected_logits)]:
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(actual, expected, atol=tolerance * scale, rtol=0)
