"""The files of a run in its `output_dir`: their names, the folder prepared for a run or a
resume, the history their logs hold, and each phase's callbacks that write them.

`best.weights.h5` and `best.json` (the best epoch), `log_head.csv` and `log_fine_tune.csv` (one
row per epoch), `backup/<phase>/` (the last finished epoch, see `EpochBackup`),
`head_phase.weights.h5` (the head phase's end, while the fine-tuning phase runs),
`training_done.json` and `config.json`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tfresnet.checkpoints import (
    BEST_STATE,
    AveragedWeights,
    BestCheckpoint,
    EpochBackup,
    EpochLog,
    ResumableEarlyStopping,
    read_json,
    read_log,
)
from tfresnet.distribute import is_chief
from tfresnet.models import compile_classifier

PHASES = ("head", "fine_tune")
# Files kept in `output_dir`.
BEST_WEIGHTS = "best.weights.h5"
HEAD_DONE_WEIGHTS = "head_phase.weights.h5"
DONE_FILE = "training_done.json"
CONFIG_FILE = "config.json"
BACKUP_DIR = "backup"
LOG_FILE = "log_{phase}.csv"


def prepare_run_dir(output_dir: str | None, strategy: tf.distribute.Strategy, resume: bool) -> str | None:
    """`output_dir` on the chief; on another worker a folder of its own outside it, the same
    on every start (so a worker resumes to the point the chief resumes to)."""
    if not output_dir:
        return None
    run_dir = output_dir
    if not is_chief(strategy):
        resolver = strategy.cluster_resolver
        key = hashlib.sha1(os.path.abspath(output_dir).encode()).hexdigest()[:12]
        name = f"tfresnet-{key}-{resolver.task_type}{resolver.task_id}"
        run_dir = os.path.join(tempfile.gettempdir(), name)
    os.makedirs(run_dir, exist_ok=True)
    if not resume:
        logs = [LOG_FILE.format(phase=phase) for phase in PHASES]
        remove(run_dir, BACKUP_DIR, HEAD_DONE_WEIGHTS, BEST_WEIGHTS, BEST_STATE, DONE_FILE, *logs)
    return run_dir


def remove(directory: str, *names: str) -> None:
    """Removes the files and folders `names` of `directory` that exist.

    Example:
    >>> remove("runs/flowers", BACKUP_DIR, HEAD_DONE_WEIGHTS)
    """
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def finished_run(model: keras.Model, run_dir: str, recipe: dict, config: dict) -> dict[str, list[float]]:
    """The model (compiled as after training, holding the best epoch's weights) and history of
    a run that finished training, resumed for its report and export."""
    compile_classifier(
        model,
        learning_rate=recipe["fine_tune_learning_rate" if recipe["epochs"] else "learning_rate"],
        label_smoothing=recipe["label_smoothing"],
        jit_compile=recipe["jit_compile"],
    )
    config["jit_compile"] = bool(model.jit_compile)
    config["best_epoch"] = (read_json(os.path.join(run_dir, DONE_FILE)) or {}).get("best_epoch")
    model.load_weights(os.path.join(run_dir, BEST_WEIGHTS))
    return logged_history(run_dir)


def logged_history(run_dir: str) -> dict[str, list[float]]:
    """The history of both phases as their logs in `run_dir` hold it (see `extend_history`).

    Example:
    >>> logged_history("runs/flowers")["phase"]
    [1, 1, 1, 2, 2]
    """
    history: dict[str, list[float]] = {}
    for number, phase in enumerate(PHASES, 1):
        extend_history(history, read_log(os.path.join(run_dir, LOG_FILE.format(phase=phase))), number)
    return history


def history_rows(history: dict[str, list[float]]) -> list[dict]:
    """A Keras `History.history` as log rows, one per epoch (what `extend_history` takes).

    Example:
    >>> history_rows({"loss": [0.9, 0.7]})
    [{'epoch': 0, 'loss': 0.9}, {'epoch': 1, 'loss': 0.7}]
    """
    return [
        {"epoch": i, **{key: float(values[i]) for key, values in history.items()}}
        for i in range(len(history.get("loss", [])))
    ]


def extend_history(history: dict[str, list[float]], rows: list[dict], phase: int) -> None:
    """Appends a phase's log rows to `history`, metric by metric, with `phase` per epoch.

    Example:
    >>> history = {}
    >>> extend_history(history, [{"epoch": 0, "loss": 0.9}], phase=1)
    >>> history
    {'loss': [0.9], 'phase': [1]}
    """
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(value)
        history.setdefault("phase", []).append(phase)


def phase_backup(run_dir: str, phase: str, replay: list[keras.callbacks.Callback] = ()) -> EpochBackup:
    """The `EpochBackup` of a phase, in `run_dir/backup/<phase>`."""
    return EpochBackup(os.path.join(run_dir, BACKUP_DIR, phase), replay=replay)


def phase_callbacks(
    phase: str,
    run_dir: str | None,
    best: BestCheckpoint,
    monitor: str,
    patience: int | None,
    resume: bool,
    averaged: bool,
) -> tuple[list[keras.callbacks.Callback], EpochLog | None]:
    """The phase's callbacks, in order: the averaged weights (if any) go into the model, then
    the backup commits an epoch before anything records it."""
    log = EpochLog(os.path.join(run_dir, LOG_FILE.format(phase=phase)), resume=resume) if run_dir else None
    found: list[keras.callbacks.Callback] = []
    best.backup = None
    if run_dir:
        best.backup = phase_backup(run_dir, phase, replay=[log, best])
    if averaged:
        found.append(AveragedWeights(best.backup))
    if run_dir:
        found += [best.backup, log]
    found.append(best)
    if patience is not None and monitor.startswith("val_"):
        found.append(ResumableEarlyStopping(monitor, patience=patience, log=log))
    if run_dir:
        found.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs", phase)))
    return found, log
