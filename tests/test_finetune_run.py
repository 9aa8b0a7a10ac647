"""Tests of tfresnet.cli.finetune_run: bad input found before any training, in one line, exit code 2."""

import contextlib

import pytest
from test_finetune import QUICK

from tfresnet import training
from tfresnet.cli import finetune_run
from tfresnet.cli.finetune_flags import build_parser
from tfresnet.models.backbones import BACKBONES


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "Image folder not found: '{missing}'"),
        (["--calibrate", "--val-split", "0"], "--calibrate fits a temperature on the validation set"),
    ],
    ids=["missing-folder", "calibrate-without-validation"],
)
def test_bad_input_returns_exit_code_2_with_one_line_before_any_training(
    flags, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(training, "fine_tune", lambda *args, **kwargs: pytest.fail("trained"))
    missing, output = tmp_path / "missing", tmp_path / "out"
    tiny = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32"]
    args = build_parser().parse_args(["--data-dir", str(missing), *tiny, "--output-dir", str(output), *flags])
    with contextlib.ExitStack() as held:
        code = finetune_run.run(args, held)
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2
    assert line.startswith("python -m tfresnet.finetune: error: ")
    assert message.format(missing=missing) in line
    assert not output.exists()


# === Multi-label ===

TINY = QUICK  # the tiny backbone, 32 px, batches of 8, seed 0


def _write_csv(path, labels) -> str:
    import csv

    import numpy as np
    from PIL import Image

    for i in range(len(labels)):
        Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(path.parent / f"{i}.png")
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(
            [("path", "label"), *((f"{i}.png", label) for i, label in enumerate(labels))]
        )
    return str(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("folder", "--multi-label reads each image's labels from a CSV's label column"),
        ("empty-column", "is empty on every line"),
        ("no-delimiter", "lists two labels separated by ' '"),
        ("other-delimiter", "pass label_delimiter=';'"),
        ("delimiter-alone", "--label-delimiter separates the labels of --multi-label"),
        ("calibrate", "--calibrate fits one softmax temperature"),
    ],
)
def test_bad_multi_label_input_returns_exit_code_2_with_one_line(
    case, message, tmp_path, monkeypatch, capsys
):
    from conftest import write_image_folder, write_multi_label_csv

    monkeypatch.setattr(training, "fine_tune", lambda *args, **kwargs: pytest.fail("trained"))
    folder = tmp_path / "folder"
    write_image_folder(str(folder), num_classes=2, images_per_class=3, size=32)
    tags = write_multi_label_csv(str(tmp_path / "tags"))
    flags = {
        "folder": ["--data-dir", str(folder), "--multi-label"],
        "empty-column": ["--csv", _write_csv(tmp_path / "empty.csv", ["", "", ""]), "--multi-label"],
        "no-delimiter": ["--csv", _write_csv(tmp_path / "single.csv", ["a", "b", "a"]), "--multi-label"],
        "other-delimiter": ["--csv", _write_csv(tmp_path / "semi.csv", ["a;b", "b", ""]), "--multi-label"],
        "delimiter-alone": ["--csv", tags, "--label-delimiter", ";"],
        "calibrate": ["--csv", tags, "--multi-label", "--calibrate"],
    }[case]
    output = tmp_path / "out"
    args = build_parser().parse_args([*flags, *TINY, "--output-dir", str(output), "--no-check"])
    with contextlib.ExitStack() as held:
        code = finetune_run.run(args, held)
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and line.startswith("python -m tfresnet.finetune: error: ")
    assert message in line
    assert not output.exists()


@pytest.mark.slow
def test_a_multi_label_run_from_a_csv_exports_its_thresholds_and_predicts_label_sets(tmp_path, capsys):
    """Train with the command, predict with the command in another process, serve the export here."""
    import csv
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    import tensorflow as tf
    from conftest import MULTI_LABEL_NAMES, exit_code, write_multi_label_csv

    from tfresnet.finetune import main

    tags = write_multi_label_csv(str(tmp_path / "tags"))
    output = tmp_path / "run"
    all_layers = str(BACKBONES["resnet-test"].num_layers)  # the backbone stays frozen
    learn = ["--augmentation", "none", "--head-epochs", "8", "--epochs", "1", "--freeze-until", all_layers]
    argv = ["--csv", tags, "--multi-label", *TINY, *learn, "--learning-rate", "3e-2", "--val-split", "0.25"]
    assert exit_code(main, [*argv, "--output-dir", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((output / "report.json").read_text())
    assert summary["mean_average_precision"] == pytest.approx(report["mean_average_precision"])
    assert summary["mean_average_precision"] > 0.7 and "accuracy" not in summary
    config = json.loads((output / "config.json").read_text())
    thresholds = config["thresholds"]
    assert config["multi_label"] is True and len(thresholds) == len(MULTI_LABEL_NAMES)
    assert [report["per_label"][name]["threshold"] for name in MULTI_LABEL_NAMES] == pytest.approx(thresholds)

    export_dir = output / "saved_model" / "1"
    assert json.loads((export_dir / "tfresnet_config.json").read_text())["thresholds"] == thresholds
    images = sorted(str(path) for path in (tmp_path / "tags" / "images").iterdir())[:12]
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    outputs = served(image_bytes=tf.constant([open(path, "rb").read() for path in images]))
    probabilities, predicted = outputs["probabilities"].numpy(), outputs["predicted"].numpy()
    np.testing.assert_array_equal(predicted, probabilities >= np.array(thresholds, np.float32))

    predictions = tmp_path / "predictions.csv"
    run = subprocess.run(
        [sys.executable, "-m", "tfresnet.predict", str(export_dir), *images, "--output", str(predictions)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(predictions, newline="") as file:
        rows = {row["path"]: row for row in csv.DictReader(file)}
    for path, row in zip(images, predicted):
        names = [name for name, on in zip(MULTI_LABEL_NAMES, row) if on]
        assert rows[path]["labels"].split(" ") == names if names else rows[path]["labels"] == ""
        assert os.path.exists(path)
