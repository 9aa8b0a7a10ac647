"""Tests of tfresnet.export.litert: the Keras model's probabilities, quantized or not, and bad input."""

import os

import numpy as np
import pytest
from conftest import TRAINED_IMAGE_SIZE as IMAGE_SIZE

import tfresnet
from tfresnet.export import litert
from tfresnet.export.formats import compare
from tfresnet.export.onnx_export import export_onnx
from tfresnet.export.runtime import LiteRTRuntime, load_runtime

# === Float exports: the Keras model's probabilities and the SavedModel's interface ===


def test_litert_float32_computes_the_keras_probabilities_with_the_savedmodel_interface(
    keras_exports, held_out_images, trained
):
    output_dir, _ = keras_exports
    images, _, expected = held_out_images
    runtime = load_runtime(os.path.join(output_dir, "model.tflite"))
    np.testing.assert_allclose(runtime.probabilities(images), expected, atol=1e-4)
    np.testing.assert_allclose(runtime.probabilities(images[:1]), expected[:1], atol=1e-4)  # batch resized

    interpreter = runtime._interpreter
    assert list(interpreter.get_signature_list().values()) == [
        {"inputs": ["images"], "outputs": ["probabilities"]}
    ]
    (details,) = interpreter.get_input_details()
    assert details["dtype"] == np.float32
    assert list(details["shape_signature"]) == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert not {op for op in runtime.op_names() if op.startswith("Flex") or op == "CUSTOM"}
    assert runtime.class_names == trained[1]


@pytest.mark.slow
@pytest.mark.parametrize("quantization, tolerance", [("float16", 1e-2), ("dynamic", None)])
def test_float16_and_dynamic_range(
    trained, held_out_images, keras_exports, quantization, tolerance, tmp_path
):
    model, class_names, _, _ = trained
    images, _, expected = held_out_images
    path = litert.export_litert(
        model, str(tmp_path / "model.tflite"), quantization=quantization, class_names=class_names
    )
    probabilities = load_runtime(path).probabilities(images)
    if tolerance is not None:
        np.testing.assert_allclose(probabilities, expected, atol=tolerance)
    assert compare(expected, probabilities)["agreement"] >= 0.95
    float_size = keras_exports[1]["litert"]["size_bytes"]
    # Far from the 0.5 and 0.25 of a full-size ResNet50: the tiny network's 55 layers weigh
    # little next to the file's own structure.
    assert os.path.getsize(path) < (0.7 if quantization == "float16" else 0.5) * float_size


# === Bad input ===


def test_library_bad_input_writes_nothing(trained, tmp_path):
    model, class_names, _, _ = trained
    path = str(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="quantization='int8' needs representative_data"):
        litert.export_litert(model, path, quantization="int8", class_names=class_names)
    with pytest.raises(ValueError, match="quantization must be one of .* Received: quantization='int4'"):
        litert.export_litert(model, path, quantization="int4", class_names=class_names)
    with pytest.raises(ValueError, match="class_names is required to export a Keras model"):
        litert.export_litert(model, path)
    with pytest.raises(ValueError, match="There are 2 class names but the model predicts 3 classes"):
        export_onnx(model, str(tmp_path / "model.onnx"), class_names=["a", "b"])
    with pytest.raises(ValueError, match="must end with .onnx"):
        export_onnx(model, path, class_names=class_names)
    with pytest.raises(ValueError, match=r"images of shape \(32, 32, 3\)"):
        litert.export_litert(
            model,
            path,
            quantization="int8",
            representative_data=np.zeros((4, 40, 40, 3)),
            class_names=class_names,
        )
    assert os.listdir(tmp_path) == []


def test_calibration_images_come_from_arrays_or_labelled_batches(trained):
    _, _, _, held_out = trained
    images = litert.calibration_images(held_out.train_evaluation, IMAGE_SIZE, limit=20)
    assert images.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.float32
    first = next(iter(held_out.train_evaluation))[0].numpy()
    np.testing.assert_array_equal(images[:16], first)
    assert litert.calibration_images(first[0], IMAGE_SIZE).shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_a_conversion_that_computes_something_else_is_refused_and_nothing_replaced(
    keras_exports, trained, tmp_path, monkeypatch
):
    """What TFLite writes for a model saved without its weights (NaN) or another model's file
    must never replace an export: the probe batch catches it."""
    output_dir, _ = keras_exports
    with open(os.path.join(output_dir, "model.tflite"), "rb") as file:
        trained_file = file.read()
    other = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=IMAGE_SIZE)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous export")
    monkeypatch.setattr(litert, "convert", lambda *args, **kwargs: trained_file)
    with pytest.raises(
        RuntimeError, match="differs from the model by .* on a probe batch; nothing was written"
    ):
        litert.export_litert(other, str(target), class_names=trained[1])
    assert target.read_bytes() == b"previous export" and sorted(os.listdir(tmp_path)) == ["model.tflite"]


# === Every backbone kind ===


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50-torchvision", "hub"])
def test_real_backbones_convert_to_litert(backbone, hub_module_dir, tmp_path):
    """Full-size networks with random weights at 32 px: torchvision's explicit padding, a Hub
    module's restored functions. (ONNX of each is measured by `benchmarks/formats.py --backbones`.)"""
    name = f"hub:{hub_module_dir}" if backbone == "hub" else backbone
    model = tfresnet.build_classifier(3, backbone=name, weights=None, image_size=IMAGE_SIZE)
    path = litert.export_litert(model, str(tmp_path / "model.tflite"), class_names=["a", "b", "c"])
    images = np.random.default_rng(0).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    runtime = LiteRTRuntime(path)
    np.testing.assert_allclose(runtime.probabilities(images), model.predict(images, verbose=0), atol=1e-4)
    assert not {op for op in runtime.op_names() if op.startswith("Flex") or op == "CUSTOM"}


# === Multi-label ===


def test_a_multi_label_litert_file_outputs_sigmoids_and_carries_its_thresholds(multi_label_model, tmp_path):
    import json

    from tfresnet.models.thresholds import apply_thresholds

    model, data = multi_label_model
    images = np.concatenate([batch for batch, _ in data.validation.as_numpy_iterator()])
    path = litert.export_litert(
        model, str(tmp_path / "tags.tflite"), class_names=data.class_names, thresholds=[0.3, 0.6, 0.9]
    )
    with open(f"{path}.json") as file:
        settings = json.load(file)
    assert settings["multi_label"] is True and settings["thresholds"] == [0.3, 0.6, 0.9]
    with open(f"{path}.labels.txt") as file:
        assert file.read().splitlines() == ["blue", "green", "red"]
    runtime = load_runtime(path)
    assert list(runtime._interpreter.get_signature_list().values()) == [
        {"inputs": ["images"], "outputs": ["probabilities"]}
    ]
    expected = model.predict(images, verbose=0)
    probabilities = runtime.probabilities(images)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert (np.abs(probabilities.sum(axis=1) - 1) > 0.1).any()  # sigmoids, not a softmax
    assert runtime.multi_label and runtime.thresholds == [0.3, 0.6, 0.9]
    np.testing.assert_array_equal(
        apply_thresholds(probabilities, runtime.thresholds), apply_thresholds(expected, [0.3, 0.6, 0.9])
    )


def test_thresholds_for_a_single_label_model_are_refused(trained, tmp_path):
    model, class_names, _, _ = trained
    with pytest.raises(ValueError, match="thresholds apply to a multi-label classifier"):
        litert.export_litert(model, str(tmp_path / "m.tflite"), class_names=class_names, thresholds=[0.5] * 3)
    assert os.listdir(tmp_path) == []
