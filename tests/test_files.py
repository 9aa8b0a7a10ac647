"""Tests of tfresnet.files: atomic writes of JSON and other files, and the modes the umask gives them."""

import json
import os

import keras
import pytest

from tfresnet.files import read_json, write_atomically, write_json

# === write_atomically ===


def test_write_atomically_replaces_the_file(tmp_path):
    path = tmp_path / "notes.json"
    write_json(str(path), {"epoch": 1})
    write_json(str(path), {"epoch": 2})
    assert read_json(str(path)) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["notes.json"]
    assert read_json(str(tmp_path / "missing.json")) is None


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "best.json"
    path.write_text('{"value": 0.5}')

    def fail_halfway(temporary):
        with open(temporary, "w") as file:
            file.write('{"val')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(path), fail_halfway)
    assert json.loads(path.read_text()) == {"value": 0.5}
    assert os.listdir(tmp_path) == ["best.json"]


# === Modes ===


def test_files_and_exports_follow_the_umask_not_mkstemps_owner_only_modes(tmp_path):
    """Checkpoints, JSON files and the SavedModel get what `open()` and `mkdir` would give."""
    from tfresnet.export import export_saved_model
    from tfresnet.files import save_weights_atomically, write_json

    model = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    previous = os.umask(0o027)
    try:
        write_json(str(tmp_path / "best.json"), {"value": 1})
        save_weights_atomically(model, str(tmp_path / "best.weights.h5"))
        export_saved_model(model, str(tmp_path / "saved_model" / "1"), class_names=["a", "b"])
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "best.json").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "best.weights.h5").st_mode & 0o777 == 0o640
    export = tmp_path / "saved_model" / "1"
    assert os.stat(export).st_mode & 0o777 == 0o750
    for path in [export / "saved_model.pb", export / "labels.txt", *export.glob("variables/*")]:
        assert os.stat(path).st_mode & 0o777 == 0o640, path
    assert os.stat(export / "variables").st_mode & 0o777 == 0o750
