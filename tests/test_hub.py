"""HubLayer: TF Hub modules in Keras 3 models; they train, freeze, export and reload.

A small module of the same format as TF Hub's `resnet_v2_50/feature_vector` (a TF2 reusable
SavedModel: `__call__(images, training)`, `variables`, `trainable_variables`) carries the
mechanics: two convolutions with BatchNorm, so four "layers". conftest's ResNet50V2-shaped
module is loaded once, to show that such a module gives the 2048 features the hub row states.
"""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels, save_hub_module

import tfresnet
from tfresnet import paths
from tfresnet.models.backbones import BACKBONES
from tfresnet.models.hub import resolve_handle

MODULE_LAYERS = ["stem_conv", "stem_bn", "block_conv", "block_bn"]
FEATURES = 16
ONE_HOT = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
CLASSIFIER_LAYERS = ["images", "preprocessing", "backbone", "output_dropout", "predictions"]


def save_small_module(path: str) -> str:
    """Writes a small reusable SavedModel: [0, 1] images of any size to 16 pooled features."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(FEATURES, 3, name="block_conv")(x)
    x = keras.layers.BatchNormalization(name="block_bn")(x)
    x = keras.layers.ReLU()(x)
    network = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    # Statistics other than 0 and 1, so that inference mode and training mode differ.
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))

    return save_hub_module(path, network)


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory) -> str:
    return save_small_module(str(tmp_path_factory.mktemp("hub") / "small"))


@pytest.fixture
def hub_model(module_dir) -> keras.Model:
    return tfresnet.build_classifier(3, backbone=f"hub:{module_dir}", image_size=32)


def _by_name(layer: tfresnet.HubLayer) -> dict:
    return {variable.name: variable for variable in layer.weights}


@pytest.fixture(scope="module")
def trained(module_dir) -> dict:
    """One step of the recipe (Adam, traced) with the module frozen before its index 2 (-2)."""
    model = tfresnet.build_classifier(3, backbone=f"hub:{module_dir}", image_size=32)
    report = tfresnet.freeze(model, until=-2)
    tfresnet.compile_classifier(model, learning_rate=1e-2)
    hub_layer = model.get_layer("backbone")
    before = {name: v.numpy().copy() for name, v in _by_name(hub_layer).items()}
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.fit(images, ONE_HOT, epochs=1, batch_size=4, verbose=0)
    return {"model": model, "report": report, "before": before, "images": images}


# === The layer ===


def test_classifier_layers(hub_model, images):
    assert [layer.name for layer in hub_model.layers] == CLASSIFIER_LAYERS
    assert hub_model.get_layer("preprocessing").mode == BACKBONES["hub"].normalization == "unit"
    assert hub_model.get_layer("backbone").output.shape == (None, FEATURES)
    probabilities = keras.ops.convert_to_numpy(hub_model(images))
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_variables_are_the_modules_with_clean_names(hub_model, module_dir):
    module = tf.saved_model.load(module_dir)
    originals = {v.name.split(":")[0].replace("/", "_"): v for v in module.variables}
    weights = _by_name(hub_model.get_layer("backbone"))
    assert sorted(weights) == sorted(originals)
    assert len(weights) == 12
    assert not [name for name in weights if ":" in name or "/" in name]
    for name, variable in weights.items():
        np.testing.assert_array_equal(variable.numpy(), originals[name].numpy())


def test_module_layers_are_its_name_scopes(hub_model):
    assert hub_model.get_layer("backbone").module_layers == MODULE_LAYERS


def test_frozen_by_default_and_unfrozen_by_trainable(hub_model):
    hub_layer = hub_model.get_layer("backbone")
    assert not hub_layer.trainable_weights
    hub_layer.trainable = True
    assert [v.name for v in hub_layer.trainable_weights] == [
        "stem_conv_kernel",
        "stem_conv_bias",
        "stem_bn_gamma",
        "stem_bn_beta",
        "block_conv_kernel",
        "block_conv_bias",
        "block_bn_gamma",
        "block_bn_beta",
    ]


def test_module_runs_batch_norm_in_inference_mode(hub_model, images, module_dir):
    # The statistics are not 0 and 1, so batch statistics would give other features.
    module = tf.saved_model.load(module_dir)
    pixels = images / 255.0
    hub_layer = hub_model.get_layer("backbone")
    hub_layer.trainable = True
    expected = module(tf.constant(pixels), training=False)
    assert_close_across_kernels(hub_layer(pixels, training=True), expected)  # eager, the module traced
    assert not np.allclose(module(tf.constant(pixels), training=True), expected, atol=1e-3)


@pytest.mark.parametrize("trainable", [True, False])
def test_one_adam_step(hub_model, images, trainable):
    hub_layer = hub_model.get_layer("backbone")
    hub_layer.trainable = trainable
    tfresnet.compile_classifier(hub_model, learning_rate=1e-2)
    kernel, moving_mean = _by_name(hub_layer)["stem_conv_kernel"], _by_name(hub_layer)["stem_bn_moving_mean"]
    before = kernel.numpy().copy(), moving_mean.numpy().copy()

    hub_model.fit(images, ONE_HOT, epochs=1, batch_size=4, verbose=0)

    assert (not np.allclose(before[0], kernel.numpy())) == trainable
    np.testing.assert_array_equal(before[1], moving_mean.numpy())


# === Freezing by the module's layers ===


def test_freeze_by_negative_index(trained):
    assert trained["report"]["first_trainable"] == len(MODULE_LAYERS) - 2 == 2


@pytest.mark.parametrize(
    "variable, trains",
    [
        ("stem_conv_kernel", False),  # before the index: frozen
        ("stem_bn_gamma", False),
        ("stem_bn_beta", False),
        ("stem_bn_moving_mean", False),
        ("block_conv_kernel", True),  # from the index on: trains
        ("block_conv_bias", True),
        # A module's BatchNorm scale and shift train where its layer is unfrozen (they are
        # trainable variables of the module); its statistics never change (inference mode).
        ("block_bn_gamma", True),
        ("block_bn_beta", True),
        ("block_bn_moving_mean", False),
        ("block_bn_moving_variance", False),
    ],
)
def test_unfrozen_layers_train_and_batch_norm_statistics_do_not(trained, variable, trains):
    hub_variable = _by_name(trained["model"].get_layer("backbone"))[variable]
    assert hub_variable.trainable == trains
    assert (not np.array_equal(trained["before"][variable], hub_variable.numpy())) == trains


def test_layer_parameters_follow_freezing(hub_model):
    hub_layer = hub_model.get_layer("backbone")
    tfresnet.freeze(hub_model, until=-3)
    rows = hub_layer.layer_parameters()
    assert rows == [
        ("stem_conv", 0, 3 * 3 * 3 * 8 + 8),
        ("stem_bn", 2 * 8, 2 * 8),  # gamma and beta train, the statistics do not
        ("block_conv", 3 * 3 * 8 * FEATURES + FEATURES, 0),
        ("block_bn", 2 * FEATURES, 2 * FEATURES),
    ]
    assert sum(t for _, t, _ in rows) == sum(int(np.prod(v.shape)) for v in hub_layer.trainable_weights)
    assert sum(t + f for _, t, f in rows) == hub_layer.count_params()


@pytest.mark.parametrize("until", [None, len(MODULE_LAYERS)])
def test_freezing_every_layer_freezes_the_whole_module(hub_model, until):
    hub_layer = hub_model.get_layer("backbone")
    tfresnet.freeze(hub_model, until=0)
    assert hub_layer.trainable_weights
    report = tfresnet.freeze(hub_model, until=until)
    assert report["first_trainable"] == len(MODULE_LAYERS)
    assert not hub_layer.trainable
    assert not hub_layer.trainable_weights


def test_unknown_module_layer_suggests_close_names(hub_model):
    with pytest.raises(ValueError, match="Close names: block_bn"):
        tfresnet.freeze(hub_model, until="block_bm")


# === Saving and serving ===


def test_trusted_keras_file_reloads_with_safe_mode_off(trained, tmp_path):
    model, images = trained["model"], trained["images"]
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=False)
    assert isinstance(reloaded.get_layer("backbone"), tfresnet.HubLayer)
    np.testing.assert_allclose(reloaded(images), model(images), atol=1e-6)
    # The module's weights come from the file, not from the module the handle names.
    kernel = _by_name(reloaded.get_layer("backbone"))["block_conv_kernel"].numpy()
    np.testing.assert_array_equal(kernel, _by_name(model.get_layer("backbone"))["block_conv_kernel"].numpy())
    assert not np.array_equal(kernel, trained["before"]["block_conv_kernel"])


def test_keras_file_keeps_the_frozen_layers_and_the_optimizer_state(trained, tmp_path):
    model = trained["model"]
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=False)
    assert reloaded.get_layer("backbone").frozen_layers == ["stem_conv", "stem_bn"]
    assert [v.path for v in reloaded.trainable_weights] == [v.path for v in model.trainable_weights]
    assert int(reloaded.optimizer.iterations) == 1  # Keras restores a state only of the same variables


def test_config_round_trip_keeps_the_frozen_layers(hub_model):
    hub_layer = hub_model.get_layer("backbone")
    tfresnet.freeze(hub_model, until="block_conv")
    config = hub_layer.get_config()
    assert (config["trainable"], config["frozen_layers"]) == (True, ["stem_conv", "stem_bn"])
    restored = tfresnet.HubLayer.from_config(config, safe_mode=False)
    assert [v.name for v in restored.trainable_weights] == [v.name for v in hub_layer.trainable_weights]


def test_from_config_is_refused_in_safe_mode(hub_model):
    config = hub_model.get_layer("backbone").get_config()
    with pytest.raises(ValueError, match="safe_mode=False"):
        tfresnet.HubLayer.from_config(config)


def save_marking_module(path: str, marker: str) -> str:
    """A reusable SavedModel whose every call writes the file `marker`: what a hostile module
    could do."""
    network = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])

    @tf.function
    def call(images, training=False):
        with tf.control_dependencies([tf.io.write_file(marker, "the module ran")]):
            return tf.identity(network(images))

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    root = tf.train.Checkpoint()
    root.variables, root.trainable_variables, root.regularization_losses = [], [], []
    root.__call__ = call
    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    tf.saved_model.save(root, path)
    return path


LOAD_IN_FRESH_PROCESS = """
import os
import sys
import keras
import numpy as np
import tfresnet
model_path, marker, output, images = sys.argv[1:]
try:
    keras.saving.load_model(model_path)  # safe mode, the default
    print("LOADED")
except ValueError as error:
    print("REFUSED", " ".join(str(error).split()))  # on one line
print("MARKER AFTER SAFE MODE", os.path.exists(marker))
model = keras.saving.load_model(model_path, safe_mode=False)  # the user trusts the file
np.save(output, keras.ops.convert_to_numpy(model(np.load(images))))
"""


def test_keras_file_with_a_hub_layer_is_refused_in_safe_mode(tmp_path, images):
    import subprocess
    import sys

    marker = str(tmp_path / "written_by_the_module")
    module = save_marking_module(str(tmp_path / "module"), marker)
    model = tfresnet.build_classifier(3, backbone=f"hub:{module}", image_size=32)
    expected = keras.ops.convert_to_numpy(model(images))
    model.save(str(tmp_path / "model.keras"))
    os.remove(marker)  # built and called here, in Python: the module ran, as it may
    np.save(tmp_path / "images.npy", images)
    args = [str(tmp_path / "model.keras"), marker, str(tmp_path / "out.npy"), str(tmp_path / "images.npy")]

    # One fresh process: first in safe mode, then with safe_mode=False.
    run = subprocess.run(
        [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, *args], capture_output=True, text=True, timeout=300
    )

    assert run.returncode == 0, run.stderr
    refused, marker_line = run.stdout.splitlines()[-2:]
    assert refused.startswith("REFUSED") and "Refused to load the TF Hub module" in refused
    assert "safe_mode=False" in refused
    assert "keras.config.enable_unsafe_deserialization()" in refused
    assert marker_line == "MARKER AFTER SAFE MODE False"  # refused before any of its code ran
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_frozen_layers_the_module_does_not_have(module_dir):
    with pytest.raises(
        ValueError, match=r"frozen_layers names layers the module at .* does not have: \['conv1'\]"
    ):
        tfresnet.HubLayer(module_dir, trainable=True, frozen_layers=["stem_conv", "conv1"])


def test_export_serves_without_the_module(trained, module_dir, tmp_path):
    model, images = trained["model"], trained["images"]
    model.export(str(tmp_path / "export"), verbose=False)
    aside = str(tmp_path / "module_moved_away")
    shutil.move(module_dir, aside)
    try:
        exported = tf.saved_model.load(str(tmp_path / "export"))
        served = exported.serve(tf.constant(images))
    finally:
        shutil.move(aside, module_dir)
    assert_close_across_kernels(served, model(images))


# === Handles ===


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="Hub module not found: .* is not a directory"):
        tfresnet.build_classifier(2, backbone=f"hub:{tmp_path / 'missing'}", image_size=32)


def test_folder_without_saved_model(tmp_path):
    with pytest.raises(ValueError, match="holds no SavedModel"):
        tfresnet.build_classifier(2, backbone=f"hub:{tmp_path}", image_size=32)


def test_saved_model_that_is_not_a_reusable_module(tmp_path):
    tf.saved_model.save(tf.Module(), str(tmp_path))
    with pytest.raises(ValueError, match="is not a reusable Hub module: it needs `__call__"):
        tfresnet.build_classifier(2, backbone=f"hub:{tmp_path}", image_size=32)


def test_url_that_cannot_be_downloaded(monkeypatch):
    hub = pytest.importorskip("tensorflow_hub")

    def offline(handle):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "resolve", offline)
    url = "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5"
    with pytest.raises(OSError, match="Could not download the Hub module") as error:
        resolve_handle(url)
    message = str(error.value)
    assert url in message
    assert "network unreachable" in message
    assert "backbone='hub:/path/to/module'" in message
    assert "TFHUB_CACHE_DIR" in message


def test_downloads_go_to_a_cache_of_the_users_own(monkeypatch, tmp_path):
    hub = pytest.importorskip("tensorflow_hub")
    used = []
    monkeypatch.setattr(hub, "resolve", lambda handle: used.append(os.environ["TFHUB_CACHE_DIR"]) or "x")
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    resolve_handle("https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5")
    assert used == [str(tmp_path / "keras" / "tfhub_modules")]
    assert os.stat(used[0]).st_mode & 0o777 == 0o700
    assert "TFHUB_CACHE_DIR" not in os.environ  # the session is left as it was

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "mine"))
    resolve_handle("https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5")
    assert used[1] == str(tmp_path / "mine")


def test_a_module_on_a_store_loads_from_there(module_dir, ram_dir, images):
    handle = paths.join(ram_dir, "small")
    paths.copy_tree(module_dir, handle)
    assert resolve_handle(handle) == handle
    on_store = tfresnet.build_classifier(3, backbone=f"hub:{handle}", image_size=32)
    assert on_store.get_layer("backbone").handle == handle
    local = tfresnet.build_classifier(3, backbone=f"hub:{module_dir}", image_size=32)
    np.testing.assert_array_equal(
        on_store.get_layer("backbone")(images).numpy(), local.get_layer("backbone")(images).numpy()
    )
    with pytest.raises(FileNotFoundError, match="Hub module not found"):
        resolve_handle(paths.join(ram_dir, "missing"))


def test_local_path_resolves_to_itself(module_dir):
    assert resolve_handle(module_dir) == module_dir
    assert os.path.isfile(os.path.join(module_dir, "saved_model.pb"))


# === A module shaped like resnet_v2_50/feature_vector ===


def test_resnet_v2_50_shaped_module_gives_2048_features(hub_module_dir, images):
    model = tfresnet.build_classifier(3, backbone=f"hub:{hub_module_dir}", image_size=32)
    hub_layer = model.get_layer("backbone")
    assert [layer.name for layer in model.layers] == CLASSIFIER_LAYERS
    assert hub_layer.output.shape == (None, BACKBONES["hub"].feature_size) == (None, 2048)
    assert len(hub_layer.weights) == 270  # ResNet50V2's variables
    assert keras.ops.convert_to_numpy(model(images)).shape == (4, 3)
