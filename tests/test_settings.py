"""Tests of tfresnet.training.settings: one typed object for a run's settings, from the
command's flags through `fine_tune` to `config.json`, and back on a resume."""

import dataclasses
import inspect
import json
import os

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet.cli.finetune_flags import build_parser, run_settings
from tfresnet.training.settings import RunSettings

TINY = dict(backbone="resnet-test", weights=None, head_epochs=1, epochs=0, seed=0, verbose=0)


def _data():
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    return tfresnet.from_arrays(images, np.arange(12) % 3, image_size=32, val_split=0, batch_size=6)


def test_the_defaults_are_one_fact_for_fine_tune_and_the_command():
    parameters = inspect.signature(tfresnet.fine_tune).parameters
    for field in dataclasses.fields(RunSettings):
        assert parameters[field.name].default == field.default, field.name
    assert run_settings(build_parser().parse_args(["--data-dir", "photos/"])) == RunSettings()


def test_settings_go_to_json_and_come_back_without_the_runs_facts():
    settings = RunSettings(epochs=4, ema=True, freeze_until="conv4", jit_compile=False)
    recorded = json.loads(json.dumps({**settings.to_json(), "num_train": 10, "best_epoch": None}))
    assert RunSettings.from_json(recorded) == settings
    resolved = {**recorded, "mixed_precision": False}  # what "auto" became on a CPU
    assert RunSettings.from_json(resolved) == dataclasses.replace(settings, mixed_precision="off")
    assert settings.fine_tune_rate == pytest.approx(1e-4) and settings.averaged_phase == "fine_tune"
    assert RunSettings(epochs=0, ema=True).averaged_phase == "head" and RunSettings().averaged_phase is None
    assert RunSettings(epochs=20).changes(settings) == [
        "epochs: 4 -> 20",
        "freeze_until: 'conv4' -> 0",
        "ema: True -> False",
    ]  # jit_compile: "auto" now, not compared with the False a machine resolved it to
    assert RunSettings(jit_compile=True).changes(settings) == [
        "epochs: 4 -> 10",
        "freeze_until: 'conv4' -> 0",
        "ema: True -> False",
        "jit_compile: False -> True",
    ]
    with pytest.raises(ValueError, match="class_weight must be one of"):
        RunSettings(class_weight="inverse").check()


def test_a_run_records_its_settings_before_training_so_a_killed_one_has_them(tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        tfresnet.fine_tune(_data(), output_dir=str(tmp_path), label_smoothing=0.2, **TINY)
    with open(tmp_path / "config.json") as file:
        recorded = json.load(file)
    assert RunSettings.from_json(recorded).label_smoothing == 0.2 and recorded["num_train"] == 12


def test_a_resumed_run_says_what_changed_and_a_finished_one_keeps_what_it_was_trained_with(tmp_path):
    data = _data()
    first = tfresnet.fine_tune(data, output_dir=str(tmp_path), label_smoothing=0.2, **TINY)
    changed = r"label_smoothing: 0.2 -> 0.0\): its report and export use the recorded ones"
    with pytest.warns(UserWarning, match=changed):
        again = tfresnet.fine_tune(data, output_dir=str(tmp_path), resume=True, label_smoothing=0.0, **TINY)
    assert again.config["label_smoothing"] == 0.2 == again.model.loss.label_smoothing
    assert again.config["best_epoch"] == first.config["best_epoch"]
    with open(os.path.join(tmp_path, "config.json")) as file:
        assert json.load(file)["label_smoothing"] == 0.2
