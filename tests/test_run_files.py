"""The files of a run: one run per output folder, and a best epoch that is restored or fails."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import exit_code, ram_files, write_image_folder

import tfresnet
from tfresnet import paths, training
from tfresnet.finetune import main
from tfresnet.training import run_files
from tfresnet.training.checkpoints import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32", "--batch-size", "4"]
RUN += ["--seed", "0", "--augmentation", "none", "--no-check", "--patience", "0"]


def _command(*args):
    return [sys.executable, "-m", "tfresnet.finetune", *RUN, *args]


@pytest.mark.slow
def test_a_second_run_in_a_live_output_folder_exits_2_naming_the_holder(tmp_path, capfd):
    """The first run a separate process, the second the command in this one."""
    images, output_dir = str(tmp_path / "images"), str(tmp_path / "run")
    write_image_folder(images, num_classes=2, images_per_class=6, size=32)
    run = ["--data-dir", images, "--output-dir", output_dir, "--head-epochs", "2", "--epochs", "2"]
    with open(tmp_path / "first.err", "w") as stderr:
        first = subprocess.Popen(_command(*run), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 300
    while not read_log(os.path.join(output_dir, "log_head.csv")):  # training
        assert first.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)

    first.send_signal(signal.SIGSTOP)  # alive, holding the folder, for as long as the second takes
    capfd.readouterr()
    try:
        code = exit_code(main, [*RUN, *run])
    finally:
        first.send_signal(signal.SIGCONT)

    stderr = capfd.readouterr().err
    assert code == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("python -m tfresnet.finetune: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert f"process {first.pid} holds" in errors[0]
    assert first.wait(timeout=600) == 0, (tmp_path / "first.err").read_text()[-3000:]
    assert [row["epoch"] for row in read_log(os.path.join(output_dir, "log_fine_tune.csv"))] == [0, 1]
    assert os.path.exists(os.path.join(output_dir, "saved_model", "1", "saved_model.pb"))
    assert os.path.exists(os.path.join(output_dir, "best.weights.h5"))


def test_the_lock_is_one_process_s_and_taken_again_by_it(tmp_path):
    output_dir = str(tmp_path / "run")
    holder = "import fcntl, os, sys, time; h = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    holder += "fcntl.flock(h, fcntl.LOCK_EX); os.write(h, b'%d' % os.getpid()); "
    holder += "print(1, flush=True); time.sleep(60)"
    os.makedirs(output_dir)
    other = subprocess.Popen(
        [sys.executable, "-c", holder, os.path.join(output_dir, "run.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "1"
        with pytest.raises(run_files.RunDirInUse, match=f"process {other.pid} holds"):
            with run_files.run_lock(output_dir):
                pass
    finally:
        other.kill()
        other.wait()
    with run_files.run_lock(output_dir), run_files.run_lock(output_dir):  # the same process, twice
        assert open(os.path.join(output_dir, "run.lock")).read().strip() == str(os.getpid())
    assert os.listdir(output_dir) == []  # let go: the file goes with the lock


def test_a_lock_taken_on_a_removed_lock_file_is_taken_again_on_the_new_one(tmp_path, monkeypatch):
    # A second process opens run.lock, the holder removes it and lets go, the second locks the
    # removed file: it must not count as holding the folder while a third locks the new file.
    import fcntl

    output_dir = str(tmp_path / "run")
    os.makedirs(output_dir)
    path = os.path.join(output_dir, "run.lock")
    flock, taken = fcntl.flock, []

    def flock_after_the_file_is_replaced(handle, operation):
        if not taken:
            os.unlink(path)
            open(path, "w").close()
        taken.append(os.fstat(handle).st_ino)
        return flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_file_is_replaced)
    with run_files.run_lock(output_dir):
        assert len(taken) == 2 and taken[-1] == os.stat(path).st_ino


@pytest.mark.parametrize("damage", ["corrupt", "gone"])
def test_a_best_epoch_that_cannot_be_restored_raises(tmp_path, monkeypatch, damage):
    rng = np.random.default_rng(0)
    data = tfresnet.from_arrays(
        rng.uniform(0, 255, (12, 32, 32, 3)).astype("uint8"),
        np.repeat([0, 1], 6),
        image_size=32,
        batch_size=4,
        val_split=0.25,
        augmentation="none",
        seed=0,
    )
    best = str(tmp_path / "best.weights.h5")
    fit = keras.Model.fit

    def fit_then_damage(model, *args, **kwargs):
        history = fit(model, *args, **kwargs)
        if damage == "gone":
            os.remove(best)
        else:
            with open(best, "wb") as file:
                file.write(b"not weights")
        return history

    monkeypatch.setattr(keras.Model, "fit", fit_then_damage)
    with pytest.raises((OSError, FileNotFoundError)):
        training.fine_tune(
            data,
            backbone="resnet-test",
            weights=None,
            head_epochs=1,
            epochs=0,
            output_dir=str(tmp_path),
            verbose=0,
        )
    assert not os.path.exists(tmp_path / "training_done.json")


# === A run folder on a store (ram://, TensorFlow's in-memory file system, through tf.io.gfile) ===

STORE_RUN = dict(backbone="resnet-test", weights=None, head_epochs=1, epochs=2, seed=0, verbose=0)


def _store_run_data():
    rng = np.random.default_rng(0)
    colours = np.array([[220, 30, 30], [30, 220, 30]], "float32")
    labels = np.repeat([0, 1], 8)
    images = colours[labels][:, None, None, :] + rng.normal(0, 20, (16, 32, 32, 3))
    return tfresnet.from_arrays(
        np.clip(images, 0, 255).astype("uint8"),
        labels,
        image_size=32,
        batch_size=4,
        val_split=0.25,
        augmentation="none",
        seed=0,
    )


def test_a_run_on_a_store_killed_in_its_fine_tuning_resumes_there(
    ram_dir, tmp_path, epoch_backups, monkeypatch
):
    output_dir, data = paths.join(ram_dir, "run"), _store_run_data()
    epoch_backups.kill_after_the_first_fine_tuning_epoch()
    with pytest.raises(KeyboardInterrupt):
        training.fine_tune(data, output_dir=output_dir, **STORE_RUN)
    at_kill = ram_files(output_dir)
    assert {"run.json", "config.json", "log_head.csv", "best.weights.h5", "best.json"} <= set(at_kill)
    assert {"head_phase.weights.h5", "backup/fine_tune/epoch.json", "logs/head/train"} <= {
        *at_kill,
        *(os.path.dirname(name) for name in at_kill),
    }
    assert "training_done.json" not in at_kill and "run.lock" not in at_kill  # no lock on a store
    assert run_files.resume_point(output_dir) == [0, 1, 0, 0]
    run_files.copy_state(output_dir, str(tmp_path))  # what another worker resumes from
    assert os.path.isfile(tmp_path / "backup" / "fine_tune" / "epoch-0.weights.h5")
    assert run_files.resume_point(str(tmp_path)) == [0, 1, 0, 0]

    epoch_backups.record()
    result = training.fine_tune(data, output_dir=output_dir, resume=True, **STORE_RUN)
    assert epoch_backups.ended == [("fine_tune", 1)]  # the epoch after the kill, nothing before it
    assert result.history["phase"] == [1, 2, 2]
    assert [row["epoch"] for row in read_log(paths.join(output_dir, "log_fine_tune.csv"))] == [0, 1]
    files = ram_files(output_dir)
    assert "training_done.json" in files and "head_phase.weights.h5" not in files
    assert not any(name.startswith("backup/") for name in files)

    def trained(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(keras.Model, "fit", trained)
    again = training.fine_tune(data, output_dir=output_dir, resume=True, **STORE_RUN)
    assert again.history == result.history
    for expected, actual in zip(result.model.weights, again.model.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
