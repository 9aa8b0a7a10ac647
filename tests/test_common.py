"""Tests of tfresnet.export.common: each exported file's class names, written after the model."""

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

    common.write_model_and_labels(str(tmp_path / "a.tflite"), content, ["x", "y", "z"])
    common.write_model_and_labels(str(tmp_path / "b.tflite"), content, ["p", "q", "r"])
    assert load_runtime(tmp_path / "a.tflite").class_names == ["x", "y", "z"]
    assert load_runtime(tmp_path / "b.tflite").class_names == ["p", "q", "r"]

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
        common.write_model_and_labels(str(tmp_path / "a.tflite"), content, ["new1", "new2", "new3"])
    assert written == [str(tmp_path / "a.tflite")]
    with pytest.raises(FileNotFoundError, match=r"a\.tflite\.labels\.txt"):
        load_runtime(tmp_path / "a.tflite")
