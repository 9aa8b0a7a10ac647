import os

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet import backbones


@pytest.mark.parametrize(
    "backbone, names",
    [
        (
            "resnet50",
            ["images", "preprocessing", "backbone", "pooler", "output_dropout", "predictions"],
        ),
        (
            "resnet50v2",
            ["images", "preprocessing", "backbone", "pooler", "output_dropout", "predictions"],
        ),
        ("hub", ["images", "preprocessing", "backbone", "output_dropout", "predictions"]),
    ],
)
def test_output_shape_and_layer_names(backbone, names, hub_module_dir, images):
    if backbone == "hub":
        backbone = f"hub:{hub_module_dir}"
    model = tfresnet.build_classifier(3, backbone=backbone, weights=None, image_size=32)
    assert [layer.name for layer in model.layers] == names
    assert model.input_shape == (None, 32, 32, 3)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (4, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_head_options():
    model = tfresnet.build_classifier(
        4, backbone="resnet50v2", weights=None, image_size=32, head_units=16, dropout=0.0
    )
    assert model.get_layer("head_dense").units == 16
    assert "output_dropout" not in [layer.name for layer in model.layers]
    assert model.get_layer("predictions").units == 4


def test_backbone_frozen_by_default_head_trainable():
    model = tfresnet.build_classifier(3, weights=None, image_size=32, head_units=8)
    assert not model.get_layer("backbone").trainable_weights
    trainable = {v.path.split("/")[0] for v in model.trainable_weights}
    assert trainable == {"head_dense", "predictions"}


def test_predictions_float32_under_mixed_precision(images):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tfresnet.build_classifier(3, weights=None, image_size=32)
        assert model.get_layer("backbone").compute_dtype == "float16"
        assert model.get_layer("preprocessing").compute_dtype == "float32"
        assert model(images).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("tf", keras.applications.resnet_v2.preprocess_input),
    ],
)
def test_normalization_matches_keras_preprocess_input(mode, reference, images):
    layer = tfresnet.ImageNormalization(mode)
    np.testing.assert_allclose(layer(images), reference(images.copy()), atol=1e-4)


def test_unit_normalization(images):
    out = keras.ops.convert_to_numpy(tfresnet.ImageNormalization("unit")(images))
    np.testing.assert_allclose(out, images / 255.0, atol=1e-6)


@pytest.mark.parametrize("file_name", ["backbone.h5", "backbone.weights.h5"])
def test_weights_from_file(tmp_path, file_name):
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / file_name)
    if file_name.endswith(".weights.h5"):
        source.save_weights(path)
    else:
        source.save(path)
    model = tfresnet.build_classifier(2, weights=path, image_size=32)
    loaded = model.get_layer("backbone").weights
    assert len(loaded) == len(source.weights)
    for expected, actual in zip(source.weights, loaded):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


def test_weights_of_another_architecture(tmp_path):
    path = str(tmp_path / "v2.weights.h5")
    keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match="do not fit the resnet50 backbone"):
        tfresnet.build_classifier(2, backbone="resnet50", weights=path, image_size=32)


def test_weights_file_that_is_not_weights(tmp_path):
    path = tmp_path / "resnet50.h5"
    path.write_text("not weights")
    with pytest.raises(ValueError, match="is not a weights file"):
        tfresnet.build_classifier(2, weights=str(path), image_size=32)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Weights file not found"):
        tfresnet.build_classifier(2, weights=str(tmp_path / "nope.h5"), image_size=32)


def test_imagenet_weights_offline_error(tmp_path, monkeypatch):
    # A closed local port makes the download fail the same way everywhere, online or not.
    monkeypatch.setattr(backbones, "KERAS_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(OSError) as error:
        tfresnet.build_classifier(2, weights="imagenet", image_size=32)
    message = str(error.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert os.path.join(str(tmp_path), "models") in message
    assert "weights='/path/to/file.h5'" in message


def test_imagenet_weights_from_cache(tmp_path, monkeypatch):
    # A file already in the Keras cache (with the published name) is used without a download;
    # its hash is not the published one, so Keras would re-download it: it must refuse instead.
    monkeypatch.setattr(backbones, "KERAS_WEIGHTS_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    row = backbones.BACKBONES["resnet50v2"]
    monkeypatch.setitem(
        backbones.BACKBONES,
        "resnet50v2",
        backbones.Backbone(
            name=row.name,
            builder=row.builder,
            normalization=row.normalization,
            weights_file=row.weights_file,
            weights_hash=None,
        ),
    )
    source = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(32, 32, 3))
    (tmp_path / "models").mkdir()
    source.save(str(tmp_path / "models" / row.weights_file))
    model = tfresnet.build_classifier(2, backbone="resnet50v2", weights="imagenet", image_size=32)
    np.testing.assert_array_equal(model.get_layer("backbone").weights[0].numpy(), source.weights[0].numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"image_size": 16}, "image_size must be an integer >= 32"),
        ({"backbone": "resnet18"}, "Unknown backbone"),
        ({"backbone": "hub:"}, "needs a handle"),
        ({"head_units": 0}, "head_units must be None or a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"weights": 3}, "weights must be 'imagenet', None or a file path"),
    ],
)
def test_invalid_arguments(kwargs, message):
    arguments = {"num_classes": 3, "weights": None, "image_size": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        tfresnet.build_classifier(arguments.pop("num_classes"), **arguments)


def test_hub_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="Hub module not found"):
        tfresnet.build_classifier(2, backbone=f"hub:{tmp_path / 'missing'}", image_size=32)


def test_hub_path_without_saved_model(tmp_path):
    with pytest.raises(ValueError, match="holds no SavedModel"):
        tfresnet.build_classifier(2, backbone=f"hub:{tmp_path}", image_size=32)
