"""The files of a run in its `output_dir`: their names, the folder prepared for a run or a
resume, the history their logs hold, and each phase's callbacks that write them.

`best.weights.h5` and `best.json` (the best epoch), `log_head.csv` and `log_fine_tune.csv` (one
row per epoch), `backup/<phase>/` (the last finished epoch, see `EpochBackup`),
`head_phase.weights.h5` (the head phase's end, while the fine-tuning phase runs),
`training_done.json`, `config.json`, `run.json` (what the run is: `tfresnet.training.run_identity`) and
`run.lock` (held by the process running it: `run_lock`).

`output_dir` may be on any file system TensorFlow has (`gs://bucket/runs/flowers`; see
`tfresnet.paths`): each file is written whole there too, but a store has no file lock, so
nothing stops a second run in the same folder (`run_lock`).

Several workers (`MultiWorkerMirroredStrategy`): the chief writes `output_dir`; every other
worker writes into a private temporary folder on its own disk, removed at the end, and resumes
from a copy of the chief's committed state, never from state of its own; the workers check that
they all resume from the same point.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Iterator

import keras
import tensorflow as tf

from tfresnet import paths
from tfresnet.files import read_json, write_json
from tfresnet.models.classifier import compile_classifier, is_multi_label
from tfresnet.training.checkpoints import (
    BACKUP_STATE,
    BEST_STATE,
    AveragedWeights,
    BestCheckpoint,
    EpochBackup,
    EpochLog,
    ResumableEarlyStopping,
    read_log,
)
from tfresnet.training.distribute import is_chief
from tfresnet.training.run_identity import IDENTITY_FILE, ResumeError, compare
from tfresnet.training.settings import PHASES, RunSettings

# Files kept in `output_dir`.
BEST_WEIGHTS = "best.weights.h5"
HEAD_DONE_WEIGHTS = "head_phase.weights.h5"
DONE_FILE = "training_done.json"
CONFIG_FILE = "config.json"
BACKUP_DIR = "backup"
LOG_FILE = "log_{phase}.csv"
LOCK_FILE = "run.lock"
# What a run keeps to resume from: removed by a fresh start, copied to a worker on a resume.
STATE = (
    BACKUP_DIR,
    HEAD_DONE_WEIGHTS,
    BEST_WEIGHTS,
    BEST_STATE,
    DONE_FILE,
    *(LOG_FILE.format(phase=phase) for phase in PHASES),
)
# The locks this process holds: real path of the folder -> [lock file descriptor, holders].
_LOCKS: dict[str, list[int]] = {}


class RunDirInUse(ValueError):
    """Another live process runs in the output folder (it holds `run.lock`): bad input."""


@contextlib.contextmanager
def run_folder(
    output_dir: str | None, strategy: tf.distribute.Strategy, resume: bool, identity: dict | None = None
) -> Iterator[str | None]:
    """The folder this process writes the run's files into, for the length of the block.

    The chief: `output_dir`, under `run_lock`; without `resume` the previous run's state is
    removed and `identity` recorded in `run.json`, with `resume` it is compared first (see
    `check_resume`). Another worker of a multi-worker run: a private temporary folder, removed
    when the block ends, holding on `resume` a copy of the chief's committed state.

    Example:
        with run_folder("runs/flowers", strategy, resume=True, identity=identity) as folder:
            model.load_weights(paths.join(folder, BEST_WEIGHTS))
    """
    if not output_dir:
        yield None
        return
    if resume and identity is not None:
        check_resume(output_dir, identity)
    if not is_chief(strategy):
        private = tempfile.mkdtemp(prefix="tfresnet-worker-")
        try:
            if resume:
                copy_state(output_dir, private)
            yield private
        finally:
            paths.rmtree(private)
        return
    with run_lock(output_dir):
        if not resume:
            remove(output_dir, *STATE)
        identity_path = paths.join(output_dir, IDENTITY_FILE)
        if identity is not None and (not resume or read_json(identity_path) is None):
            write_json(identity_path, identity)
        yield output_dir


def check_resume(output_dir: str, identity: dict) -> None:
    """Raises a `ResumeError` unless `output_dir` holds no run or the run `identity` describes.

    Example:
        check_resume("runs/flowers", run_identity(data, backbone="resnet50", ...))
    """
    recorded = read_json(paths.join(output_dir, IDENTITY_FILE))
    if recorded is not None:
        compare(recorded, identity, output_dir)
    elif any(paths.exists(paths.join(output_dir, name)) for name in STATE):
        raise ResumeError(
            f"resume: the run in {output_dir!r} has no {IDENTITY_FILE} (what it was started with; "
            f"an older tfresnet wrote it), so it cannot be shown to be this run. Start afresh "
            f"with another output folder or without resume."
        )


def copy_state(output_dir: str, destination: str) -> None:
    """Copies the committed state of the run in `output_dir` (what `STATE` names) into `destination`.

    Example:
        copy_state("gs://bucket/runs/flowers", "/tmp/tfresnet-worker-1")
    """
    for name in STATE:
        source = paths.join(output_dir, name)
        if paths.isdir(source):
            paths.copy_tree(source, paths.join(destination, name))
        elif paths.exists(source):
            paths.copy_file(source, paths.join(destination, name))


@contextlib.contextmanager
def run_lock(output_dir: str) -> Iterator[None]:
    """Holds an exclusive lock on `output_dir/run.lock` (holding this process id) in the block.

    A second process raises `RunDirInUse` naming the holder's process id; the same process
    may take it again (the command holds it, then `fine_tune`). The system releases it when
    the process ends, however it ends (a SIGKILL too); the file goes when the block ends (a
    killed process leaves it behind, unlocked). Without `fcntl` (Windows) nothing is locked,
    nor on a store (`gs://...`: no file locks there): one run at a time per folder is then the
    user's to keep.

    Example:
        with run_lock("runs/flowers"):
            fine_tune(data, output_dir="runs/flowers")
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is None or not paths.is_local(output_dir):
        yield
        return
    key = os.path.realpath(output_dir)
    if key not in _LOCKS:
        os.makedirs(output_dir, exist_ok=True)
        _LOCKS[key] = [_locked_file(output_dir, fcntl), 0]
    _LOCKS[key][1] += 1
    try:
        yield
    finally:
        _LOCKS[key][1] -= 1
        if not _LOCKS[key][1]:
            handle = _LOCKS.pop(key)[0]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(output_dir, LOCK_FILE))  # still held: no one else has it
            os.close(handle)


def _locked_file(output_dir: str, fcntl) -> int:
    """Opens and locks `output_dir/run.lock`, writes this process id into it, returns its
    descriptor. The holder removes the file when it lets go, so a lock taken on a file that is
    no longer the one at that path (removed meanwhile) is dropped and taken again on the new one.
    """
    path = os.path.join(output_dir, LOCK_FILE)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunDirInUse(
                f"{output_dir!r} is in use by another run: process {holder} holds {path}. Wait for "
                f"it to end (or stop it), or pass another output folder."
            ) from None
        try:
            current = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            return handle
        os.close(handle)


def resume_point(run_dir: str) -> list[int]:
    """Where a run in `run_dir` resumes: `[finished, head phase done, last committed epoch of
    the head phase, of the fine-tuning phase]` (-1: none).

    Example:
        resume_point("runs/flowers")
        # [0, 1, 2, 0]
    """
    epochs = [
        (read_json(paths.join(run_dir, BACKUP_DIR, phase, BACKUP_STATE)) or {}).get("epoch", -1)
        for phase in PHASES
    ]
    done = [paths.exists(paths.join(run_dir, name)) for name in (DONE_FILE, HEAD_DONE_WEIGHTS)]
    return [int(flag) for flag in done] + [int(epoch) for epoch in epochs]


def check_workers_agree(strategy: tf.distribute.Strategy, run_dir: str, output_dir: str) -> None:
    """Raises a `ResumeError` unless every worker of a multi-worker run resumes from the same
    point (a collective all of them must reach), e.g. when `output_dir` is not one folder that
    all of them share."""
    point = resume_point(run_dir)

    @tf.function
    def gather():
        context = tf.distribute.get_replica_context()
        return context.all_gather(tf.constant([point], tf.int64), axis=0)

    seen = strategy.experimental_local_results(strategy.run(gather))[0].numpy().tolist()
    others = [other for other in seen if other != point]
    if others:
        raise ResumeError(
            f"resume: the workers see different runs in {output_dir!r} (this one "
            f"{_described(point)}, another {_described(others[0])}); every worker must see the "
            f"chief's output folder: put it on storage they all share."
        )


def _described(point: list[int]) -> str:
    finished, head_done, head, fine_tune = point
    if finished:
        return "a finished run"
    if fine_tune >= 0 or head_done:
        return f"fine-tuning epoch {fine_tune + 1} done" if fine_tune >= 0 else "the head phase done"
    return f"head epoch {head + 1} done" if head >= 0 else "no epoch done"


def remove(directory: str, *names: str) -> None:
    """Removes the files and folders `names` of `directory` that exist.

    Example:
    >>> remove("runs/flowers", BACKUP_DIR, HEAD_DONE_WEIGHTS)
    """
    for name in names:
        path = paths.join(directory, name)
        if paths.isdir(path):
            paths.rmtree(path)
        else:
            paths.remove(path)


def finished_run(
    model: keras.Model, run_dir: str, settings: RunSettings
) -> tuple[dict[str, list[float]], dict | None]:
    """The history and best epoch of a run that finished training, resumed for its report and
    export; `model` is compiled as after training and holds the best epoch's weights."""
    compile_classifier(
        model,
        learning_rate=settings.fine_tune_rate if settings.epochs else settings.learning_rate,
        label_smoothing=settings.label_smoothing,
        jit_compile=settings.jit_compile,
        multi_label=is_multi_label(model),
    )
    model.load_weights(paths.join(run_dir, BEST_WEIGHTS))
    best_epoch = (read_json(paths.join(run_dir, DONE_FILE)) or {}).get("best_epoch")
    return logged_history(run_dir), best_epoch


def recorded_settings(run_dir: str, settings: RunSettings, *, finished: bool) -> RunSettings:
    """The settings a resumed run goes on with, told what changed since its `config.json`.

    A run that has not finished goes on with `settings` (another number of epochs, say), and a
    warning lists what differs from the recorded ones; a finished run trains no more, and
    reports and exports as it was trained: with the recorded settings. Settings left at
    `"auto"` are not compared with what a machine resolved them to.

    Example:
    >>> recorded_settings("runs/flowers", RunSettings(epochs=20), finished=False).epochs
    20
    """
    recorded = read_json(paths.join(run_dir, CONFIG_FILE))
    if recorded is None:  # a run from before config.json was written at the start
        return settings
    recorded = RunSettings.from_json(recorded)
    changes = settings.changes(recorded)
    if changes:
        warnings.warn(
            f"{run_dir!r} was {'trained' if finished else 'started'} with other settings ("
            f"{'; '.join(changes)}): "
            + ("its report and export use the recorded ones." if finished else "it goes on with these."),
            stacklevel=3,
        )
    return recorded if finished else settings


def logged_history(run_dir: str) -> dict[str, list[float]]:
    """The history of both phases as their logs in `run_dir` hold it (see `extend_history`).

    Example:
        logged_history("runs/flowers")["phase"]
        # [1, 1, 1, 2, 2]
    """
    history: dict[str, list[float]] = {}
    for number, phase in enumerate(PHASES, 1):
        extend_history(history, read_log(paths.join(run_dir, LOG_FILE.format(phase=phase))), number)
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
    return EpochBackup(paths.join(run_dir, BACKUP_DIR, phase), replay=replay)


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
    log = EpochLog(paths.join(run_dir, LOG_FILE.format(phase=phase)), resume=resume) if run_dir else None
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
        found.append(keras.callbacks.TensorBoard(paths.join(run_dir, "logs", phase)))
    return found, log
