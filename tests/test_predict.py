"""The command `python -m tfresnet.predict`: the predictor's rows from a SavedModel, a LiteRT and
an ONNX file, in CSV or JSON lines, with the reason of each unreadable file, and bad input."""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import EXPORTED_KINDS as KINDS
from conftest import copy_to_ram

import tfresnet
from tfresnet import predict
from tfresnet.export import predictor as predictor_module
from tfresnet.paths import copy_file, join, open_file


def _read_csv(path):
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def _folder_label(path):
    return os.path.basename(os.path.dirname(path))


# === The command ===


@pytest.mark.parametrize("kind", KINDS)
def test_command_rows_equal_the_predictors_and_name_unreadable_files(exported, kind, tmp_path):
    paths, _, images, bad = exported
    output = tmp_path / "predictions.csv"
    code = predict.main([paths[kind], images, "--top-k", "2", "--batch-size", "5", "--output", str(output)])
    assert code == 0

    columns, rows = _read_csv(output)
    assert columns == ["path", "label", "score", "label_2", "score_2", "error"]
    assert len(rows) == 12 + 3
    by_path = {row["path"]: row for row in rows}
    for path in bad:
        assert by_path[path]["error"] and by_path[path]["label"] == "" and by_path[path]["score"] == ""
    assert by_path[bad[0]]["error"] == "empty file"
    good = [row for row in rows if not row["error"]]
    assert len(good) == 12
    assert all(row["label"] == _folder_label(row["path"]) for row in good)
    assert all(
        row["label_2"] != row["label"] and float(row["score_2"]) <= float(row["score"]) for row in good
    )

    expected = predictor_module.load_predictor(paths[kind]).predict([images], top_k=2)
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    for row, wanted in zip(rows, expected):
        assert (row["label"], row["label_2"]) == (wanted["label"] or "", wanted["label_2"] or "")
        assert row["error"] == (wanted["error"] or "")
        if wanted["score"] is not None:
            assert float(row["score"]) == pytest.approx(wanted["score"], abs=1e-6)


def test_json_lines_hold_the_predictors_rows(exported, tmp_path):
    paths, _, images, _ = exported
    output = tmp_path / "predictions.jsonl"
    assert predict.main([paths["litert"], os.path.join(images, "red"), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    expected = predictor_module.load_predictor(paths["litert"]).predict(os.path.join(images, "red"))
    assert [list(row) for row in rows] == [["path", "label", "score", "error"]] * len(rows)
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    for row, wanted in zip(rows, expected):
        assert row["label"] == wanted["label"] and row["error"] == wanted["error"]
        assert row["score"] == (None if wanted["score"] is None else pytest.approx(wanted["score"], abs=1e-6))
    assert sum(row["error"] is not None for row in rows) == 3


def test_csv_goes_to_stdout_without_output(exported, capfd):
    paths, _, images, _ = exported
    assert predict.main([paths["onnx"], os.path.join(images, "blue")]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == "path,label,score,error"
    assert len(lines) == 1 + 4 and all(line.split(",")[1] == "blue" for line in lines[1:])


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_and_images_on_a_store_give_the_local_rows_in_a_csv_on_the_store(
    exported, kind, tmp_path, ram_dir
):
    """The model, the image folder and the CSV on TensorFlow's in-memory file system."""
    paths, _, images, _ = exported
    if kind == "saved_model":
        model = copy_to_ram(paths[kind], join(ram_dir, "saved", "1"))
    else:  # the file, then its labels and settings beside it (in that order: ram:// takes a
        # file whose name starts another file's, model.onnx beside model.onnx.json, for a folder)
        model = join(ram_dir, os.path.basename(paths[kind]))
        for suffix in ("", ".labels.txt", ".json"):
            copy_file(paths[kind] + suffix, model + suffix)
    stored_images, output = copy_to_ram(images, join(ram_dir, "images")), join(ram_dir, "predictions.csv")
    assert predict.main([model, stored_images, "--top-k", "2", "--output", output]) == 0
    assert predict.main([paths[kind], images, "--top-k", "2", "--output", str(tmp_path / "local.csv")]) == 0

    with open_file(output, newline="") as file:
        rows = list(csv.DictReader(file))
    _, expected = _read_csv(tmp_path / "local.csv")
    assert len(rows) == 12 + 3 and sum(bool(row["error"]) for row in rows) == 3
    assert [row["path"] for row in rows] == [
        join(stored_images, os.path.relpath(row["path"], images)) for row in expected
    ]
    for row, wanted in zip(rows, expected):
        assert [row[key] for key in ("label", "label_2", "error")] == [
            wanted[key] for key in ("label", "label_2", "error")
        ]
        if wanted["score"]:
            assert float(row["score"]) == pytest.approx(float(wanted["score"]), abs=1e-6)


# === Bad input ===


def _bad_run(argv, capfd):
    code = predict.main(argv)
    err = capfd.readouterr().err
    return code, err.strip().splitlines()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing model", "Model not found"),
        ("unknown format", "Unknown model format .txt"),
        ("no images", "No images found"),
        ("top-k above the classes", "top_k must be an integer from 1 to 3"),
        ("no labels", "No model.onnx.labels.txt at"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(exported, tmp_path, capfd, case, message):
    paths, _, images, _ = exported
    model, targets, extra = paths["onnx"], [images], []
    if case == "missing model":
        model = str(tmp_path / "absent.tflite")
    elif case == "unknown format":
        model = str(tmp_path / "model.txt")
        (tmp_path / "model.txt").write_text("not a model")
    elif case == "no images":
        (tmp_path / "empty").mkdir()
        targets = [str(tmp_path / "empty")]
    elif case == "top-k above the classes":
        extra = ["--top-k", "4"]
    else:
        model = str(tmp_path / "model.onnx")
        with open(paths["onnx"], "rb") as source, open(model, "wb") as copy:
            copy.write(source.read())
    output = tmp_path / "out.csv"
    code, lines = _bad_run([model, *targets, *extra, "--output", str(output)], capfd)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not output.exists()


def test_no_readable_image_exits_2_after_writing_the_reasons(exported, tmp_path, capfd):
    paths, _, _, bad = exported
    output = tmp_path / "out.csv"
    code, lines = _bad_run([paths["litert"], *bad, "--output", str(output)], capfd)
    assert code == 2 and len(lines) == 1 and "None of the 3 images could be read" in lines[0]
    _, rows = _read_csv(output)
    assert [row["path"] for row in rows] == bad and all(row["error"] for row in rows)


# === The way a user runs it ===


def test_the_command_keeps_the_terminal_clean(exported, tmp_path):
    paths, _, images, _ = exported
    completed = subprocess.run(
        [sys.executable, "-m", "tfresnet.predict", paths["litert"], os.path.join(images, "blue")],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr == ""
    assert completed.stdout.splitlines()[0] == "path,label,score,error"
    assert len(completed.stdout.splitlines()) == 5


def test_an_image_bomb_is_refused_undecoded_with_one_line(exported, png_bomb, tmp_path, capfd):
    paths, _, _, _ = exported
    output = tmp_path / "out.csv"
    code, lines = _bad_run([paths["saved_model"], png_bomb, "--output", str(output)], capfd)
    assert code == 2 and len(lines) == 1 and "None of the 1 images could be read" in lines[0]
    _, rows = _read_csv(output)
    assert rows[0]["error"] == "image of 400000000 pixels is over the limit of 89478485 pixels"


def test_max_image_pixels_moves_the_cap(exported, tmp_path, capfd):
    paths, _, images, _ = exported
    image = os.path.join(images, "blue", sorted(os.listdir(os.path.join(images, "blue")))[0])
    reason = "image of 1600 pixels is over the limit of 1599 pixels"
    row = tfresnet.load_predictor(paths["litert"], max_image_pixels=1599).predict(image)[0]
    assert row["error"] == reason and row["label"] is None
    assert tfresnet.load_predictor(paths["litert"], max_image_pixels=1600).predict(image)[0]["error"] is None
    output = tmp_path / "out.csv"
    argv = [paths["onnx"], image, "--max-image-pixels", "1599", "--output", str(output)]
    code, lines = _bad_run(argv, capfd)
    assert code == 2 and len(lines) == 1
    assert _read_csv(output)[1][0]["error"] == reason
    with pytest.raises(ValueError, match="max_image_pixels must be a positive integer"):
        tfresnet.load_predictor(paths["litert"], max_image_pixels=0)


@pytest.mark.parametrize(
    "damage, message", [("no variables", "has no variables/"), ("cut", "damaged or incomplete")]
)
def test_a_damaged_saved_model_is_one_line(exported, tmp_path, capfd, damage, message):
    paths, _, images, _ = exported
    model = str(tmp_path / "damaged")
    shutil.copytree(paths["saved_model"], model)
    if damage == "no variables":
        shutil.rmtree(os.path.join(model, "variables"))
    else:
        (data,) = glob.glob(os.path.join(model, "variables", "variables.data-*"))
        os.truncate(data, os.path.getsize(data) // 2)
    code, lines = _bad_run([model, images], capfd)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines


# === Multi-label: the labels over their thresholds, joined ===

MULTI_LABEL_THRESHOLDS = [0.7, 0.3, 0.4]


@pytest.fixture(scope="module")
def multi_label_saved_model(multi_label_model, tmp_path_factory):
    """`(SavedModel folder, folder of 16 PNGs)` of the multi-label classifier."""
    import numpy as np
    from PIL import Image

    from tfresnet.export import export_saved_model

    model, data = multi_label_model
    root = tmp_path_factory.mktemp("multi_label_predict")
    saved = export_saved_model(
        model, str(root / "saved" / "1"), class_names=data.class_names, thresholds=MULTI_LABEL_THRESHOLDS
    )
    os.makedirs(root / "images")
    images = np.concatenate([batch for batch, _ in data.train_evaluation.as_numpy_iterator()])[:16]
    for index, image in enumerate(images):
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{index:02d}.png")
    return saved, str(root / "images")


@pytest.mark.parametrize("delimiter", [None, ";"])
def test_a_multi_label_model_writes_its_labels_and_scores_joined_by_the_delimiter(
    multi_label_saved_model, tmp_path, delimiter
):
    model, images = multi_label_saved_model
    output = tmp_path / "tags.csv"
    flags = [] if delimiter is None else ["--label-delimiter", delimiter]
    assert predict.main([model, images, "--top-k", "2", *flags, "--output", str(output)]) == 0

    columns, rows = _read_csv(output)
    assert columns == ["path", "labels", "scores", "error"]
    expected = predictor_module.load_predictor(model).predict([images])
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    joiner = delimiter or " "
    for row, wanted in zip(rows, expected):
        assert row["labels"] == joiner.join(wanted["labels"]) and row["error"] == ""
        scores = [float(score) for score in row["scores"].split(joiner)] if row["scores"] else []
        assert scores == pytest.approx(wanted["scores"], abs=1e-6)
    sizes = [len(row["labels"]) for row in expected]
    assert max(sizes) >= 2 and min(sizes) == 0  # joined labels, and an image with none: empty cells
    assert f"green{joiner}red" in [row["labels"] for row in rows]


def test_a_multi_label_models_json_lines_hold_lists(multi_label_saved_model, tmp_path):
    model, images = multi_label_saved_model
    output = tmp_path / "tags.jsonl"
    assert predict.main([model, images, "--label-delimiter", ";", "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    expected = predictor_module.load_predictor(model).predict([images])
    assert [list(row) for row in rows] == [["path", "labels", "scores", "error"]] * len(expected)
    assert [row["labels"] for row in rows] == [row["labels"] for row in expected]
    assert any(len(row["labels"]) >= 2 for row in rows)


@pytest.mark.parametrize(
    "delimiter, message",
    [("", "--label-delimiter must not be empty"), ("e", "--label-delimiter 'e' occurs in the label 'blue'")],
)
def test_a_delimiter_that_cannot_separate_the_labels_exits_2(
    multi_label_saved_model, tmp_path, capfd, delimiter, message
):
    model, images = multi_label_saved_model
    output = tmp_path / "tags.csv"
    code, lines = _bad_run([model, images, "--label-delimiter", delimiter, "--output", str(output)], capfd)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not output.exists()
