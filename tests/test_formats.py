"""Tests of tfresnet.export.formats: exports measured against the model, requests checked beforehand."""

import os

import numpy as np
import pytest

from tfresnet.export.formats import check_export_request
from tfresnet.files import current_umask


def test_export_formats_reports_agreement_with_the_keras_model(keras_exports, held_out_images, trained):
    output_dir, figures = keras_exports
    _, labels, expected = held_out_images
    assert set(figures) == {"litert", "onnx"}
    keras_accuracy = float(np.mean(expected.argmax(1) == labels))
    assert keras_accuracy >= 0.9  # the model learned: agreement means something
    for format, name in (("litert", "model.tflite"), ("onnx", "model.onnx")):
        entry = figures[format]
        assert entry["path"] == os.path.join(output_dir, name)
        assert entry["size_bytes"] == os.path.getsize(entry["path"])
        assert entry["quantization"] == "none"
        assert entry["agreement"] == 1.0 and entry["max_abs_difference"] <= 1e-4
        assert entry["reference_accuracy"] == pytest.approx(keras_accuracy)
    for name in ("model.tflite", "model.onnx"):
        with open(os.path.join(output_dir, f"{name}.labels.txt")) as file:
            assert file.read().splitlines() == trained[1]
    assert not os.path.exists(os.path.join(output_dir, "labels.txt"))
    mode = 0o666 & ~current_umask()  # the umask's, not mkstemp's owner-only 0600
    for name in ("model.tflite", "model.onnx", "model.tflite.labels.txt", "model.onnx.labels.txt"):
        assert os.stat(os.path.join(output_dir, name)).st_mode & 0o777 == mode, name


@pytest.mark.parametrize(
    "formats, quantize, message",
    [
        (["saved_model", "tflite"], "none", r"Unknown export formats \['tflite'\]"),
        (["saved_model", "onnx"], "int8", "applies to the LiteRT export: add litert"),
        (["litert"], "int4", "quantize must be one of"),
    ],
)
def test_export_requests_are_checked_before_training(formats, quantize, message):
    with pytest.raises(ValueError, match=message):
        check_export_request(formats, quantize)
