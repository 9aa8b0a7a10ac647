"""torchvision's ResNet50 v1.5 in Keras: architecture, weight conversion and loading, its row.

`tests/data/torchvision_reference.npz` holds a small torchvision ResNet v1.5 and its outputs,
written by `tools/make_torchvision_reference.py`; where torch and torchvision are installed, the
full ResNet50 is also compared with torchvision itself.
"""

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfresnet
from tfresnet import backbones, torchvision_resnet
from tfresnet.torchvision_resnet import load_state_dict, resnet_v1_5

HERE = os.path.dirname(__file__)
REFERENCE = os.path.join(HERE, "data", "torchvision_reference.npz")
TOOL = os.path.join(HERE, "..", "tools", "make_torchvision_reference.py")
TINY = {"stage_blocks": (1, 2, 1, 1), "width": 4}  # the reference's configuration
TOLERANCE = 1e-4
RESNET50_STAGES = {"layer1": 7, "layer2": 42, "layer3": 88, "layer4": 156}
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


def _random_state_dict(network: keras.Model) -> dict:
    """A random state dict for `network`, in PyTorch's layout, with a head and counters."""
    rng = np.random.default_rng(0)
    state_dict = {"fc.weight": np.ones((10, 2048), "float32"), "fc.bias": np.zeros(10, "float32")}
    for layer in network.layers:
        module = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            kernel = rng.normal(0, 0.05, layer.kernel.shape).astype("float32")
            # safetensors writes an array's memory as it lies: a transposed view must be copied.
            oihw = kernel.transpose(torchvision_resnet.HWIO_TO_OIHW)
            state_dict[f"{module}.weight"] = np.ascontiguousarray(oihw)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for key in torchvision_resnet.BATCH_NORM_KEYS:
                state_dict[f"{module}.{key}"] = rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32")
            state_dict[f"{module}.num_batches_tracked"] = np.array(7, "int64")
    return state_dict


# === Architecture and conversion ===


def test_tiny_network_matches_torchvision_reference(reference, state_dict):
    network = _tiny()
    assert load_state_dict(network, state_dict) == ["fc.bias", "fc.weight"]
    features = keras.ops.convert_to_numpy(network(reference["images"]))
    assert features.shape == reference["features"].shape == (2, 2, 2, 128)
    np.testing.assert_allclose(features, reference["features"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(_logits(features, state_dict), reference["logits"], atol=TOLERANCE, rtol=0)


def test_resnet50_layers_facts_and_freezing():
    model = tfresnet.build_classifier(3, backbone="resnet50-torchvision", weights=None, image_size=32)
    assert [layer.name for layer in model.layers] == [
        "images",
        "preprocessing",
        "backbone",
        "pooler",
        "output_dropout",
        "predictions",
    ]
    assert model.get_layer("preprocessing").mode == "torch"
    backbone = model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]
    assert len(names) == RESNET50_LAYERS
    assert names[:7] == ["input", "conv1_pad", "conv1", "bn1", "relu", "maxpool_pad", "maxpool"]
    for stage, index in RESNET50_STAGES.items():
        assert tfresnet.freeze(model, until=stage)["first_trainable"] == index
        assert names[index] == f"{stage}_0_conv1"
    # v1.5: the first block of a stage strides in its 3x3 convolution and its shortcut.
    assert backbone.get_layer("layer2_0_conv1").strides == (1, 1)
    assert backbone.get_layer("layer2_0_conv2").strides == (2, 2)
    assert backbone.get_layer("layer2_0_downsample_0").strides == (2, 2)
    assert backbone.get_layer("bn1").epsilon == 1e-5
    assert not any(getattr(layer, "use_bias", False) for layer in backbone.layers)
    moving = ("moving_mean", "moving_variance")  # PyTorch's buffers, not parameters
    params = sum(int(np.prod(v.shape)) for v in backbone.weights if not v.path.endswith(moving))
    assert params == RESNET50_PARAMS_WITHOUT_FC
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert model.predict(images, verbose=0).shape == (2, 3)


def test_torch_normalization(images):
    out = keras.ops.convert_to_numpy(tfresnet.ImageNormalization("torch")(images))
    expected = (images / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, expected, atol=1e-5)


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


# === Files and the backbone row ===


def test_safetensors_file_loads_without_torch(tmp_path, monkeypatch):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    monkeypatch.setitem(sys.modules, "torch", None)  # any import of torch fails
    state_dict = _random_state_dict(torchvision_resnet.resnet50())
    path = str(tmp_path / "resnet50.safetensors")
    save_file(state_dict, path)
    network, _ = tfresnet.build_backbone("resnet50-torchvision", weights=path, image_size=32)
    np.testing.assert_array_equal(
        network.get_layer("layer4_2_conv3").kernel.numpy(),
        state_dict["layer4.2.conv3.weight"].transpose(2, 3, 1, 0),
    )
    bn = network.get_layer("layer3_5_bn2")
    for key, variable in zip(
        ("weight", "bias", "running_mean", "running_var"),
        (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance),
    ):
        np.testing.assert_array_equal(variable.numpy(), state_dict[f"layer3.5.bn2.{key}"])


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "finetuned.pth"
    path.write_bytes(b"never read")
    with pytest.raises(ImportError, match="needs PyTorch: pip install torch") as error:
        load_state_dict(_tiny(), str(path))
    assert "safetensors" in str(error.value)


@pytest.mark.parametrize(
    "weights, file_name",
    [("torchvision:IMAGENET1K_V1", "resnet50-0676ba61.pth"), ("imagenet", "resnet50-11ad3fa6.pth")],
)
def test_torchvision_weights_offline_error(tmp_path, monkeypatch, weights, file_name):
    monkeypatch.setattr(backbones, "TORCHVISION_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(OSError) as error:
        tfresnet.build_backbone("resnet50-torchvision", weights=weights, image_size=32)
    message = str(error.value)
    assert file_name in message
    assert os.path.join(str(tmp_path), "models") in message
    assert f"weights='/path/to/{file_name}'" in message


def test_torchvision_weights_from_cache(tmp_path, monkeypatch, reference, state_dict):
    # A cached file of torchvision's name, whose SHA256 starts as the name says, is loaded without
    # a download; a tiny network of the same structure stands in for ResNet50.
    save_file = pytest.importorskip("safetensors.numpy").save_file
    monkeypatch.setattr(backbones, "TORCHVISION_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    written = str(tmp_path / "tiny.safetensors")
    save_file(state_dict, written)
    with open(written, "rb") as file:
        file_name = f"tiny-{hashlib.sha256(file.read()).hexdigest()[:8]}.safetensors"
    shutil.move(written, tmp_path / "models" / file_name)
    weights = {"IMAGENET1K_V2": backbones.TorchvisionWeights(file_name, 0.0, 232)}
    monkeypatch.setitem(backbones.BACKBONES, "resnet50-torchvision", _tiny_row(torchvision_weights=weights))
    network, _ = tfresnet.build_backbone(
        "resnet50-torchvision", weights="torchvision:IMAGENET1K_V2", image_size=40
    )
    features = keras.ops.convert_to_numpy(network(reference["images"]))
    np.testing.assert_allclose(features, reference["features"], atol=TOLERANCE, rtol=0)


def test_cached_file_with_another_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "TORCHVISION_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resnet50-11ad3fa6.pth").write_bytes(b"half a download")
    with pytest.raises(
        ValueError, match="is not torchvision's resnet50-11ad3fa6.pth: its SHA256 starts with"
    ):
        tfresnet.build_backbone("resnet50-torchvision", weights="torchvision:IMAGENET1K_V2", image_size=32)


def test_torchvision_weights_facts():
    row = backbones.BACKBONES["resnet50-torchvision"]
    v1, v2 = row.torchvision_weights["IMAGENET1K_V1"], row.torchvision_weights["IMAGENET1K_V2"]
    assert (v1.url, v1.sha256_prefix, v1.eval_resize, v1.eval_crop) == (
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "0676ba61",
        256,
        224,
    )
    assert (v2.file, v2.eval_resize, v2.eval_crop) == ("resnet50-11ad3fa6.pth", 232, 224)
    assert row.torchvision_weights["DEFAULT"] == v2


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


def test_state_dict_for_a_keras_backbone_is_refused(tmp_path):
    path = tmp_path / "resnet50.safetensors"
    path.write_bytes(b"never read")
    with pytest.raises(ValueError, match="is a PyTorch state dict: backbone='resnet50-torchvision' takes"):
        tfresnet.build_backbone("resnet50v2", weights=str(path), image_size=32)


def test_include_top_is_refused():
    with pytest.raises(ValueError, match="Received: include_top=True"):
        torchvision_resnet.resnet50(include_top=True)


def test_export_saved_model(tmp_path, monkeypatch):
    # The tiny network has every kind of layer of ResNet50 and exports in a fraction of its time.
    monkeypatch.setitem(backbones.BACKBONES, "resnet50-torchvision", _tiny_row())
    model = tfresnet.build_classifier(2, backbone="resnet50-torchvision", weights=None, image_size=32)
    path = tfresnet.export_saved_model(model, str(tmp_path / "1"), class_names=["cat", "dog"])
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    served = tf.saved_model.load(path).signatures["serve_images"](images=tf.constant(images))
    np.testing.assert_allclose(served["probabilities"], model.predict(images, verbose=0), atol=1e-5)


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
