"""Tests of tfresnet.export.onnx_export: the Keras model's probabilities and the SavedModel's interface."""

import os

import numpy as np
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
