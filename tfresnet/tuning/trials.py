"""The trials of a search as recorded on disk, and their summary: `trials.csv` and `trials.png`."""

from __future__ import annotations

import csv

import numpy as np

from tfresnet import paths
from tfresnet.files import new_figure, read_json, save_figure, write_atomically
from tfresnet.tuning.tuner import OBJECTIVES, WORKER_FILE, trial_dirs

TRIALS_TABLE = "trials.csv"
TRIALS_PLOT = "trials.png"


def read_trials(project_dir: str) -> list[dict]:
    """The trials recorded in `project_dir`, in the order they were created.

    Each is a dict of `trial_id`, `status`, `score`, `values` (the hyperparameters),
    `message` (why it failed) and `worker` (who ran it, when recorded).

    Example:
        [trial["status"] for trial in read_trials("runs/tuning")]
        # ['COMPLETED', 'COMPLETED']
    """
    trials = []
    for trial_dir in trial_dirs(project_dir):
        trial = read_json(paths.join(trial_dir, "trial.json"))
        if trial is None:  # not written yet, or emptied by overwrite on a store that keeps folders
            continue
        worker = (read_json(paths.join(trial_dir, WORKER_FILE)) or {}).get("worker")
        trials.append(
            {
                "trial_id": trial["trial_id"],
                "status": trial["status"],
                "score": trial.get("score"),
                "values": trial["hyperparameters"]["values"],
                "message": trial.get("message"),
                "worker": worker,
            }
        )
    return trials


def _readable(value):
    # Hides float noise from stepped ranges: 0.30000000000000004 is written 0.3.
    return float(f"{value:.10g}") if isinstance(value, float) else value


def write_summary(project_dir: str, trials: list[dict], objective: str) -> None:
    """Writes `trials.csv` (one row per trial) and `trials.png` (score by trial).

    Example:
        write_summary("runs/tuning", read_trials("runs/tuning"), "val_accuracy")
    """
    _write_table(project_dir, trials, objective)
    _write_plot(project_dir, trials, objective)


def _write_table(project_dir: str, trials: list[dict], objective: str) -> None:
    searched = ["head_units", "dropout", "learning_rate"]
    if any("freeze_until" in trial["values"] for trial in trials):
        searched.append("freeze_until")
    rows = [
        [
            trial["trial_id"],
            trial["status"],
            trial["score"],
            *(_readable(trial["values"].get(name)) for name in searched),
            trial["values"].get("tuner/epochs"),
            trial["values"].get("tuner/trial_id"),
            trial["worker"],
        ]
        for trial in trials
    ]

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["trial_id", "status", objective, *searched, "epochs", "continues", "worker"])
            writer.writerows(rows)

    write_atomically(paths.join(project_dir, TRIALS_TABLE), write)


def _write_plot(project_dir: str, trials: list[dict], objective: str) -> None:
    scored = [
        (number, trial["score"])
        for number, trial in enumerate(trials, 1)
        if trial["status"] == "COMPLETED" and trial["score"] is not None
    ]
    figure = new_figure(6, 3.5, needed_by=f"The search's {TRIALS_PLOT}")
    axes = figure.add_subplot()
    if scored:
        numbers, scores = zip(*scored)
        running = np.maximum.accumulate if OBJECTIVES[objective] == "max" else np.minimum.accumulate
        axes.plot(numbers, scores, "o", label="trial")
        axes.step(numbers, running(np.array(scores)), where="post", label="best so far")
        axes.legend()
    axes.set_xlabel("trial")
    axes.set_ylabel(objective)
    axes.set_title(f"{len(scored)} of {len(trials)} trials completed")
    figure.tight_layout()
    save_figure(figure, paths.join(project_dir, TRIALS_PLOT), dpi=100)
