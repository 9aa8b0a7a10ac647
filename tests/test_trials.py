"""Tests of tfresnet.tuning.trials: trials read in the order they were created, a summary written whole."""

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
