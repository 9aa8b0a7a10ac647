"""The command `python -m tfresnet.finetune`: what it writes, how it fails, what it prints."""

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels, copy_to_ram, ram_files, write_image_folder

import tfresnet
from tfresnet import export, paths, training, tuning
from tfresnet.files import read_json
from tfresnet.finetune import build_parser, main
from tfresnet.insight import calibration, dataset_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = [
    "--backbone",
    "resnet-test",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--seed",
    "0",
]
# A random tiny backbone learns the colour-and-shape classes: its head 8 epochs at a high rate, then
# the whole network (frozen until layer 0) 4 epochs at a decaying one. Best validation accuracy
# 0.9-1.0 on every seed tried (0, 1, 2); 0.9-0.93 on a folder it never saw.
LEARN = [
    "--augmentation",
    "none",
    "--head-epochs",
    "8",
    "--epochs",
    "4",
    "--freeze-until",
    "0",
    "--learning-rate",
    "3e-2",
    "--fine-tune-learning-rate",
    "1e-2",
    "--patience",
    "0",
]
PROMISED_FILES = (
    "batch.png",
    "report.json",
    "confusion_matrix.png",
    "training_curves.png",
    "top_losses.png",
    "calibration.png",
    "gradcam.png",
    "report.html",
    "best.weights.h5",
    "log_head.csv",
    "log_fine_tune.csv",
    "config.json",
    "saved_model/1/saved_model.pb",
    "saved_model/1/labels.txt",
)


def _run_cli(*args, env=None):
    """The command as users run it: a fresh process, TensorFlow's logging left as it comes."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "tfresnet.finetune", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        cwd=ROOT,
    )


def _main(argv):
    """`main(argv)` in this process: `(exit code, stdout)`; a usage error's SystemExit is a code."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        try:
            code = main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
    return code, stdout.getvalue()


def _rows(path):
    with paths.open_file(path, newline="") as file:
        return list(csv.DictReader(file))


def _files_under(folder):
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


@pytest.fixture(scope="module")
def learnable_folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("learnable") / "images")
    write_image_folder(root, num_classes=3, images_per_class=20, size=40)
    return root


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """3 classes of 6 images: for the runs that check the plumbing, not the learning."""
    root = str(tmp_path_factory.mktemp("small") / "images")
    write_image_folder(root, num_classes=3, images_per_class=6, size=40)
    return root


@pytest.fixture(scope="module")
def trained_run(learnable_folder, tmp_path_factory):
    """One whole run of the command (both phases, report, export), shared by the tests that read it."""
    output = tmp_path_factory.mktemp("run") / "out"
    argv = ["--data-dir", learnable_folder, *QUICK, *LEARN, "--output-dir", str(output)]
    code, stdout = _main(argv)
    return code, stdout, output


# === A run ===


@pytest.mark.slow
def test_cli_learns_a_learnable_folder_and_writes_every_promised_file(trained_run):
    code, stdout, output = trained_run
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["evaluated_on"] == "validation"
    assert summary["accuracy"] >= 0.8
    assert summary["export_dir"] == str(output / "saved_model" / "1")
    assert summary["report_html"] == str(output / "report.html")
    missing = [name for name in PROMISED_FILES if not (output / name).is_file()]
    assert missing == []
    report = json.loads((output / "report.json").read_text())
    assert report["accuracy"] == summary["accuracy"]
    assert report["dataset"]["num_images"] == 60 and report["dataset"]["unreadable"] == {}
    assert report["grad_cam"] == {"available": True}
    assert 0 <= report["expected_calibration_error"] == summary["expected_calibration_error"] <= 1
    assert report["num_images"] == 12 == sum(map(sum, report["confusion_matrix"]))
    # Suspected label errors are named by their validation files (none planted here: few, wrong).
    suspects = report["suspected_label_errors"]
    assert all(os.path.isfile(item["path"]) and item["predicted"] != item["given"] for item in suspects)
    assert len(suspects) <= 12 - round(12 * report["accuracy"])
    assert len(_rows(output / "log_head.csv")) == 8
    assert len(_rows(output / "log_fine_tune.csv")) == 4
    assert json.loads((output / "config.json").read_text())["class_names"] == ["blue", "green", "red"]
    assert (output / "saved_model" / "1" / "labels.txt").read_text().split() == ["blue", "green", "red"]


# === A run folder on a store (ram://, TensorFlow's in-memory file system, through tf.io.gfile) ===

STORE_RUN = [*QUICK, "--augmentation", "none", "--head-epochs", "1", "--epochs", "2", "--no-check"]
STORE_RUN += ["--tune", "--tuner", "random", "--max-trials", "1", "--tune-epochs", "1"]


def _served_classes(export_dir: str) -> list[str]:
    """The class names the SavedModel in `export_dir` serves, and a check that it serves."""
    served = tf.saved_model.load(export_dir).signatures["serve_images"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probabilities = served(images=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    with paths.open_file(paths.join(export_dir, "labels.txt")) as file:
        return file.read().split()


def test_a_run_on_a_store_killed_in_its_fine_tuning_resumes_with_the_command(
    small_folder, ram_dir, epoch_backups, capsys
):
    output = paths.join(ram_dir, "run")
    argv = ["--data-dir", small_folder, *STORE_RUN, "--output-dir", output]
    epoch_backups.kill_after_the_first_fine_tuning_epoch()
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    at_kill = set(ram_files(output))
    assert {"run.json", "config.json", "batch.png", "log_head.csv", "backup/fine_tune/epoch.json"} <= at_kill
    assert {"tuning/search.json", "tuning/best_hyperparameters.json", "tuning/trial_0/trial.json"} <= at_kill
    assert "training_done.json" not in at_kill and "run.lock" not in at_kill  # a store has no lock

    epoch_backups.record()
    code, stdout = _main([*argv, "--resume"])
    assert code == 0
    assert epoch_backups.ended == [("fine_tune", 1)]  # neither the search nor the epochs before the kill
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["output_dir"] == output  # a URL as it is, not made a local path
    assert summary["export_dir"] == paths.join(output, "saved_model", "1")
    assert summary["report_html"] == paths.join(output, "report.html")
    written = ram_files(output)
    assert [name for name in PROMISED_FILES if name not in written] == []
    assert read_json(paths.join(output, "report.json"))["accuracy"] == summary["accuracy"]
    assert [row["epoch"] for row in _rows(paths.join(output, "log_fine_tune.csv"))] == ["0", "1"]
    assert _served_classes(summary["export_dir"]) == ["blue", "green", "red"]

    capsys.readouterr()
    assert _main([*argv, "--resume", "--ema"])[0] == 2  # found after the search chose the head
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert f"--resume: the run in {output!r} was started with ema off, now on" in line


@pytest.mark.slow
def test_the_gpu_defaults_with_a_colab_users_options_run_on_the_cpu_and_serve_float32(tmp_path, png_bomb):
    """What `"auto"` turns on with a GPU (float16, XLA), with the options a Colab user adds; an
    image bomb in the folder is unreadable for the check, for training and for predict, with one
    reason, and is never decoded."""
    folder = tmp_path / "images"
    write_image_folder(str(folder), num_classes=3, images_per_class=6, size=40)
    classes = sorted(os.listdir(folder))
    shutil.copy(png_bomb, folder / classes[0] / "bomb.png")
    gpu_defaults = ["--mixed-precision", "on", "--jit-compile", "on"]
    colab = ["--augmentation", "randaugment", "--mixup", "0.2", "--ema", "--tta"]
    colab += ["--export-formats", "saved_model,litert", "--head-epochs", "1", "--epochs", "1"]
    # 15 training images in 3 whole batches: XLA compiles each phase's step for one batch shape
    # (a last partial batch would compile it once more). Fine-tuned from conv5 on, XLA compiles
    # the gradients of the last stage only (the whole backbone's took a quarter longer to run).
    whole_batches = ["--batch-size", "5", "--freeze-until", "conv5"]
    output = tmp_path / "out"

    folders = ["--data-dir", str(folder), "--output-dir", str(output)]
    code, stdout = _main([*QUICK, *gpu_defaults, *colab, *whole_batches, *folders])

    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    reason = "image of 400000000 pixels is over the limit of 89478485 pixels"
    assert summary["skipped_files"] == 1
    report = json.loads((output / "report.json").read_text())
    assert report["dataset"]["unreadable"] == {os.path.join(classes[0], "bomb.png"): reason}
    assert report["dataset"]["num_images"] == 18
    config = json.loads((output / "config.json").read_text())
    assert (config["mixed_precision"], config["jit_compile"]) == (True, True)
    images = [str(folder / name / sorted(os.listdir(folder / name))[0]) for name in classes]
    served = tf.saved_model.load(summary["export_dir"])
    encoded = tf.constant([open(path, "rb").read() for path in images])
    probabilities = served.signatures["serving_default"](image_bytes=encoded)["probabilities"]
    assert probabilities.dtype == tf.float32 and probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)
    predictor = tfresnet.load_predictor(summary["exports"]["litert"])
    rows = {row["path"]: row for row in predictor.predict([str(folder)])}
    assert len(rows) == 19 and rows[str(folder / classes[0] / "bomb.png")]["error"] == reason
    assert [path for path, row in rows.items() if row["error"]] == [str(folder / classes[0] / "bomb.png")]
    pixels = np.stack([tfresnet.decode_for_eval(tf.io.read_file(path), 32) for path in images])
    served_pixels = predictor.probabilities(pixels)
    assert served_pixels.dtype == np.float32
    np.testing.assert_allclose(served_pixels.sum(axis=1), 1.0, rtol=1e-5)


def _write_csv(folder, path) -> None:
    """A CSV of a class folder's images (paths relative to the folder), with a header row."""
    rows = [
        f"{name}/{file},{name}"
        for name in sorted(os.listdir(folder))
        for file in sorted(os.listdir(os.path.join(folder, name)))
    ]
    path.write_text("\n".join(["file,species", *rows]) + "\n")


def test_a_csv_run_with_the_stronger_recipe_and_a_search_writes_batch_png_and_accuracy_tta(
    small_folder, tmp_path
):
    labels = tmp_path / "labels.csv"
    _write_csv(small_folder, labels)
    output = tmp_path / "out"
    source = ["--csv", str(labels), "--image-dir", small_folder, "--path-column", "file"]
    recipe = ["--label-column", "species", "--augmentation", "randaugment", "--mixup", "0.2"]
    recipe += ["--cutmix", "0.5", "--ema", "--tta", "--head-epochs", "1", "--epochs", "1"]
    search = ["--tune", "--tuner", "random", "--max-trials", "2", "--tune-epochs", "1"]

    code, stdout = _main([*source, *QUICK, *recipe, *search, "--output-dir", str(output)])

    assert code == 0
    assert len(_rows(output / "tuning" / "trials.csv")) == 2
    summary = json.loads(stdout.strip().splitlines()[-1])
    report = json.loads((output / "report.json").read_text())
    assert 0 <= summary["accuracy_tta"] == report["accuracy_tta"] <= 1
    assert report["dataset"]["num_images"] == 18 and report["dataset"]["csv"] == str(labels)
    config = json.loads((output / "config.json").read_text())
    assert (config["mixup"], config["cutmix"], config["ema_momentum"]) == (0.2, 0.5, 0.999)
    assert config["averaged_phase"] == "fine_tune"
    assert config["class_names"] == sorted(os.listdir(small_folder))
    assert (output / "batch.png").stat().st_size > 0


def test_without_validation_the_report_evaluates_the_training_images(small_folder, tmp_path, monkeypatch):
    """`--val-split 0`: the report and the summary say they evaluated the training images."""

    def untrained(data, **kwargs):
        inputs = keras.Input((32, 32, 3))
        outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
        return training.FineTuneResult(keras.Model(inputs, outputs), {}, list(data.class_names), {})

    monkeypatch.setattr(training, "fine_tune", untrained)
    monkeypatch.setattr(export, "export_saved_model", lambda model, path, **kwargs: path)
    output = tmp_path / "out"
    code, stdout = _main(
        ["--data-dir", small_folder, *QUICK, "--val-split", "0", "--output-dir", str(output)]
    )
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    report = json.loads((output / "report.json").read_text())
    assert summary["evaluated_on"] == report["evaluated_on"] == "training (evaluation transform)"
    assert report["num_images"] == 18


def _untrained(data, **kwargs):
    """Stands in for `fine_tune`: a small model ending in a Dense softmax layer, untrained."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs / 255.0))
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return training.FineTuneResult(keras.Model(inputs, outputs), {}, list(data.class_names), {"seed": 0})


def test_the_dataset_check_runs_before_training_and_calibrate_bakes_the_temperature_in(
    small_folder, tmp_path, monkeypatch
):
    output = tmp_path / "out"
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    seen, order = {}, []
    check_dataset = dataset_check.check_dataset

    def checked(*args, **kwargs):
        order.append("check")
        return check_dataset(*args, **kwargs)

    def fine_tune(data, *, output_dir, **kwargs):
        order.append("train")
        result = _untrained(data)
        seen["before"] = result.model.predict(pixels, verbose=0)
        return result

    def export_saved_model(model, path, *, config, **kwargs):
        seen["exported"], seen["config"] = model.predict(pixels, verbose=0), config
        return path

    monkeypatch.setattr(dataset_check, "check_dataset", checked)
    monkeypatch.setattr(training, "fine_tune", fine_tune)
    monkeypatch.setattr(export, "export_saved_model", export_saved_model)
    code, stdout = _main(["--data-dir", small_folder, *QUICK, "--calibrate", "--output-dir", str(output)])
    assert code == 0
    lines = stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert lines[0].startswith("images              18 in 3 classes")
    written = json.loads((output / "report.json").read_text())
    assert order == ["check", "train"]
    assert written["dataset"] == json.loads(json.dumps(check_dataset(small_folder, val_split=0.2, seed=0)))
    temperature = written["calibration"]["temperature"]
    assert summary["temperature"] == seen["config"]["temperature"] == temperature
    assert (
        written["calibration"]["expected_calibration_error_before"] == written["expected_calibration_error"]
    )
    # The same Keras predict on the same pixels: the same kernels, only the last layer differs.
    np.testing.assert_allclose(
        seen["exported"], calibration.scale_probabilities(seen["before"], temperature), atol=1e-5
    )
    assert summary["report_html"] == str(output / "report.html")
    assert "Calibration" in (output / "report.html").read_text()


def test_no_check_skips_the_dataset_check(small_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "fine_tune", _untrained)
    monkeypatch.setattr(export, "export_saved_model", lambda model, path, **kwargs: path)
    output = tmp_path / "out"
    code, stdout = _main(["--data-dir", small_folder, *QUICK, "--no-check", "--output-dir", str(output)])
    assert code == 0
    assert len(stdout.strip().splitlines()) == 1  # the summary alone: no table
    assert "dataset" not in json.loads((output / "report.json").read_text())
    assert "The dataset check did not run" in (output / "report.html").read_text()


# === Failures during training are not bad input ===


@pytest.mark.parametrize("error", [OSError("disk full"), ValueError("a Keras error in epoch 7")])
def test_a_failure_during_training_keeps_its_traceback(small_folder, tmp_path, monkeypatch, error):
    output = tmp_path / "out"

    def failing(data, *, output_dir, **kwargs):
        with open(os.path.join(output_dir, "log_head.csv"), "w") as file:
            file.write("epoch,loss\n0,1.0\n")
        raise error

    monkeypatch.setattr(training, "fine_tune", failing)
    with pytest.raises(type(error), match=str(error)):
        main(["--data-dir", small_folder, *QUICK, "--output-dir", str(output)])
    assert (output / "log_head.csv").read_text() == "epoch,loss\n0,1.0\n"


# === Bad input: one line, exit code 2, nothing trained ===


def _bad_inputs(tmp_path, folder):
    """`{id: (argv, expected text in the error line, sys.modules entries to hide)}`."""
    empty = tmp_path / "empty"
    empty.mkdir()
    write_image_folder(str(tmp_path / "two"), num_classes=2, images_per_class=3, size=32)
    single = tmp_path / "single"
    single.mkdir()
    first = sorted(os.listdir(tmp_path / "two"))[0]
    os.rename(tmp_path / "two" / first, single / first)
    hollow = tmp_path / "hollow"
    write_image_folder(str(hollow), num_classes=2, images_per_class=3, size=32)
    (hollow / "empty_class").mkdir()
    (tmp_path / "not_weights.h5").write_text("nope")
    (tmp_path / "state.pth").write_bytes(b"not read")
    (tmp_path / "state.safetensors").write_bytes(b"not read")
    (tmp_path / "a_file").write_text("")
    labels = tmp_path / "labels.csv"
    _write_csv(folder, labels)
    other_search = tmp_path / "other_search"
    other_search.mkdir()
    (other_search / tuning.SETTINGS_FILE).write_text(json.dumps({"tuner": "an older search"}))
    half_written = tmp_path / "half_written"
    half_written.mkdir()
    (half_written / tuning.SETTINGS_FILE).write_text('{"tuner": "hyperb')
    two_lines = tmp_path / "two_lines"
    write_image_folder(str(two_lines), num_classes=2, images_per_class=3, size=32)
    os.rename(two_lines / sorted(os.listdir(two_lines))[0], two_lines / "red\nfox")
    csv_two_lines = tmp_path / "two_lines.csv"
    rows = [
        f'"{os.path.join(folder, name, file)}","{"red" + chr(13) + "fox" if name == "red" else name}"'
        for name in sorted(os.listdir(folder))
        for file in sorted(os.listdir(os.path.join(folder, name)))
    ]
    with open(csv_two_lines, "w", newline="") as file:
        file.write("\n".join(["path,label", *rows]) + "\n")
    tiny = ["--backbone", "resnet-test", "--weights", "none"]
    tune = ["--tune", "--tuner", "random", "--max-trials", "1", "--tune-epochs", "1"]
    data = ["--data-dir", folder]
    cases = [
        ("missing-folder", ["--data-dir", str(tmp_path / "missing"), *tiny], "missing", ()),
        ("empty-folder", ["--data-dir", str(empty), *tiny], str(empty), ()),
        ("one-class", ["--data-dir", str(single), *tiny], "class", ()),
        ("empty-class", ["--data-dir", str(hollow), *tiny], "empty_class", ()),
        ("negative-batch", [*data, *tiny, "--batch-size", "-4"], "--batch-size", ()),
        ("unknown-backbone", [*data, "--backbone", "resnet18"], "--backbone", ()),
        ("mixed-precision", [*data, *tiny, "--mixed-precision", "maybe"], "--mixed-precision", ()),
        ("small-image", [*data, *tiny, "--image-size", "16"], "--image-size", ()),
        ("negative-mixup", [*data, *tiny, "--mixup", "-0.5"], "--mixup", ()),
        ("ema-momentum", [*data, *tiny, "--ema", "--ema-momentum", "1"], "--ema-momentum", ()),
        ("image-dir-without-csv", [*data, *tiny, "--image-dir", str(tmp_path)], "--csv", ()),
        ("csv-column", ["--csv", str(labels), *tiny, "--path-column", "file"], "'label'", ()),
        ("nothing-to-train", [*data, *tiny, "--head-epochs", "0", "--epochs", "0"], "Nothing to train", ()),
        (
            "calibrate-without-validation",
            [*data, *tiny, "--calibrate", "--val-split", "0"],
            "--calibrate",
            (),
        ),
        ("freeze-index", [*data, *tiny, "--freeze-until", "999"], "out of range", ()),
        ("freeze-name", [*data, *tiny, "--freeze-until", "conv9"], "conv9", ()),
        ("tiny-imagenet", [*data, "--backbone", "resnet-test"], "weights=None", ()),
        (
            "not-weights",
            [*data, "--backbone", "resnet50", "--weights", str(tmp_path / "not_weights.h5")],
            "is not a weights file",
            (),
        ),
        (
            "pth-without-torch",
            [*data, "--backbone", "resnet50-torchvision", "--weights", str(tmp_path / "state.pth")],
            "pip install torch",
            ("torch",),
        ),
        (
            "safetensors-without-package",
            [*data, "--backbone", "resnet50-torchvision", "--weights", str(tmp_path / "state.safetensors")],
            "pip install safetensors",
            ("safetensors",),
        ),
        ("missing-hub", [*data, "--backbone", f"hub:{tmp_path / 'nohub'}"], "Hub module not found", ()),
        ("output-dir", [*data, *tiny, "--output-dir", str(tmp_path / "a_file" / "out")], "--output-dir", ()),
        (
            "export-dir",
            [*data, *tiny, "--export-dir", str(tmp_path / "a_file" / "m" / "1")],
            "--export-dir",
            (),
        ),
        ("tune-freeze", [*data, *tiny, *tune, "--freeze-until", "999"], "out of range", ()),
        (
            "tune-nothing",
            [*data, *tiny, *tune, "--head-epochs", "0", "--epochs", "0"],
            "Nothing to train",
            (),
        ),
        ("tune-no-validation", [*data, *tiny, *tune, "--val-split", "0"], "validation", ()),
        ("bayesian", [*data, *tiny, *tune, "--tuner", "bayesian"], "pip install", ("sklearn",)),
        ("tune-dir", [*data, *tiny, *tune, "--tune-dir", str(tmp_path / "a_file" / "t")], "--tune-dir", ()),
        ("other-search", [*data, *tiny, *tune, "--tune-dir", str(other_search)], "--overwrite", ()),
        (
            "half-written-search",
            [*data, *tiny, *tune, "--tune-dir", str(half_written)],
            str(half_written / tuning.SETTINGS_FILE),
            (),
        ),
        ("seed-too-large", [*data, *tiny, "--seed", str(2**32)], "--seed", ()),
        ("negative-seed", [*data, *tiny, "--seed", "-1"], "--seed", ()),
        ("class-name-two-lines", ["--data-dir", str(two_lines), *tiny], "line", ()),
        ("csv-label-two-lines", ["--csv", str(csv_two_lines), *tiny], "line", ()),
    ]
    return {name: rest for name, *rest in cases}


@pytest.mark.parametrize(
    "case",
    [
        "missing-folder",
        "empty-folder",
        "one-class",
        "empty-class",
        "negative-batch",
        "unknown-backbone",
        "mixed-precision",
        "small-image",
        "negative-mixup",
        "ema-momentum",
        "image-dir-without-csv",
        "csv-column",
        "nothing-to-train",
        "calibrate-without-validation",
        "freeze-index",
        "freeze-name",
        "tiny-imagenet",
        "not-weights",
        "pth-without-torch",
        "safetensors-without-package",
        "missing-hub",
        "output-dir",
        "export-dir",
        "tune-freeze",
        "tune-nothing",
        "tune-no-validation",
        "bayesian",
        "tune-dir",
        "other-search",
        "half-written-search",
        "seed-too-large",
        "negative-seed",
        "class-name-two-lines",
        "csv-label-two-lines",
    ],
)
def test_bad_input_exits_2_with_one_line_before_any_training(
    case, small_folder, tmp_path, monkeypatch, capsys
):
    argv, expected, hidden = _bad_inputs(tmp_path, small_folder)[case]
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)

    def must_not_run(*args, **kwargs):
        raise AssertionError("trained or searched on bad input")

    monkeypatch.setattr(training, "fine_tune", must_not_run)
    if "search" not in case:  # there the search itself finds the bad input, before any trial
        monkeypatch.setattr(tuning, "search", must_not_run)
    output = tmp_path / "out"
    argv = [*argv, "--image-size", "32"] if "--image-size" not in argv else argv
    argv = [*argv, "--output-dir", str(output)] if "--output-dir" not in argv else argv
    code, stdout = _main(argv)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert expected in stderr
    assert "Traceback" not in stderr
    assert _files_under(output) == []


@pytest.mark.parametrize("missing", ["KERASTUNER_ORACLE_PORT", "KERASTUNER_ORACLE_IP"])
def test_a_shared_search_with_a_variable_missing_is_bad_input(
    small_folder, tmp_path, monkeypatch, capsys, missing
):
    """Without its address, keras-tuner would run a search of its own in the shared folder."""
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.delenv(missing)
    monkeypatch.setattr(tuning, "search", lambda *args, **kwargs: pytest.fail("searched"))
    code, _ = _main(["--data-dir", small_folder, *QUICK, "--tune", "--output-dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 2
    assert missing in stderr and len(stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        ("[]", "must be a JSON object"),
        ("{", "not valid JSON"),
        ('{"cluster": {"worker": "host:1"}}', '"host:port" addresses'),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}', '"type"'),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}', "0 to 1"),
    ],
)
def test_a_malformed_tf_config_is_bad_input(small_folder, tmp_path, monkeypatch, capsys, tf_config, expected):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    monkeypatch.setattr(training, "fine_tune", lambda *args, **kwargs: pytest.fail("trained"))
    code, _ = _main(["--data-dir", small_folder, *QUICK, "--output-dir", str(tmp_path / "out")])
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert "TF_CONFIG" in stderr and expected in stderr
    assert not (tmp_path / "out").exists()


def test_a_tf_config_that_is_a_list_is_one_line_from_a_plain_terminal(small_folder, tmp_path):
    completed = _run_cli(
        "--data-dir", small_folder, *QUICK, "--output-dir", str(tmp_path / "out"), env={"TF_CONFIG": "[]"}
    )
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("python -m tfresnet.finetune: error: TF_CONFIG must be a JSON object")
    assert len(completed.stderr.splitlines()) == 1, completed.stderr


def test_bad_input_from_a_plain_terminal_prints_one_line_and_nothing_else(tmp_path):
    """No TF_CPP_MIN_LOG_LEVEL: TensorFlow's start-up lines must not reach the terminal."""
    completed = _run_cli("--data-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out"))
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
    assert completed.stderr.startswith("python -m tfresnet.finetune: error: Image folder not found")


def test_a_saved_keras_model_loads_after_import_tfresnet(tmp_path):
    """`import tfresnet` is enough for Keras to find the custom layers of a `.keras` file."""
    model = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=32)
    model.save(tmp_path / "model.keras")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "pixels.npy", pixels)
    script = (
        "import sys, numpy as np, keras, tfresnet\n"
        "model = keras.models.load_model('model.keras')\n"
        "np.save('loaded.npy', model.predict(np.load('pixels.npy'), verbose=0))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert_close_across_kernels(np.load(tmp_path / "loaded.npy"), model.predict(pixels, verbose=0))


def test_every_public_name_resolves():
    from tfresnet import export_saved_model, fine_tune, from_folder  # noqa: F401

    unresolved = [name for name in tfresnet.__all__ if getattr(tfresnet, name, None) is None]
    assert unresolved == []


# === Several machines share a search; only its chief trains ===


ORACLE = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}


class _Trained(Exception):
    """Raised by the stand-in for `fine_tune`, carrying what it was asked to train."""


@pytest.mark.parametrize(
    "environment, trains",
    [
        ({}, True),
        ({"KERASTUNER_TUNER_ID": "chief", **ORACLE}, True),
        ({"KERASTUNER_TUNER_ID": "tuner1", **ORACLE}, False),
    ],
    ids=["alone", "chief", "worker"],
)
def test_after_a_shared_search_only_the_chief_trains(
    environment, trains, small_folder, tmp_path, monkeypatch
):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    best = {"head_units": 128, "dropout": 0.3, "learning_rate": 0.004}
    monkeypatch.setattr(tuning, "search", lambda data, **kwargs: dict(best))

    def fine_tune(data, **kwargs):
        raise _Trained(kwargs)

    monkeypatch.setattr(training, "fine_tune", fine_tune)
    output = tmp_path / "out"
    argv = ["--data-dir", small_folder, *QUICK, "--tune", "--tuner", "random", "--output-dir", str(output)]
    if trains:
        with pytest.raises(_Trained) as trained:
            _main(argv)
        asked = trained.value.args[0]
        assert {key: asked[key] for key in best} == best
    else:
        code, stdout = _main(argv)
        assert code == 0
        lines = stdout.strip().splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0]) == {"tuner_id": "tuner1", "best_hyperparameters": best}
        assert _files_under(output) == []


# === --help and the README ===


def _readme_command_flags():
    """The `--flags` the README's section on the command mentions (up to the next `## ` heading)."""
    with open(os.path.join(ROOT, "README.md")) as file:
        text = file.read()
    start = text.index("## The command")
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text[start : end if end > 0 else None]))


def _parser_flags():
    return {
        flag for action in build_parser()._actions for flag in action.option_strings if flag.startswith("--")
    }


def test_every_flag_is_documented_in_the_readme():
    assert sorted(_parser_flags() - _readme_command_flags()) == []


def test_every_flag_in_the_readme_exists():
    assert sorted(_readme_command_flags() - _parser_flags()) == []


def test_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        assert action.option_strings[-1] in text
        assert action.help, action.option_strings


# === --find-lr ===


def test_find_lr_suggests_a_rate_in_the_sweep_before_the_loss_minimum(learnable_folder, tmp_path):
    output = tmp_path / "out"
    # Batches of 16 without augmentation: a random backbone's losses are noisy enough as they are.
    argv = ["--data-dir", learnable_folder, *QUICK, "--batch-size", "16", "--augmentation", "none"]
    code, stdout = _main([*argv, "--find-lr", "--output-dir", str(output)])
    assert code == 0
    printed = json.loads(stdout.strip().splitlines()[-1])
    sweep = json.loads((output / "lr_find.json").read_text())
    rates, losses = np.array(sweep["learning_rates"]), np.array(sweep["losses"])
    suggested = sweep["suggested_learning_rate"]
    assert printed["suggested_learning_rate"] == suggested
    assert rates[0] <= suggested <= rates[-1]
    assert len(rates) >= 5
    assert suggested <= rates[int(np.nanargmin(losses))]
    assert (output / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(output)) == ["lr_find.json", "lr_find.png"]


def test_the_export_is_written_before_the_report_so_a_failing_report_keeps_it(
    small_folder, tmp_path, monkeypatch
):
    from tfresnet.insight import report

    def failing_report(*args, **kwargs):
        raise RuntimeError("the report failed")

    monkeypatch.setattr(training, "fine_tune", _untrained)
    monkeypatch.setattr(report, "write_report", failing_report)
    output = tmp_path / "out"
    with pytest.raises(RuntimeError, match="the report failed"):
        main(["--data-dir", small_folder, *QUICK, "--no-check", "--output-dir", str(output)])
    assert (output / "saved_model" / "1" / "labels.txt").read_text().split() == ["blue", "green", "red"]
    served = tf.saved_model.load(str(output / "saved_model" / "1")).signatures["serve_images"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    probabilities = served(images=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# === Last: the data on a store too ===


def test_a_folder_on_a_store_trains_checks_reports_and_exports_there(small_folder, ram_dir):
    data_dir = copy_to_ram(small_folder, paths.join(ram_dir, "images"))
    output = paths.join(ram_dir, "run")
    run = [*QUICK, "--augmentation", "none", "--head-epochs", "1", "--epochs", "1"]
    code, stdout = _main(["--data-dir", data_dir, *run, "--output-dir", output])
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["output_dir"] == output and summary["skipped_files"] == 0
    written = ram_files(output)
    assert [name for name in PROMISED_FILES if name not in written] == []
    report = read_json(paths.join(output, "report.json"))
    assert report["dataset"]["num_images"] == 18
    assert report["num_images"] == sum(map(sum, report["confusion_matrix"])) > 0
    assert _served_classes(summary["export_dir"]) == ["blue", "green", "red"]
