"""Tests of tfresnet.export.onnx_export: the Keras model's probabilities and the SavedModel's interface."""

import os

import numpy as np
import pytest
from conftest import TRAINED_IMAGE_SIZE as IMAGE_SIZE

from tfresnet.export import litert
from tfresnet.export.onnx_export import export_onnx
from tfresnet.export.runtime import OnnxRuntime, load_runtime


def test_onnx_computes_the_keras_probabilities_with_the_savedmodel_interface(keras_exports, held_out_images):
    output_dir, _ = keras_exports
    images, _, expected = held_out_images
    runtime = load_runtime(os.path.join(output_dir, "model.onnx"))
    assert isinstance(runtime, OnnxRuntime)
    np.testing.assert_allclose(runtime.probabilities(images), expected, atol=1e-4)
    (image_input,), outputs = runtime._session.get_inputs(), runtime._session.get_outputs()
    assert (image_input.name, image_input.type) == ("images", "tensor(float)")
    assert image_input.shape == ["batch", IMAGE_SIZE, IMAGE_SIZE, 3]
    assert [(output.name, output.shape) for output in outputs] == [("probabilities", ["batch", 3])]


def test_the_exports_are_public():
    import tfresnet.export

    assert tfresnet.export_litert is tfresnet.export.export_litert is litert.export_litert
    assert tfresnet.export_onnx is tfresnet.export.export_onnx is export_onnx


# === Multi-label ===


def test_a_multi_label_savedmodel_converts_with_its_thresholds_beside_the_file(multi_label_model, tmp_path):
    """The thresholds come from the SavedModel's tfresnet_config.json, or the argument; the
    file's interface stays `images` -> `probabilities` (the `predicted` output stays out)."""
    import json

    from tfresnet.export import export_saved_model

    model, data = multi_label_model
    images = np.concatenate([batch for batch, _ in data.validation.as_numpy_iterator()])
    saved = export_saved_model(
        model, str(tmp_path / "saved" / "1"), class_names=data.class_names, thresholds=[0.3, 0.6, 0.9]
    )
    path = export_onnx(saved, str(tmp_path / "tags.onnx"))
    with open(f"{path}.json") as file:
        settings = json.load(file)
    assert settings["multi_label"] is True and settings["thresholds"] == [0.3, 0.6, 0.9]
    runtime = load_runtime(path)
    assert runtime.multi_label and runtime.thresholds == [0.3, 0.6, 0.9]
    assert [output.name for output in runtime._session.get_outputs()] == ["probabilities"]
    assert [value.name for value in runtime._session.get_inputs()] == ["images"]
    np.testing.assert_allclose(runtime.probabilities(images), model.predict(images, verbose=0), atol=1e-4)

    other = export_onnx(saved, str(tmp_path / "other.onnx"), thresholds=[0.1, 0.2, 0.3])
    assert load_runtime(other).thresholds == [0.1, 0.2, 0.3]


def test_thresholds_for_a_single_label_savedmodel_are_refused(saved_model_dir, tmp_path):
    with pytest.raises(ValueError, match="this SavedModel is single-label"):
        export_onnx(saved_model_dir, str(tmp_path / "m.onnx"), thresholds=[0.5] * 3)
    assert os.listdir(tmp_path) == []
