"""Tests of tfresnet.tuning.trials: trials read in the order they were created, a summary written whole."""

import csv
import json
import os

import pytest
from conftest import copy_search

from tfresnet.tuning import trials as trials_module


def test_the_summary_is_written_whole_or_not_at_all(hyperband_search, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    directory = copy_search(hyperband_search[0], tmp_path)
    before = (directory / "trials.png").read_bytes()

    def full_disk(figure, target, **kwargs):
        with open(target, "wb") as file:
            file.write(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(OSError):
        trials_module.write_summary(str(directory), trials_module.read_trials(str(directory)), "val_accuracy")
    assert (directory / "trials.png").read_bytes() == before
    assert not [name for name in os.listdir(directory) if name.startswith(".")]


def test_trials_are_read_in_the_order_they_were_created(tmp_path):
    """A resumed search with more trials pads ids wider: trial_010 comes after trial_09."""
    for trial_id in ("08", "09", "010", "011"):
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        trial = {"trial_id": trial_id, "status": "COMPLETED", "score": 0.5, "hyperparameters": {"values": {}}}
        (folder / "trial.json").write_text(json.dumps(trial))

    trials = trials_module.read_trials(str(tmp_path))
    assert [trial["trial_id"] for trial in trials] == ["08", "09", "010", "011"]


def test_the_summary_shows_the_values_of_the_objective(tmp_path):
    scores = {"0": 0.61, "1": 0.87, "2": None}
    for trial_id, score in scores.items():
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        values = {"head_units": 128, "dropout": 0.1, "learning_rate": 1e-3}
        status = "COMPLETED" if score is not None else "FAILED"
        trial = {"trial_id": trial_id, "status": status, "score": score}
        (folder / "trial.json").write_text(json.dumps({**trial, "hyperparameters": {"values": values}}))

    trials = trials_module.read_trials(str(tmp_path))
    trials_module.write_summary(str(tmp_path), trials, "val_mean_average_precision")
    with open(tmp_path / "trials.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["val_mean_average_precision"] for row in rows] == ["0.61", "0.87", ""]
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert (tmp_path / "trials.png").stat().st_size > 1000
