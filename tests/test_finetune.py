import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_folder

from tfresnet.finetune import main

QUICK = ["--weights", "none", "--image-size", "32", "--batch-size", "8", "--seed", "0"]


def _run_cli(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "tfresnet.finetune", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        **kwargs,
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
    """One real run of the command, as users call it, shared by the tests that inspect it."""
    output = tmp_path_factory.mktemp("run")
    completed = _run_cli(
        "--data-dir",
        learnable_folder,
        *QUICK,
        "--val-split",
        "0.25",
        # A random backbone: "standard" crops of 8% of a 40 px image often miss the shape, and
        # its unnormalised features need a gentle learning rate.
        "--augmentation",
        "flip",
        "--head-epochs",
        "5",
        "--epochs",
        "2",
        "--learning-rate",
        "1e-3",
        "--output-dir",
        str(output / "out"),
        "--export-dir",
        str(output / "serving" / "1"),
    )
    return completed, output


def test_cli_learns_a_learnable_folder(trained_run):
    completed, output = trained_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["evaluated_on"] == "validation"
    assert summary["accuracy"] >= 0.9
    report = json.loads((output / "out" / "report.json").read_text())
    assert report["num_images"] == 15
    assert sum(map(sum, report["confusion_matrix"])) == 15
    for name in ("confusion_matrix.png", "training_curves.png", "top_losses.png", "config.json"):
        assert (output / "out" / name).exists(), name
    config = json.loads((output / "out" / "config.json").read_text())
    assert config["class_names"] == ["blue", "green", "red"]


def test_cli_export_serves_both_signatures(trained_run, learnable_folder):
    _, output = trained_run
    export_dir = output / "serving" / "1"
    shown = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "saved_model_cli"),
            "show",
            "--dir",
            str(export_dir),
            "--all",
        ],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "signature_def['serving_default']" in shown.stdout
    assert "signature_def['serve_images']" in shown.stdout
    assert "image_bytes" in shown.stdout
    served = tf.saved_model.load(str(export_dir))
    files = sorted(os.listdir(os.path.join(learnable_folder, "red")))[:2]
    encoded = [open(os.path.join(learnable_folder, "red", name), "rb").read() for name in files]
    labels = served.signatures["serving_default"](image_bytes=tf.constant(encoded))["labels"]
    assert labels.shape == (2, 3)
    assert (export_dir / "labels.txt").read_text().split() == ["blue", "green", "red"]


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--data-dir",
        "--tfds",
        "--val-split",
        "--backbone",
        "--weights",
        "--image-size",
        "--batch-size",
        "--head-units",
        "--dropout",
        "--head-epochs",
        "--epochs",
        "--learning-rate",
        "--fine-tune-learning-rate",
        "--freeze-until",
        "--augmentation",
        "--label-smoothing",
        "--mixed-precision",
        "--seed",
        "--output-dir",
        "--export-dir",
        "--resume",
    ):
        assert flag in text, flag


def _bad_inputs(tmp_path, learnable_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    write_image_folder(str(tmp_path / "two"), num_classes=2, images_per_class=3, size=32)
    os.makedirs(single)
    first_class = sorted(os.listdir(tmp_path / "two"))[0]
    os.rename(tmp_path / "two" / first_class, single / first_class)
    hollow = tmp_path / "hollow"
    write_image_folder(str(hollow), num_classes=2, images_per_class=3, size=32)
    (hollow / "empty_class").mkdir()
    not_weights = tmp_path / "resnet50.h5"
    not_weights.write_text("nope")
    return [
        (["--data-dir", str(tmp_path / "missing")], "missing"),
        (["--data-dir", str(empty)], str(empty)),
        (["--data-dir", str(single)], "class"),
        (["--data-dir", str(hollow)], "empty_class"),
        (["--data-dir", learnable_folder, "--batch-size", "-4"], "--batch-size"),
        (["--data-dir", learnable_folder, "--backbone", "resnet18"], "--backbone"),
        (["--data-dir", learnable_folder, "--weights", str(not_weights)], "is not a weights file"),
        (["--data-dir", learnable_folder, "--weights", "none", "--freeze-until", "999"], "out of range"),
        (["--data-dir", learnable_folder, "--backbone", f"hub:{tmp_path / 'nohub'}"], "Hub module not found"),
        (["--data-dir", learnable_folder, "--mixed-precision", "maybe"], "--mixed-precision"),
    ]


def test_bad_input_exits_2_with_one_line(tmp_path, learnable_folder, capsys):
    for argv, expected in _bad_inputs(tmp_path, learnable_folder):
        argv = [*argv, "--image-size", "32", "--output-dir", str(tmp_path / "out")]
        try:
            code = main(argv)
        except SystemExit as exit_info:
            code = exit_info.code
        stderr = capsys.readouterr().err.strip()
        assert code == 2, (argv, stderr)
        assert expected in stderr, (argv, stderr)
        assert len(stderr.splitlines()) == 1, stderr
        assert "Traceback" not in stderr


def test_bad_input_through_the_command_line(tmp_path):
    completed = _run_cli("--data-dir", str(tmp_path / "missing"))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "missing" in completed.stderr.strip().splitlines()[-1]


def _log_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_killed_run_resumes_at_its_last_epoch(small_folder, tmp_path):
    output = tmp_path / "out"
    args = [
        "--data-dir",
        small_folder,
        *QUICK,
        "--head-epochs",
        "0",
        "--epochs",
        "6",
        "--patience",
        "0",
        "--output-dir",
        str(output),
    ]
    log = output / "log_fine_tune.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "tfresnet.finetune", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while len(_log_rows(log)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(_log_rows(log))
    assert 2 <= done_before < 6

    resumed = _run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Epoch {done_before + 1}/6" in resumed.stdout
    assert "Epoch 1/6" not in resumed.stdout
    epochs = [int(row["epoch"]) for row in _log_rows(log)]
    assert epochs == list(range(6))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_training_on_localhost(small_folder, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tfresnet.finetune",
                    "--data-dir",
                    small_folder,
                    *QUICK,
                    "--batch-size",
                    "4",
                    "--val-split",
                    "0.34",
                    "--head-epochs",
                    "1",
                    "--epochs",
                    "1",
                    "--output-dir",
                    str(tmp_path / "out"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
        )
    results = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["num_replicas"] == 2
    assert (tmp_path / "out" / "saved_model" / "1" / "saved_model.pb").exists()
    summary = json.loads(results[0][0].strip().splitlines()[-1])
    assert 0 <= summary["accuracy"] <= 1
    assert np.isfinite(json.loads((tmp_path / "out" / "report.json").read_text())["accuracy"])


def test_find_lr_writes_its_plot_and_trains_nothing(learnable_folder, tmp_path, capsys):
    output = tmp_path / "out"
    code = main(["--data-dir", learnable_folder, *QUICK, "--find-lr", "--output-dir", str(output)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sweep = json.loads((output / "lr_find.json").read_text())
    assert printed["suggested_learning_rate"] == sweep["suggested_learning_rate"]
    assert (output / "lr_find.png").exists()
    assert not (output / "best.weights.h5").exists()


@pytest.mark.slow
def test_tune_searches_then_trains_and_exports_the_best(small_folder, tmp_path):
    output = tmp_path / "out"
    completed = _run_cli(
        "--data-dir",
        small_folder,
        *QUICK,
        "--tune",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        "--tune-epochs",
        "1",
        "--head-epochs",
        "1",
        "--epochs",
        "0",
        "--output-dir",
        str(output),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    best = json.loads((output / "tuning" / "best_hyperparameters.json").read_text())
    assert {"head_units", "dropout", "learning_rate"} <= set(best)
    for name in ("trials.csv", "trials.png"):
        assert (output / "tuning" / name).exists(), name
    config = json.loads((output / "config.json").read_text())
    assert config["learning_rate"] == pytest.approx(best["learning_rate"])
    assert config["dropout"] == pytest.approx(best["dropout"])
    assert config["head_units"] == best["head_units"]
    assert (output / "saved_model" / "1" / "saved_model.pb").exists()
