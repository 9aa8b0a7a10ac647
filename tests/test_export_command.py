"""The command `python -m tfresnet.export`: a SavedModel to LiteRT int8 and ONNX, and bad input."""

import glob
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import copy_to_ram

from tfresnet.export import __main__ as command
from tfresnet.export import litert
from tfresnet.export.formats import compare
from tfresnet.export.kinds import FILE_FORMATS
from tfresnet.export.runtime import load_runtime
from tfresnet.paths import join, listdir, read_bytes

# === From the SavedModel folder, with the command ===


def test_int8_from_the_savedmodel_by_command_agrees_and_is_integer_inside(
    saved_model_dir, trained, held_out_images, keras_exports, tmp_path, capfd
):
    """Calibrated on the training folder, measured on the held-out folder."""
    path, folders = str(tmp_path / "model.tflite"), trained[2]
    argv = [saved_model_dir, "--format", "litert", "--quantize", "int8", "--output", path]
    argv += ["--calibration-data", folders["train"], "--eval-data", folders["held_out"]]
    assert command.main(argv) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == path and summary["format"] == "litert" and summary["quantization"] == "int8"
    assert summary["size_bytes"] == os.path.getsize(path)
    assert summary["size_bytes"] < 0.5 * keras_exports[1]["litert"]["size_bytes"]

    images, labels, expected = held_out_images
    assert summary["eval_images"] == len(labels)
    assert summary["saved_model_accuracy"] == pytest.approx(float(np.mean(expected.argmax(1) == labels)))
    runtime = load_runtime(path)
    probabilities = runtime.probabilities(images)
    assert summary["agreement"] == pytest.approx(compare(expected, probabilities)["agreement"])
    assert summary["agreement"] >= 0.9
    assert summary["accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(1) == labels)))

    interpreter = runtime._interpreter
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # the interface stays float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) == 4]
    convolutions = [
        layer for layer in trained[0].get_layer("backbone").layers if isinstance(layer, keras.layers.Conv2D)
    ]
    assert len(weights) >= len(convolutions) == 17  # the convolutions' kernels are int8
    assert {"QUANTIZE", "DEQUANTIZE"} <= runtime.op_names()
    with open(f"{path}.labels.txt") as file:
        assert file.read().splitlines() == trained[1]


@pytest.mark.slow
def test_onnx_from_the_savedmodel_by_the_command_as_users_run_it(
    saved_model_dir, trained, held_out_images, tmp_path
):
    """A fresh process, with TensorFlow's logging left at its default: only the JSON line shows."""
    path = str(tmp_path / "model.onnx")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfresnet.export",
            saved_model_dir,
            "--format",
            "onnx",
            "--output",
            path,
            "--eval-data",
            trained[2]["held_out"],
        ],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr == ""
    (line,) = completed.stdout.splitlines()
    summary = json.loads(line)
    assert summary["agreement"] == 1.0 and summary["max_abs_difference"] <= 1e-4
    assert summary["accuracy"] == summary["saved_model_accuracy"]
    images, _, expected = held_out_images
    np.testing.assert_allclose(load_runtime(path).probabilities(images), expected, atol=1e-4)


def test_a_savedmodel_on_a_store_converts_to_a_file_on_the_store_measured_on_images_there(
    saved_model_dir, trained, held_out_images, ram_dir, capfd
):
    """Every path on TensorFlow's in-memory file system, read and written through tf.io.gfile."""
    source = copy_to_ram(saved_model_dir, join(ram_dir, "saved", "1"))
    evaluation = copy_to_ram(trained[2]["held_out"], join(ram_dir, "held_out"))
    output = join(ram_dir, "files", "model.onnx")
    argv = [source, "--format", "onnx", "--output", output, "--eval-data", evaluation]
    assert command.main(argv) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == output and summary["size_bytes"] == len(read_bytes(output))
    images, labels, expected = held_out_images
    assert summary["eval_images"] == len(labels) and summary["agreement"] == 1.0
    assert summary["accuracy"] == summary["saved_model_accuracy"]
    assert listdir(join(ram_dir, "files")) == ["model.onnx", "model.onnx.json", "model.onnx.labels.txt"]
    np.testing.assert_allclose(load_runtime(output).probabilities(images), expected, atol=1e-4)


# === Bad input ===


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "litert", "--quantize", "int8"], "--quantize int8 needs --calibration-data"),
        (["--format", "onnx", "--quantize", "dynamic"], "--quantize dynamic applies to --format litert"),
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        (["--format", "onnx", "--missing"], "Model not found"),
        (["--format", "onnx", "--output-suffix", ".tflite"], "--output must end with .onnx"),
        (["--format", "onnx", "--eval-data", "wrong-classes"], "has classes the model does not know"),
        (["--format", "onnx", "--no-variables"], "has no variables/ (its weights)"),
        (["--format", "litert", "--cut-variables"], "files are damaged or incomplete"),
    ],
)
def test_command_bad_input_exits_2_with_one_line_and_writes_nothing(
    saved_model_dir, make_image_folder, tmp_path, capfd, flags, message
):
    model, output = saved_model_dir, str(tmp_path / "out" / "model.onnx")
    if "--missing" in flags:
        flags, model = flags[:-1], str(tmp_path / "absent")
    if flags[-1] in ("--no-variables", "--cut-variables"):
        damage, flags, model = flags[-1], flags[:-1], str(tmp_path / "damaged")
        shutil.copytree(saved_model_dir, model)
        if damage == "--no-variables":
            shutil.rmtree(os.path.join(model, "variables"))
        else:
            (data,) = glob.glob(os.path.join(model, "variables", "variables.data-*"))
            os.truncate(data, os.path.getsize(data) // 2)
        output = output.replace(".onnx", FILE_FORMATS[flags[1]].suffix)
    if "--output-suffix" in flags:
        flags, output = flags[:-2], str(tmp_path / "out" / "model.tflite")
    if "wrong-classes" in flags:
        flags = [*flags[:-1], make_image_folder(num_classes=2, images_per_class=2)]
        os.rename(os.path.join(flags[-1], "green"), os.path.join(flags[-1], "purple"))
    try:
        code = command.main([model, *flags, "--output", output])
    except SystemExit as exit:  # argparse
        code = exit.code
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not os.path.exists(output) and not os.path.exists(f"{output}.labels.txt")


def test_a_model_the_converter_refuses_is_said_in_one_line(saved_model_dir, tmp_path, capfd, monkeypatch):
    reason = "<unknown>:0: error: 'tf.Foo' op is neither a custom op nor a flex op"

    def refuse(*args, **kwargs):
        raise RuntimeError(f"Conversion failed.\n{reason}\nnote: see the MLIR dump")

    monkeypatch.setattr(litert, "export_litert", refuse)
    output = str(tmp_path / "model.tflite")
    code = command.main([saved_model_dir, "--format", "litert", "--output", output])
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and line.endswith(f"to litert: {reason}")
    assert os.listdir(tmp_path) == []


# === Multi-label ===


def test_a_multi_label_savedmodel_converts_and_is_measured_on_a_labels_csv(
    multi_label_model, tmp_path, capfd
):
    """The file carries the SavedModel's thresholds; `--eval-data` takes a multi-label CSV (its
    labels separated by `--label-delimiter`) and the figures are those of label sets."""
    from conftest import write_multi_label_csv
    from sklearn.metrics import f1_score

    from tfresnet.data.label_sets import split_labels
    from tfresnet.export import export_saved_model
    from tfresnet.export.predictor import load_predictor

    model, data = multi_label_model
    saved = export_saved_model(
        model, str(tmp_path / "saved" / "1"), class_names=data.class_names, thresholds=[0.7, 0.3, 0.4]
    )
    labels_csv = write_multi_label_csv(str(tmp_path / "eval"), delimiter=";")
    path = str(tmp_path / "tags.onnx")
    argv = [saved, "--format", "onnx", "--output", path, "--eval-data", labels_csv]
    assert command.main(argv) == 2  # the cells are not separated by the default space
    assert "pass label_delimiter=';'" in capfd.readouterr().err and not os.path.exists(path)

    assert command.main([*argv, "--label-delimiter", ";"]) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert summary["eval_images"] == 48
    assert summary["agreement"] == 1.0 and summary["max_abs_difference"] <= 1e-4
    assert "accuracy" not in summary and summary["f1_micro"] == summary["saved_model_f1_micro"]
    with open(labels_csv) as file:
        lines = [line.rstrip("\n").split(",") for line in file][1:]
    rows = load_predictor(saved).predict([os.path.join(tmp_path, "eval", name) for name, _ in lines])
    names = data.class_names
    truth = [[name in split_labels(cell, ";") for name in names] for _, cell in lines]
    predicted = [[name in row["labels"] for name in names] for row in rows]
    assert summary["f1_micro"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    with open(f"{path}.json") as file:
        assert json.load(file)["thresholds"] == [0.7, 0.3, 0.4]


def test_eval_data_from_a_folder_or_a_csv_is_labelled_with_the_models_indices(tmp_path):
    """A labels CSV reads as its folder does; a multi-label model gets multi-hot rows over its
    own labels, from a CSV of label sets or from class sub-folders (one label an image)."""
    from types import SimpleNamespace

    from conftest import folder_rows, write_image_folder, write_labels_csv, write_multi_label_csv

    folder = str(tmp_path / "folder")
    assert write_image_folder(folder, num_classes=2, images_per_class=3, size=40) == ["green", "red"]
    rows = [(os.path.join(folder, path), label) for path, label in folder_rows(folder)]
    labels_csv = write_labels_csv(tmp_path / "labels.csv", rows)
    model_names = ["purple", "red", "blue", "green"]  # the data's classes, in another order

    def batches(path, multi_label, delimiter=" "):
        reference = SimpleNamespace(
            image_size=32, crop_fraction=0.875, class_names=model_names, multi_label=multi_label
        )
        pairs = list(command._evaluation_data(path, reference, delimiter).as_numpy_iterator())
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    images, indices = batches(folder, False)
    expected = [model_names.index(label) for _, label in rows]
    np.testing.assert_array_equal(indices, expected)
    csv_images, csv_indices = batches(labels_csv, False)
    np.testing.assert_array_equal(csv_images, images)
    np.testing.assert_array_equal(csv_indices, expected)
    _, one_hot = batches(folder, True)
    np.testing.assert_array_equal(one_hot, np.eye(len(model_names))[expected])

    tags_csv = write_multi_label_csv(str(tmp_path / "tags"), delimiter=";")
    model_names = ["red", "sky", "blue", "green"]
    _, multi_hot = batches(tags_csv, True, ";")
    with open(tags_csv) as file:
        cells = [line.rstrip("\n").split(",")[1] for line in file][1:]
    wanted = [[float(name in cell.split(";")) for name in model_names] for cell in cells]
    np.testing.assert_array_equal(multi_hot, wanted)
    assert multi_hot[:, 1].sum() == 0 and multi_hot.sum(axis=1).max() >= 2
