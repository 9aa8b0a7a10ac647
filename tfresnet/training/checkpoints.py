"""What makes a run resumable: the epoch backup, the best checkpoint, the logs.

Every file here is written through `tfresnet.files` (beside its target, then renamed over
it), so a run killed at any moment leaves either the previous file or the new one; and read and
written through `tfresnet.paths`, so a run folder may be on any file system TensorFlow has.

At the end of an epoch `EpochBackup` commits the epoch first (the weights and optimizer
state, then the epoch number and its metrics); only then do `EpochLog` (one row per epoch)
and `BestCheckpoint` (the best epoch's weights and score) record it. A run killed before the
commit does the epoch again, and nothing of it was recorded; a run killed after it resumes
at the next epoch, and the backup hands the committed epoch to the log and the best
checkpoint first, so neither misses it. `ResumableEarlyStopping` counts the patience of the
epochs logged before a kill too.

Why not Keras's own callbacks, subclassed: `BackupAndRestore` writes its weights file in place
(a kill during the write leaves a torn file, which `double_checkpoint` answers with a second
copy rather than a commit) and keeps no metrics to hand to the log and the best checkpoint;
`ModelCheckpoint` writes in place too, and changing that means overriding its private
`_save_model`; `CSVLogger` appends, so an epoch recorded again after a resume would appear
twice, and writes "NA" for metrics an epoch lacks. `AveragedWeights` and
`ResumableEarlyStopping` do subclass Keras's (`SwapEMAWeights`, `EarlyStopping`).
"""

from __future__ import annotations

import csv
import math
import os

import keras

from tfresnet import internals, paths
from tfresnet.files import copy_atomically, read_json, save_weights_atomically, write_atomically, write_json

BEST_STATE = "best.json"
BACKUP_WEIGHTS = "epoch-{epoch}.weights.h5"
BACKUP_STATE = "epoch.json"


class EpochBackup(keras.callbacks.Callback):
    """Commits each finished epoch to `directory`; a new `fit()` continues after the last one.

    At the end of an epoch: the weights with the optimizer's state (`epoch-N.weights.h5`),
    then `epoch.json`, which names them with the epoch number and its metrics: renaming
    `epoch.json` into place is the commit, so a kill at any moment leaves one whole epoch
    committed. At the start of `fit()`: the committed weights are loaded, `fit()` starts at the
    next epoch (the epoch given to `fit()` otherwise), and the committed epoch is handed to the
    `replay` callbacks' `on_epoch_end`, so that what a kill kept them from recording is
    recorded (they must accept an epoch twice). Each phase of a run needs a directory of its own.

    Example:
        log = EpochLog("runs/flowers/log_head.csv", resume=True)
        backup = EpochBackup("runs/flowers/backup/head", replay=[log])
        model.fit(train, epochs=10, callbacks=[backup, log])  # after a kill: from the next epoch
    """

    def __init__(self, directory: str, *, replay: list[keras.callbacks.Callback] = ()):
        super().__init__()
        self.directory = directory
        self.state_path = paths.join(directory, BACKUP_STATE)
        self.replay = list(replay)
        self.restored = False  # whether the last fit() began from a committed epoch

    @property
    def weights_path(self) -> str | None:
        """The committed epoch's weights file (None before the first commit)."""
        state = read_json(self.state_path)
        return None if state is None else paths.join(self.directory, state["weights"])

    def on_train_begin(self, logs=None):
        state = read_json(self.state_path)
        # Reset when there is no backup, or a later fit() of the same model would skip epochs.
        internals.set_initial_epoch(self.model, None if state is None else state["epoch"] + 1)
        self.restored = state is not None
        if state is None:
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(paths.join(self.directory, state["weights"]))
        for callback in self.replay:
            callback.on_epoch_end(state["epoch"], state["logs"])

    def on_epoch_end(self, epoch, logs=None):
        paths.makedirs(self.directory)
        name = BACKUP_WEIGHTS.format(epoch=epoch)
        save_weights_atomically(self.model, paths.join(self.directory, name))
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        write_json(self.state_path, {"epoch": epoch, "weights": name, "logs": metrics})
        for other in paths.listdir(self.directory):
            if other != name and other.startswith("epoch-") and other.endswith(".weights.h5"):
                paths.remove(paths.join(self.directory, other))


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Puts the optimizer's moving average of the weights in the model to evaluate and keep.

    Keras's `SwapEMAWeights(swap_on_epoch=True)`: validation runs on the averaged weights, and
    at the end of each epoch the callbacks after this one (the phase's `EpochBackup`, the log,
    the best checkpoint) see and save the averaged weights, the trained ones then sitting in
    the optimizer's average slots; the next epoch swaps them back. A fit that `backup` resumed
    starts from such a committed epoch, so it swaps back before its first epoch too.

    Example:
        compile_classifier(model, learning_rate=1e-4, ema_momentum=0.999)
        model.fit(train, callbacks=[AveragedWeights(backup), backup, best])
    """

    def __init__(self, backup: EpochBackup | None = None):
        super().__init__(swap_on_epoch=True)
        self.backup = backup
        self._first_epoch = True

    def on_train_begin(self, logs=None):
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:  # every on_train_begin has run: the backup has restored or not
            internals.set_averaged_weights_in_model(self, bool(self.backup and self.backup.restored))
            self._first_epoch = False
        super().on_epoch_begin(epoch, logs)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the best epoch, and its score in `best.json` beside them.

    Accuracies and mean average precision are best highest, losses lowest (`monitor_mode`);
    ties keep the earlier epoch. With `path`
    None the weights are kept in memory. The score is read back with `resume=True`, so a
    resumed run keeps the best epoch of the whole run, not of the epochs after the kill. One
    instance spans both phases of a run: set `phase` before each, and `backup` to the phase's
    `EpochBackup` (placed before this callback), whose committed weights, the model's own
    when an epoch ends, are then copied rather than written again.

    Example:
        best = BestCheckpoint("runs/flowers/best.weights.h5", "val_accuracy", resume=True)
        model.fit(train, validation_data=validation, callbacks=[best])
        best.restore()  # the best epoch's weights, back into the model
    """

    def __init__(self, path: str | None, monitor: str = "val_accuracy", *, resume: bool = False):
        super().__init__()
        self.path = path
        self.state_path = paths.join(os.path.dirname(path), BEST_STATE) if path else None
        self.monitor = monitor
        self.phase = "head"
        self.backup: EpochBackup | None = None
        self.weights: list | None = None
        state = read_json(self.state_path) if resume and path else None
        if state and state.get("monitor") == monitor:
            self.best, self.best_epoch = state["value"], state["epoch"]
        else:
            self.best, self.best_epoch = (-math.inf if self._maximise else math.inf), None

    @property
    def _maximise(self) -> bool:
        return monitor_mode(self.monitor) == "max"

    def _better(self, value: float) -> bool:
        return value > self.best if self._maximise else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)) or not self._better(float(value)):
            return
        self.best, self.best_epoch = float(value), {"phase": self.phase, "epoch": epoch}
        if self.path is None:
            self.weights = self.model.get_weights()
        elif self.backup and self.backup.weights_path:
            copy_atomically(self.backup.weights_path, self.path)
        else:
            save_weights_atomically(self.model, self.path)
        if self.path:
            write_json(
                self.state_path, {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch}
            )

    def restore(self, model: keras.Model | None = None) -> bool:
        """Loads the best epoch's weights into `model` (default: the trained one), if any.

        Raises when the best epoch's weights file is gone or cannot be read: the model never
        goes on silently with other weights than the best epoch's.
        """
        model = model or self.model
        if self.weights is not None:
            model.set_weights(self.weights)
            return True
        if self.path and self.best_epoch is not None:
            if not paths.exists(self.path):
                raise FileNotFoundError(
                    f"The best epoch's weights {self.path!r} ({self.best_epoch}) are gone: "
                    f"the best epoch cannot be restored."
                )
            model.load_weights(self.path)  # a corrupt file raises
            return True
        return False


def monitor_mode(monitor: str) -> str:
    """`"min"` for a loss, `"max"` for a score (accuracy, mean average precision).

    Example:
    >>> monitor_mode("val_mean_average_precision"), monitor_mode("loss")
    ('max', 'min')
    """
    return "min" if monitor.endswith("loss") else "max"


class EpochLog(keras.callbacks.Callback):
    """One phase's per-epoch metrics in a CSV file, one row per epoch, rewritten atomically.

    An epoch recorded again (a resumed run hands over the epoch it committed last) replaces
    its row, so the log never holds an epoch twice. Metrics absent from an epoch (no
    validation set) are left out, not written as "NA".

    Example:
        log = EpochLog("runs/flowers/log_head.csv", resume=True)
        model.fit(train, epochs=3, callbacks=[log])
        [row["epoch"] for row in log.rows]
        # [0, 1, 2]
    """

    def __init__(self, path: str, *, resume: bool = False):
        super().__init__()
        self.path = path
        self.rows = read_log(path) if resume else []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}}
        self.rows = [kept for kept in self.rows if kept["epoch"] < epoch] + [row]
        columns = list(dict.fromkeys(key for kept in self.rows for key in kept))

        def write(temporary: str) -> None:
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, columns)
                writer.writeheader()
                writer.writerows(self.rows)

        write_atomically(self.path, write)


def read_log(path: str) -> list[dict]:
    """The rows of an `EpochLog` file (an empty list when there is none).

    Example:
        read_log("runs/flowers/log_fine_tune.csv")[-1]["val_accuracy"]
        # 0.93
    """
    if not paths.exists(path):
        return []
    with paths.open_file(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [
        {key: int(value) if key == "epoch" else float(value) for key, value in row.items() if value}
        for row in rows
    ]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose patience counts the epochs `log` holds from before a kill too.

    At the start of `fit()` the rows of `log` (an `EpochLog` of the same phase) before the
    epoch `fit()` starts at (as an `EpochBackup` placed before both sets it) count as epochs
    already seen.

    Example:
    >>> log = EpochLog("runs/flowers/log_fine_tune.csv", resume=True)
    >>> stop = ResumableEarlyStopping("val_accuracy", patience=5, log=log)
    """

    def __init__(self, monitor: str, *, patience: int, log: EpochLog | None = None):
        super().__init__(monitor, patience=patience, mode=monitor_mode(monitor))
        self.log = log

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        first = internals.initial_epoch(self.model)
        for row in self.log.rows if self.log else []:
            if self.monitor in row and row["epoch"] < first:
                internals.count_epoch_seen(self, row[self.monitor])
