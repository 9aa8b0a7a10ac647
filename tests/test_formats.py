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


# === Multi-label: label sets after the thresholds ===


def test_compare_measures_a_multi_label_models_label_sets_and_micro_f1():
    from sklearn.metrics import f1_score

    from tfresnet.export.formats import compare

    rng = np.random.default_rng(0)
    reference = rng.uniform(size=(50, 4))
    converted = np.clip(reference + rng.normal(0, 0.05, reference.shape), 0, 1)
    labels = (rng.uniform(size=(50, 4)) < 0.4).astype(np.float32)
    thresholds = [0.3, 0.5, 0.6, 0.8]
    figures = compare(reference, converted, labels, thresholds=thresholds)
    assert set(figures) == {"agreement", "max_abs_difference", "f1_micro", "reference_f1_micro"}
    predicted, expected = converted >= thresholds, reference >= thresholds
    assert figures["agreement"] == pytest.approx(np.mean((predicted == expected).all(axis=1)))
    assert 0 < figures["agreement"] < 1
    assert figures["max_abs_difference"] == pytest.approx(np.abs(converted - reference).max())
    assert figures["f1_micro"] == pytest.approx(f1_score(labels, predicted, average="micro"))
    assert figures["reference_f1_micro"] == pytest.approx(f1_score(labels, expected, average="micro"))
    assert compare(reference, converted, thresholds=thresholds).keys() == {"agreement", "max_abs_difference"}


def test_export_formats_measures_a_multi_label_model_on_its_multi_hot_labels(multi_label_model, tmp_path):
    """The validation labels stay multi-hot rows (never argmaxed), the thresholds decide the
    labels and travel beside the file."""
    import json

    from sklearn.metrics import f1_score

    from tfresnet.export.formats import export_formats

    model, data = multi_label_model
    thresholds = [0.7, 0.3, 0.4]
    figures = export_formats(
        model,
        str(tmp_path),
        ["saved_model", "litert"],
        validation=data.validation,
        class_names=data.class_names,
        thresholds=thresholds,
    )
    entry = figures["litert"]
    assert set(entry) == {
        "path",
        "format",
        "quantization",
        "size_bytes",
        "agreement",
        "max_abs_difference",
        "f1_micro",
        "reference_f1_micro",
    }
    batches = list(data.validation.as_numpy_iterator())
    images, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    assert labels.sum(axis=1).max() >= 2  # rows of several labels: an argmax would lose them
    predicted = model.predict(images, verbose=0) >= np.float32(thresholds)
    assert entry["reference_f1_micro"] == pytest.approx(f1_score(labels, predicted, average="micro"))
    assert entry["f1_micro"] == pytest.approx(entry["reference_f1_micro"])
    assert entry["agreement"] == 1.0 and entry["max_abs_difference"] <= 1e-4
    with open(os.path.join(tmp_path, "model.tflite.json")) as file:
        assert json.load(file)["thresholds"] == thresholds


def test_thresholds_for_a_single_label_model_are_refused_before_any_export(trained, tmp_path):
    from tfresnet.export.formats import export_formats

    model, class_names, _, _ = trained
    with pytest.raises(ValueError, match="thresholds apply to a multi-label classifier"):
        export_formats(model, str(tmp_path), ["onnx"], class_names=class_names, thresholds=[0.5] * 3)
    assert os.listdir(tmp_path) == []
