"""The pieces that make a run resumable, on a two-weight model: the epoch backup, the best
checkpoint, the per-epoch log and early stopping across a kill."""

import os

import keras
import numpy as np
import pytest

from tfresnet import paths
from tfresnet.files import read_json, write_json
from tfresnet.training import checkpoints
from tfresnet.training.checkpoints import (
    BestCheckpoint,
    EpochBackup,
    EpochLog,
    ResumableEarlyStopping,
    read_log,
)


def _model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")


def _set_kernel(model: keras.Model, value: float) -> None:
    model.layers[0].kernel.assign(np.full((3, 1), value, dtype="float32"))


def _kernel_in(path: str) -> np.ndarray:
    model = _model()
    model.load_weights(path)
    return model.layers[0].kernel.numpy()


class _Kill(keras.callbacks.Callback):
    """Stands for a kill: raises at the end of epoch `at`, where it is placed in the list."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt(f"killed at the end of epoch {epoch}")


class _Snapshot(keras.callbacks.Callback):
    """Keeps the model's weights as the first epoch to run finds them."""

    def on_train_begin(self, logs=None):
        self.weights = self.model.get_weights()


# === BestCheckpoint ===


def _epochs(best: BestCheckpoint, model: keras.Model, scores: list[float], start: int = 0) -> None:
    """Ends one epoch per score, the kernel set to the score, so the file tells its epoch."""
    for epoch, score in enumerate(scores, start):
        _set_kernel(model, score)
        best.on_epoch_end(epoch, {"val_accuracy": score})


def test_best_checkpoint_keeps_the_best_epoch(tmp_path):
    model, path = _model(), str(tmp_path / "best.weights.h5")
    best = BestCheckpoint(path, "val_accuracy")
    best.set_model(model)
    _epochs(best, model, [0.5, 0.75, 0.625, 0.75])

    assert best.best == 0.75 and best.best_epoch == {"phase": "head", "epoch": 1}
    np.testing.assert_array_equal(_kernel_in(path), np.full((3, 1), 0.75))
    state = read_json(str(tmp_path / "best.json"))
    assert state == {"monitor": "val_accuracy", "value": 0.75, "epoch": {"phase": "head", "epoch": 1}}


def test_best_checkpoint_survives_a_resume_and_ignores_worse_epochs(tmp_path):
    model, path = _model(), str(tmp_path / "best.weights.h5")
    first = BestCheckpoint(path, "val_accuracy")
    first.set_model(model)
    _epochs(first, model, [0.5, 0.875, 0.625])

    resumed = BestCheckpoint(path, "val_accuracy", resume=True)
    resumed.set_model(model)
    resumed.phase = "fine_tune"
    assert resumed.best == 0.875 and resumed.best_epoch == {"phase": "head", "epoch": 1}
    _epochs(resumed, model, [0.75, 0.8125])
    np.testing.assert_array_equal(_kernel_in(path), np.full((3, 1), 0.875))
    assert read_json(str(tmp_path / "best.json"))["value"] == 0.875

    _epochs(resumed, model, [0.9375], start=2)
    np.testing.assert_array_equal(_kernel_in(path), np.full((3, 1), 0.9375))
    assert resumed.best_epoch == {"phase": "fine_tune", "epoch": 2}


def test_best_checkpoint_without_resume_starts_afresh(tmp_path):
    model, path = _model(), str(tmp_path / "best.weights.h5")
    first = BestCheckpoint(path, "val_accuracy")
    first.set_model(model)
    _epochs(first, model, [0.875])
    fresh = BestCheckpoint(path, "val_accuracy")
    assert fresh.best == -np.inf and fresh.best_epoch is None


def test_best_checkpoint_of_a_loss_keeps_the_lowest_in_memory():
    model = _model()
    best = BestCheckpoint(None, "loss")
    best.set_model(model)
    for epoch, loss in enumerate([2.0, 0.5, 1.0, float("nan")]):
        _set_kernel(model, loss)
        best.on_epoch_end(epoch, {"loss": loss})
    assert best.best == 0.5 and best.best_epoch["epoch"] == 1
    _set_kernel(model, 7.0)
    assert best.restore()
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.full((3, 1), 0.5))


# === EpochLog ===


def test_epoch_log_replaces_a_repeated_epoch(tmp_path):
    path = str(tmp_path / "log_head.csv")
    log = EpochLog(path)
    for epoch, loss in [(0, 3.0), (1, 2.0), (2, 1.5), (1, 1.75)]:
        log.on_epoch_end(epoch, {"loss": loss})
    assert read_log(path) == [{"epoch": 0, "loss": 3.0}, {"epoch": 1, "loss": 1.75}]

    resumed = EpochLog(path, resume=True)
    resumed.on_epoch_end(2, {"loss": 1.25})
    assert [row["epoch"] for row in read_log(path)] == [0, 1, 2]
    assert EpochLog(path).rows == []


def test_epoch_log_leaves_missing_metrics_empty_not_na(tmp_path):
    path = tmp_path / "log_fine_tune.csv"
    log = EpochLog(str(path))
    log.on_epoch_end(0, {"loss": 2.0, "accuracy": 0.5})
    log.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.75, "val_accuracy": 0.5})
    assert "NA" not in path.read_text()
    assert read_log(str(path)) == [
        {"epoch": 0, "loss": 2.0, "accuracy": 0.5},
        {"epoch": 1, "loss": 1.0, "accuracy": 0.75, "val_accuracy": 0.5},
    ]
    assert read_log(str(tmp_path / "missing.csv")) == []


# === EpochBackup and early stopping across a kill ===


def _callbacks(run_dir, *, resume: bool, kill: int | None = None, patience: int | None = None):
    """The order `fine_tune` uses: backup, (kill), log, best, early stopping."""
    log = EpochLog(os.path.join(run_dir, "log.csv"), resume=resume)
    best = BestCheckpoint(os.path.join(run_dir, "best.weights.h5"), "loss", resume=resume)
    found = [EpochBackup(os.path.join(run_dir, "backup"), replay=[log, best])]
    found += [_Kill(kill)] if kill is not None else []
    found += [log, best]
    found += [ResumableEarlyStopping("loss", patience=patience, log=log)] if patience else []
    return found, log, best


@pytest.fixture(params=["local", "ram"])
def run_dir(request, tmp_path, ram_dir) -> str:
    """A run folder, local or on ram:// (TensorFlow's in-memory file system, through tf.io.gfile)."""
    return str(tmp_path) if request.param == "local" else ram_dir


def test_a_killed_fit_resumes_after_its_last_committed_epoch(run_dir):
    x, y = _data()
    model = _model()
    callbacks, _, _ = _callbacks(run_dir, resume=False, kill=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=callbacks)
    # Killed after the backup committed epoch 2, before the log and the best recorded it.
    assert [row["epoch"] for row in read_log(paths.join(run_dir, "log.csv"))] == [0, 1]
    at_kill = model.get_weights()

    resumed = _model()
    callbacks, log, best = _callbacks(run_dir, resume=True)
    start = _Snapshot()
    history = resumed.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[*callbacks, start])

    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    for expected, actual in zip(at_kill, start.weights):
        np.testing.assert_array_equal(expected, actual)  # epoch 2's weights, not fresh ones
    assert [row["epoch"] for row in read_log(paths.join(run_dir, "log.csv"))] == [0, 1, 2, 3, 4]
    losses = [row["loss"] for row in log.rows]
    assert best.best == min(losses)
    assert best.best_epoch["epoch"] == int(np.argmin(losses))
    assert paths.listdir(paths.join(run_dir, "backup")) == ["epoch-4.weights.h5", checkpoints.BACKUP_STATE]
    assert best.restore(_model())


class _EpochEnds(keras.callbacks.Callback):
    """Keeps the model's weights at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.get_weights()


def test_a_kill_before_the_commit_leaves_the_previous_epoch_whole(tmp_path, monkeypatch):
    x, y = _data()
    write_json = checkpoints.write_json

    def killed_before_committing_epoch_2(path, value):
        if path.endswith(checkpoints.BACKUP_STATE) and value["epoch"] == 2:
            raise KeyboardInterrupt("killed after epoch 2's weights, before its commit")
        write_json(path, value)

    monkeypatch.setattr(checkpoints, "write_json", killed_before_committing_epoch_2)
    ends = _EpochEnds()
    with pytest.raises(KeyboardInterrupt):
        _model().fit(x, y, epochs=5, verbose=0, callbacks=[ends, EpochBackup(str(tmp_path))])
    monkeypatch.setattr(checkpoints, "write_json", write_json)

    start = _Snapshot()
    history = _model().fit(x, y, epochs=5, verbose=0, callbacks=[EpochBackup(str(tmp_path)), start])
    assert len(history.history["loss"]) == 3  # epoch 2 again, then 3 and 4
    for expected, actual in zip(ends.weights[1], start.weights):
        np.testing.assert_array_equal(expected, actual)
    assert sorted(os.listdir(tmp_path)) == ["epoch-4.weights.h5", checkpoints.BACKUP_STATE]


def test_a_fit_without_a_backup_starts_at_epoch_zero(tmp_path):
    x, y = _data()
    model = _model()
    backup = EpochBackup(str(tmp_path / "head"))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[backup])
    model._initial_epoch = 2  # as a restored phase leaves it
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[EpochBackup(str(tmp_path / "fine_tune"))])
    assert len(history.history["loss"]) == 2
    assert read_json(str(tmp_path / "fine_tune" / checkpoints.BACKUP_STATE))["epoch"] == 1


def test_early_stopping_counts_the_epochs_logged_before_a_kill(tmp_path):
    x, y = _data()
    log_path = str(tmp_path / "log.csv")
    before_kill = EpochLog(log_path)
    for epoch, loss in enumerate([1e-6, 50.0, 60.0]):  # two epochs without improvement
        before_kill.on_epoch_end(epoch, {"loss": loss})
    os.makedirs(tmp_path / "backup")
    state = {"epoch": 2, "weights": "epoch-2.weights.h5", "logs": {"loss": 60.0}}
    write_json(str(tmp_path / "backup" / checkpoints.BACKUP_STATE), state)
    model = _model()
    model.save_weights(str(tmp_path / "backup" / "epoch-2.weights.h5"))

    callbacks, log, _ = _callbacks(str(tmp_path), resume=True, patience=3)
    history = model.fit(x, y, epochs=20, verbose=0, callbacks=callbacks)
    assert len(history.history["loss"]) == 1  # the third epoch without improvement stops it
    assert [row["epoch"] for row in log.rows] == [0, 1, 2, 3]


def test_best_checkpoint_of_mean_average_precision_keeps_the_highest():
    model = _model()
    best = BestCheckpoint(None, "val_mean_average_precision")
    best.set_model(model)
    for epoch, score in enumerate([0.4, 0.8, 0.6]):
        _set_kernel(model, score)
        best.on_epoch_end(epoch, {"val_mean_average_precision": score})
    assert best.best == 0.8 and best.best_epoch["epoch"] == 1
    stop = checkpoints.ResumableEarlyStopping("val_mean_average_precision", patience=2)
    assert stop.mode == "max"
