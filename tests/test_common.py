"""Tests of tfresnet.export.common: each exported file's class names and settings, written after
the model."""

import os

import pytest

from tfresnet.export.runtime import load_runtime


def test_two_files_in_one_folder_keep_their_own_names_written_after_the_model(
    keras_exports, trained, tmp_path, monkeypatch
):
    """Two exports in one folder never share names, and a kill between the model and its names
    leaves a model without names (said on loading), never old names beside a new model."""
    output_dir, _ = keras_exports
    with open(os.path.join(output_dir, "model.tflite"), "rb") as file:
        content = file.read()
    from tfresnet import files
    from tfresnet.export import common

    model = trained[0]
    common.write_model_and_labels(
        str(tmp_path / "a.tflite"), content, common.Source(model, ["x", "y", "z"], 32)
    )
    common.write_model_and_labels(
        str(tmp_path / "b.tflite"), content, common.Source(model, ["p", "q", "r"], 32, crop_fraction=0.95)
    )
    assert load_runtime(tmp_path / "a.tflite").class_names == ["x", "y", "z"]
    assert load_runtime(tmp_path / "b.tflite").class_names == ["p", "q", "r"]
    assert load_runtime(tmp_path / "a.tflite").crop_fraction == 0.875
    assert load_runtime(tmp_path / "b.tflite").crop_fraction == 0.95

    written = []
    write_atomically = common.write_atomically

    def killed_after_the_model(path, write):
        if path.endswith(".labels.txt"):
            raise KeyboardInterrupt  # the kill, once the model is in place
        write_atomically(path, write)
        written.append(path)

    monkeypatch.setattr(common, "write_atomically", killed_after_the_model)  # the model
    monkeypatch.setattr(files, "write_atomically", killed_after_the_model)  # the labels (write_text)
    with pytest.raises(KeyboardInterrupt):
        common.write_model_and_labels(
            str(tmp_path / "a.tflite"), content, common.Source(model, ["n1", "n2", "n3"], 32)
        )
    assert written == [str(tmp_path / "a.tflite"), str(tmp_path / "a.tflite.json")]
    with pytest.raises(FileNotFoundError, match=r"a\.tflite\.labels\.txt"):
        load_runtime(tmp_path / "a.tflite")


def test_the_crop_travels_with_a_file_to_the_predictor(trained, tmp_path):
    """A file's evaluation crop is written beside it (a run's data's, or the SavedModel's it was
    converted from), and the predictor of the file decodes at it; a file exported before the
    crop was recorded is served at 0.875, as every export then was."""
    from tfresnet import export_onnx, export_saved_model, load_predictor

    model, class_names, folders, _ = trained
    saved = export_saved_model(
        model, str(tmp_path / "saved" / "1"), class_names=class_names, crop_fraction=0.95
    )
    from_saved_model = export_onnx(saved, str(tmp_path / "converted.onnx"))
    from_keras = export_onnx(model, str(tmp_path / "model.onnx"), class_names=class_names, crop_fraction=0.8)
    assert load_predictor(from_saved_model).crop_fraction == 0.95
    predictor = load_predictor(from_keras)
    assert predictor.crop_fraction == 0.8
    image = os.path.join(folders["held_out"], "red", "000.jpg")
    at_the_crop = load_predictor(saved, crop_fraction=0.8).predict([image])
    from_file = predictor.predict([image])
    assert at_the_crop[0]["label"] == from_file[0]["label"]
    assert at_the_crop[0]["score"] == pytest.approx(from_file[0]["score"], abs=1e-4)
    assert load_predictor(saved).predict([image])[0]["score"] != pytest.approx(
        from_file[0]["score"], abs=1e-4
    )
    os.remove(from_keras + ".json")
    assert load_predictor(from_keras).crop_fraction == 0.875


# === Multi-label: the thresholds beside a file ===


def test_a_multi_label_files_thresholds_are_written_beside_it_and_read_back(keras_exports, trained, tmp_path):
    """The settings say whether a file is multi-label and hold its thresholds; a file written
    before they were recorded reads as single-label."""
    import json

    from tfresnet.export import common

    output_dir, _ = keras_exports
    with open(os.path.join(output_dir, "model.tflite"), "rb") as file:
        content = file.read()
    model = trained[0]
    path = str(tmp_path / "tags.tflite")
    source = common.Source(model, ["x", "y", "z"], 32, thresholds=[0.2, 0.4, 0.65])
    assert source.multi_label
    common.write_model_and_labels(path, content, source)
    with open(common.settings_path(path)) as file:
        assert json.load(file) == {
            "crop_fraction": 0.875,
            "image_size": 32,
            "multi_label": True,
            "thresholds": [0.2, 0.4, 0.65],
        }
    runtime = load_runtime(path)
    assert runtime.multi_label and runtime.thresholds == [0.2, 0.4, 0.65]

    common.write_model_and_labels(path, content, common.Source(model, ["x", "y", "z"], 32))
    assert common.read_settings(path)["multi_label"] is False and load_runtime(path).thresholds is None
    with open(common.settings_path(path), "w") as file:
        json.dump({"crop_fraction": 0.9}, file)  # an older file's settings
    assert common.read_settings(path) == {"crop_fraction": 0.9, "multi_label": False, "thresholds": None}
    with open(common.settings_path(path), "w") as file:
        json.dump({"multi_label": True, "thresholds": [0.5, 1.5, 0.5]}, file)
    with pytest.raises(ValueError, match=r"tags\.tflite' record bad thresholds: thresholds must be 3"):
        load_runtime(path)


def test_settings_thresholds_default_to_one_half_for_a_multi_label_model():
    from tfresnet.export.common import settings_thresholds

    assert settings_thresholds({"multi_label": True, "thresholds": None}, 3) == [0.5, 0.5, 0.5]
    assert settings_thresholds({"multi_label": False, "thresholds": None}, 3) is None
    assert settings_thresholds({"multi_label": True, "thresholds": [1, 0]}, 2) == [1.0, 0.0]
    with pytest.raises(ValueError, match="record bad thresholds"):
        settings_thresholds({"multi_label": True, "thresholds": [0.5]}, 2)


def test_a_conversion_of_sigmoids_is_checked_for_probabilities_not_their_sum():
    import numpy as np

    from tfresnet.export.common import check_conversion

    sigmoids = np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.05]], np.float32)
    check_conversion(sigmoids, sigmoids + 1e-5, tolerance=1e-3, what="ONNX", multi_label=True)
    with pytest.raises(RuntimeError, match="do not sum to 1"):
        check_conversion(sigmoids, sigmoids, tolerance=1e-3, what="ONNX")
    with pytest.raises(RuntimeError, match=r"not in \[0, 1\]; nothing was written"):
        check_conversion(sigmoids, sigmoids * 2, tolerance=None, what="LiteRT int8", multi_label=True)
    with pytest.raises(RuntimeError, match="differs from the model by 0.1"):
        check_conversion(sigmoids, sigmoids + 0.1, tolerance=1e-3, what="ONNX", multi_label=True)
