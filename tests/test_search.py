"""Tests of tfresnet.tuning.search: tiny searches on 32 px images, continued, refused and shared."""

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, RecordTraining, copy_search, free_ports, ram_files, take_all

from tfresnet import paths, tuning
from tfresnet.data import ImageData
from tfresnet.files import read_json
from tfresnet.models.classifier import build_classifier
from tfresnet.models.multi_label import LabelWeightedCrossentropy, label_weights
from tfresnet.training.settings import class_weights
from tfresnet.tuning import ClassifierHyperModel, HeadHyperModel, search

# `tfresnet.tuning.search` is the function; the module holds what the tests patch.
search_module = importlib.import_module("tfresnet.tuning.search")
features_module = importlib.import_module("tfresnet.tuning.features")


def read_trials(directory) -> list[dict]:
    with paths.open_file(paths.join(directory, "trials.csv"), newline="") as file:
        return list(csv.DictReader(file))


def check_in_space(best: dict) -> None:
    assert best["head_units"] is None or best["head_units"] in tuning.HEAD_UNITS[1:]
    assert tuning.DROPOUT_RANGE[0] <= best["dropout"] <= tuning.DROPOUT_RANGE[1]
    assert tuning.LEARNING_RATE_RANGE[0] <= best["learning_rate"] <= tuning.LEARNING_RATE_RANGE[1]


def record_fit_calls(monkeypatch, hypermodel_class) -> list[dict]:
    """Records the keyword arguments of every `hypermodel_class.fit` a trial makes (and its
    positional ones, as `"args"`)."""
    calls = []
    fit = hypermodel_class.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        calls.append({**kwargs, "args": args})
        return fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(hypermodel_class, "fit", recording_fit)
    return calls


class RecordBackboneKernels(keras.callbacks.Callback):
    """Records a conv5 and a conv4 kernel of the backbone when a trial's fit starts and ends."""

    LAYERS = ("conv5_block1_1_conv", "conv4_block1_3_conv")
    record = []

    def on_train_begin(self, logs=None):
        self.record.append(self.kernels())

    def on_train_end(self, logs=None):
        self.record.append(self.kernels())

    def kernels(self) -> dict:
        backbone = self.model.get_layer("backbone")
        return {name: keras.ops.convert_to_numpy(backbone.get_layer(name).kernel) for name in self.LAYERS}


# === Before searching ===


def test_freeze_choices_are_checked_against_the_table_without_building(monkeypatch):
    built = []

    def build(*args, **kwargs):
        built.append(kwargs)
        return build_classifier(*args, **kwargs)

    monkeypatch.setattr(search_module, "build_classifier", build)
    check = search_module._check_freeze_choices
    check(("none", "conv4", "conv5", "143", "-10"), backbone="resnet50", image_size=224)
    assert built == []
    with pytest.raises(ValueError, match=r"until=176 is out of range: the backbone has 175 layers"):
        check(("176",), backbone="resnet50", image_size=224)
    assert built == []
    check(("conv5", "conv4_block1"), backbone="resnet-test", image_size=32)  # a block: built to be checked
    assert [kwargs["weights"] for kwargs in built] == [None]


# === Searches ===


def test_search_returns_values_in_space_and_writes_the_summary(hyperband_search):
    directory, best, _ = hyperband_search
    check_in_space(best)
    assert set(best) == {"head_units", "dropout", "learning_rate"}
    with open(directory / "best_hyperparameters.json") as file:
        assert json.load(file) == best
    assert (directory / "trials.png").stat().st_size > 1000
    rows = read_trials(directory)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4
    assert {row["worker"] for row in rows} == {"tuner0"}
    top = max(rows, key=lambda row: float(row["val_accuracy"]))
    assert best["head_units"] == (int(top["head_units"]) or None)
    assert best["learning_rate"] == pytest.approx(float(top["learning_rate"]))
    with open(directory / "search.json") as file:
        settings = json.load(file)
    assert (settings["label_smoothing"], settings["class_weight"]) == (0.1, "balanced")


def test_hyperband_continues_a_trial_with_its_optimizer_state(hyperband_search):
    directory, _, record = hyperband_search
    # Three 1-epoch trials, then the best of them continued to 3 epochs.
    rows = read_trials(directory)
    assert [row["epochs"] for row in rows] == ["1", "1", "1", "3"]
    parent = int(rows[3]["continues"])
    assert float(rows[parent]["val_accuracy"]) == max(float(row["val_accuracy"]) for row in rows[:3])
    _, parent_steps, parent_kernel = record[2 * parent + 1]  # the parent's end
    _, steps, kernel = record[6]  # the continuation's start
    assert steps == parent_steps == 3  # 24 training images in batches of 8: Adam's step kept
    np.testing.assert_array_equal(kernel, parent_kernel)
    assert not list(directory.glob("trial_*/continuation.npz"))


def test_resuming_a_finished_search_runs_no_new_trial(hyperband_search, data, tmp_path):
    finished, best, _ = hyperband_search
    directory = copy_search(finished, tmp_path)
    arguments = {"tune_epochs": 3, "seed": 0, "directory": directory, "verbose": 0, **TINY}
    RecordTraining.record = []
    assert search(data, max_trials=4, callbacks=[RecordTraining()], **arguments) == best
    assert RecordTraining.record == []
    assert len(read_trials(directory)) == 4

    check_in_space(search(data, max_trials=5, callbacks=[RecordTraining()], **arguments))
    assert len(RecordTraining.record) == 2  # one more trial: its begin and end
    assert len(read_trials(directory)) == 5


def test_a_search_on_a_store_resumes_with_its_trials_and_its_feature_cache(data, ram_dir, monkeypatch):
    directory = paths.join(ram_dir, "search")
    arguments = {"tuner": "random", "tune_epochs": 1, "seed": 0, "directory": directory, "verbose": 0, **TINY}
    RecordTraining.record = []
    best = search(data, max_trials=2, callbacks=[RecordTraining()], **arguments)
    check_in_space(best)
    written = ram_files(directory)
    assert {"search.json", "oracle.json", "trials.csv", "trials.png", "trial_0/trial.json"} <= set(written)
    assert {"trial_1/trial.json", "trial_1/worker.json"} <= set(written)
    assert len([name for name in written if name.startswith("features-")]) == 1
    assert read_json(paths.join(directory, "best_hyperparameters.json")) == best
    assert len(RecordTraining.record) == 4  # two trials: their begins and ends

    def not_again(*args, **kwargs):
        raise AssertionError("the features were computed again")

    with monkeypatch.context() as patch:  # resumed: the trials and the cached features are reused
        patch.setattr(features_module, "_feature_extractor", not_again)
        RecordTraining.record = []
        assert search(data, max_trials=2, callbacks=[RecordTraining()], **arguments) == best
        assert RecordTraining.record == []
        check_in_space(search(data, max_trials=3, callbacks=[RecordTraining()], **arguments))
        assert len(RecordTraining.record) == 2
    assert [row["trial_id"] for row in read_trials(directory)] == ["0", "1", "2"]

    search(data, max_trials=1, overwrite=True, **arguments)  # the search's own files, afresh
    assert [row["trial_id"] for row in read_trials(directory)] == ["0"]
    assert not paths.exists(paths.join(directory, "trial_2", "trial.json"))


@pytest.mark.parametrize(
    "changed, message",
    [
        ({"tune_epochs": 2}, r"tune_epochs: 3 -> 2.*overwrite=True.*--overwrite"),
        ({"tuner": "random"}, r"tuner: \"hyperband\" -> \"random\""),
        ({"label_smoothing": 0.2}, r"label_smoothing: 0.1 -> 0.2"),
        ({"class_weight": "none"}, r"class_weight: \"balanced\" -> \"none\""),
    ],
)
def test_changed_settings_are_refused(hyperband_search, data, changed, message):
    directory = hyperband_search[0]
    arguments = {"tune_epochs": 3, "seed": 0, "directory": directory, "verbose": 0, **TINY, **changed}
    with pytest.raises(ValueError, match=message):
        search(data, **arguments)  # refused before anything in the directory changes


def test_a_changed_space_is_refused_unless_overwrite(hyperband_search, data, tmp_path, monkeypatch):
    directory = copy_search(hyperband_search[0], tmp_path)
    arguments = {"seed": 0, "directory": directory, "verbose": 0, **TINY}
    monkeypatch.setattr(tuning.hypermodels, "HEAD_UNITS", (0, 8, 16))
    with pytest.raises(ValueError, match=r"space: .*overwrite=True"):
        search(data, tune_epochs=3, **arguments)
    best = search(data, tuner="random", max_trials=1, tune_epochs=1, overwrite=True, **arguments)
    assert best["head_units"] in (None, 8, 16)
    with open(directory / "search.json") as file:
        assert json.load(file)["space"][0]["config"]["values"] == [0, 8, 16]
    assert len(read_trials(directory)) == 1


def test_overwrite_deletes_only_the_searchs_own_files(hyperband_search, data, tmp_path):
    """With --tune-dir equal to --output-dir, the run's other files (the export too) stay."""
    directory = copy_search(hyperband_search[0], tmp_path)
    kept = {"notes.txt": "mine", "report.json": "{}", "config.json": "{}"}
    for name, text in kept.items():
        (directory / name).write_text(text)
    (directory / "saved_model" / "1").mkdir(parents=True)
    (directory / "saved_model" / "1" / "saved_model.pb").write_bytes(b"model")
    search(
        data,
        tuner="random",
        max_trials=1,
        tune_epochs=1,
        seed=0,
        directory=directory,
        overwrite=True,
        verbose=0,
        **TINY,
    )
    for name, text in kept.items():
        assert (directory / name).read_text() == text
    assert (directory / "saved_model" / "1" / "saved_model.pb").read_bytes() == b"model"
    assert len(read_trials(directory)) == 1 and len(list(directory.glob("trial_*"))) == 1
    assert (
        not (directory / "tuner0.json").exists() or json.loads((directory / "tuner0.json").read_text()) == {}
    )


def test_a_half_written_settings_file_is_named(data, tmp_path):
    (tmp_path / "search.json").write_text('{"tuner": "hyperb')
    with pytest.raises(ValueError, match=r"search\.json.* is not valid JSON"):
        search(data, directory=tmp_path, verbose=0, **TINY)


class RecordLoss(keras.callbacks.Callback):
    """Records the label smoothing of each trial's loss."""

    record = []

    def on_train_begin(self, logs=None):
        self.record.append(self.model.loss.label_smoothing)


@pytest.mark.parametrize("class_weight, label_smoothing", [("balanced", 0.1), ("none", 0.3)])
def test_trials_get_the_class_weights_and_the_label_smoothing(
    data, tmp_path, monkeypatch, class_weight, label_smoothing
):
    fits = record_fit_calls(monkeypatch, HeadHyperModel)
    RecordLoss.record = []
    search(
        data,
        tuner="random",
        max_trials=2,
        tune_epochs=1,
        seed=0,
        class_weight=class_weight,
        label_smoothing=label_smoothing,
        directory=tmp_path / "search",
        callbacks=[RecordLoss()],
        verbose=0,
        **TINY,
    )
    weights = class_weights(data.class_counts, class_weight)
    assert weights is None if class_weight == "none" else len(set(weights.values())) == 2
    assert [fit["class_weight"] for fit in fits] == [weights, weights]
    assert RecordLoss.record == [label_smoothing, label_smoothing]
    with open(tmp_path / "search" / "search.json") as file:
        settings = json.load(file)
    assert (settings["class_weight"], settings["label_smoothing"]) == (class_weight, label_smoothing)


def test_bayesian_search_reuses_the_feature_cache(hyperband_search, data, tmp_path):
    pytest.importorskip("sklearn")
    (cache,) = hyperband_search[0].glob("features-*.npz")
    directory = tmp_path / "search"
    directory.mkdir()
    shutil.copy(cache, directory)
    copied_at = (directory / cache.name).stat().st_mtime_ns
    best = search(
        data,
        tuner="bayesian",
        max_trials=2,
        tune_epochs=1,
        seed=0,
        objective="val_loss",
        directory=directory,
        verbose=0,
        **TINY,
    )
    check_in_space(best)
    rows = read_trials(directory)
    assert len(rows) == 2 and "val_loss" in rows[0]
    assert best["learning_rate"] == pytest.approx(
        float(min(rows, key=lambda row: float(row["val_loss"]))["learning_rate"])
    )
    assert (directory / cache.name).stat().st_mtime_ns == copied_at  # read, not computed again


def test_head_trials_share_a_session_and_train_as_in_fresh_ones(
    hyperband_search, data, tmp_path, monkeypatch
):
    """A fresh Keras session per head trial (a garbage collection each) changes no number."""
    (cache,) = hyperband_search[0].glob("features-*.npz")
    collections = []
    clear_session = keras.backend.clear_session

    def recording_clear_session(free_memory=True):
        collections.append(free_memory)
        clear_session(free_memory=free_memory)

    monkeypatch.setattr(keras.backend, "clear_session", recording_clear_session)
    runs = []
    for per_session in (1, search_module.HEAD_TRIALS_PER_SESSION):
        monkeypatch.setattr(search_module, "HEAD_TRIALS_PER_SESSION", per_session)
        directory = tmp_path / f"per_session_{per_session}"
        directory.mkdir()
        shutil.copy(cache, directory)  # the same features, not computed again
        collections.clear()
        RecordTraining.record = []
        arguments = {"tuner": "random", "max_trials": 2, "tune_epochs": 1, "seed": 0, "verbose": 0}
        search(data, directory=directory, callbacks=[RecordTraining()], **arguments, **TINY)
        runs.append(
            {
                "collections": collections.count(True),
                "scores": [row["val_accuracy"] for row in read_trials(directory)],
                "kernels": [kernel for _, _, kernel in RecordTraining.record],  # each trial's start, end
            }
        )
    fresh, shared = runs
    assert fresh["collections"] == shared["collections"] + 2  # one per trial
    assert shared["collections"] == 1  # after reading the features
    assert shared["scores"] == fresh["scores"]
    assert len(shared["kernels"]) == len(fresh["kernels"]) == 4
    for shared_kernel, fresh_kernel in zip(shared["kernels"], fresh["kernels"]):
        np.testing.assert_array_equal(shared_kernel, fresh_kernel)


def test_full_model_search_trains_the_backbone_from_the_chosen_stage(data, tmp_path, monkeypatch):
    fits = record_fit_calls(monkeypatch, ClassifierHyperModel)
    RecordBackboneKernels.record = []
    best = search(
        data,
        tuner="random",
        max_trials=1,
        tune_epochs=1,
        seed=0,
        freeze_until_choices=["conv5"],
        directory=tmp_path / "search",
        callbacks=[RecordBackboneKernels()],
        verbose=0,
        **TINY,
    )
    check_in_space(best)
    assert best["freeze_until"] == "conv5"
    (row,) = read_trials(tmp_path / "search")
    assert row["freeze_until"] == "conv5"
    with open(tmp_path / "search" / "search.json") as file:
        assert json.load(file)["fast"] is False

    begin, end = RecordBackboneKernels.record
    assert not np.allclose(begin["conv5_block1_1_conv"], end["conv5_block1_1_conv"])  # trained
    np.testing.assert_array_equal(begin["conv4_block1_3_conv"], end["conv4_block1_3_conv"])  # frozen
    (fit,) = fits
    assert fit["class_weight"] == class_weights(data.class_counts, "balanced")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"tuner": "grid"}, r"one of \('hyperband', 'random', 'bayesian'\). Received: tuner='grid'"),
        ({"objective": "accuracy"}, r"Received: objective='accuracy'"),
        ({"max_trials": 0}, r"Received: max_trials=0"),
        ({"label_smoothing": 1.0}, r"Received: label_smoothing=1.0"),
        ({"class_weight": "inverse"}, r"Received: class_weight='inverse'"),
        ({"backbone": "resnet18"}, r"Unknown backbone.*Received: backbone='resnet18'"),
        ({"freeze_until_choices": "conv5"}, r"a list of .*Received: freeze_until_choices='conv5'"),
        ({"freeze_until_choices": [None, 1.5]}, r"Received: 1.5 in"),
        ({"freeze_until_choices": [None, 200]}, r"until=200 is out of range"),
        ({"freeze_until_choices": [None, "conv9"]}, r"No backbone layer is named 'conv9'"),
        ({"distribution_strategy": "mirrored"}, r"Received: distribution_strategy='mirrored'"),
    ],
)
def test_invalid_arguments_are_refused(data, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        search(data, directory=tmp_path / "search", **{**TINY, **arguments})
    assert not (tmp_path / "search").exists()


def test_multi_worker_strategy_and_data_without_validation_are_refused(data, tmp_path):
    with pytest.raises(ValueError, match="single-machine strategies.*KERASTUNER_ORACLE_IP"):
        search(
            data,
            directory=tmp_path,
            distribution_strategy=tf.distribute.MultiWorkerMirroredStrategy(),
            **TINY,
        )
    no_validation = ImageData(data.train, None, ["a", "b"], [1, 1], 2, 0, 32)
    with pytest.raises(ValueError, match="val_split > 0"):
        search(no_validation, directory=tmp_path, **TINY)


# === Multi-label data ===


class RecordRecipe(keras.callbacks.Callback):
    """Records each trial's output activation, its loss, and its validation mean average
    precision at every epoch."""

    record = []

    def on_train_begin(self, logs=None):
        activation = self.model.get_layer("predictions").activation
        self.record.append({"activation": activation, "loss": self.model.loss, "scores": []})

    def on_epoch_end(self, epoch, logs=None):
        self.record[-1]["scores"].append(logs["val_mean_average_precision"])


def trial_scores(directory) -> list[float]:
    """The score of each trial as keras-tuner recorded it, in the order of the trials."""
    paths = sorted(directory.glob("trial_*/trial.json"))
    return [json.loads(path.read_text())["score"] for path in paths]


def test_a_multi_label_search_ranks_trials_by_mean_average_precision(multi_label_data, tmp_path, monkeypatch):
    fits = record_fit_calls(monkeypatch, HeadHyperModel)
    RecordRecipe.record = []
    directory = tmp_path / "search"
    arguments = {"tuner": "random", "max_trials": 2, "tune_epochs": 2, "seed": 0, "directory": directory}
    best = search(multi_label_data, callbacks=[RecordRecipe()], verbose=0, **arguments, **TINY)

    check_in_space(best)
    rows = read_trials(directory)
    assert [row["status"] for row in rows] == ["COMPLETED"] * 2
    scores = trial_scores(directory)
    assert [float(row["val_mean_average_precision"]) for row in rows] == pytest.approx(scores)
    for score, trial in zip(scores, RecordRecipe.record):  # a trial's best epoch: the highest
        assert score == pytest.approx(max(trial["scores"]))
    top = rows[int(np.argmax(scores))]
    assert best["head_units"] == (int(top["head_units"]) or None)
    assert best["learning_rate"] == pytest.approx(float(top["learning_rate"]))
    with open(directory / "search.json") as file:
        settings = json.load(file)
    assert (settings["objective"], settings["multi_label"]) == ("val_mean_average_precision", True)

    expected = label_weights(multi_label_data.class_counts, multi_label_data.num_train, "balanced")
    assert len(set(expected["positive"])) > 1  # the labels are not equally frequent: weights differ
    assert len(RecordRecipe.record) == 2
    for trial in RecordRecipe.record:
        assert trial["activation"] is keras.activations.sigmoid
        assert type(trial["loss"]) is LabelWeightedCrossentropy
        assert trial["loss"].positive_weights == pytest.approx(expected["positive"])
        assert trial["loss"].negative_weights == pytest.approx(expected["negative"])
        assert trial["loss"].label_smoothing == 0.1
    assert [fit["class_weight"] for fit in fits] == [None, None]  # weighed per label, in the loss
    _, labels = fits[0]["args"]
    assert labels.dtype == np.float32 and labels.shape == (multi_label_data.num_train, 3)
    np.testing.assert_array_equal(labels, take_all(multi_label_data.train_evaluation)[1])


def test_a_multi_label_full_model_search_feeds_the_multi_hot_rows(multi_label_data, tmp_path, monkeypatch):
    fits = record_fit_calls(monkeypatch, ClassifierHyperModel)
    RecordRecipe.record = []
    best = search(
        multi_label_data,
        tuner="random",
        max_trials=1,
        tune_epochs=1,
        seed=0,
        class_weight="none",
        objective="val_loss",
        freeze_until_choices=["conv5"],
        directory=tmp_path / "search",
        callbacks=[RecordRecipe()],
        verbose=0,
        **TINY,
    )
    assert best["freeze_until"] == "conv5"
    (trial,) = RecordRecipe.record
    assert trial["activation"] is keras.activations.sigmoid
    assert type(trial["loss"]) is LabelWeightedCrossentropy
    assert trial["loss"].positive_weights is None and trial["loss"].negative_weights is None
    (fit,) = fits
    assert fit["class_weight"] is None
    (train,) = fit["args"]
    assert train is multi_label_data.train  # fed as it is: no one-hot mapping
    (row,) = read_trials(tmp_path / "search")
    assert float(row["val_loss"]) == pytest.approx(trial_scores(tmp_path / "search")[0])


@pytest.mark.parametrize(
    "multi_label, objective, message",
    [
        (False, "val_mean_average_precision", r"one of \('val_accuracy', 'val_loss'\) for single-label data"),
        (True, "val_accuracy", r"one of \('val_mean_average_precision', 'val_loss'\) for multi-label data"),
    ],
)
def test_an_objective_of_the_other_kind_of_data_is_refused(
    data, multi_label_data, tmp_path, multi_label, objective, message
):
    chosen = multi_label_data if multi_label else data
    with pytest.raises(ValueError, match=message) as raised:
        search(chosen, objective=objective, directory=tmp_path / "search", **TINY)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "search").exists()


def test_multi_label_data_refuses_an_unknown_class_weight(multi_label_data, tmp_path):
    with pytest.raises(ValueError, match=r"^class_weight must be one of .*Received: class_weight='inverse'$"):
        search(multi_label_data, class_weight="inverse", directory=tmp_path / "search", **TINY)
    assert not (tmp_path / "search").exists()


def test_a_single_label_search_refuses_multi_label_data(hyperband_search, data, multi_label_data, tmp_path):
    directory = copy_search(hyperband_search[0], tmp_path)
    arguments = {"tune_epochs": 3, "seed": 0, "directory": directory, "verbose": 0, **TINY}
    before = (directory / "search.json").read_text()
    with pytest.raises(ValueError, match=r"multi_label: false -> true.*overwrite=True") as raised:
        search(multi_label_data, max_trials=4, **arguments)
    assert "\n" not in str(raised.value)
    assert (directory / "search.json").read_text() == before

    # A settings file written before multi-label data existed is a single-label search's.
    settings = json.loads(before)
    del settings["multi_label"]
    (directory / "search.json").write_text(json.dumps(settings))
    assert search(data, max_trials=4, **arguments) == hyperband_search[1]
    assert json.loads((directory / "search.json").read_text())["multi_label"] is False
    with pytest.raises(ValueError, match=r"multi_label: false -> true"):
        search(multi_label_data, max_trials=4, **arguments)


# === Several processes ===


SEARCH_PROCESS = textwrap.dedent("""
    import json, os, sys, time

    import keras

    from tfresnet.data import from_folder
    from tfresnet.tuning import search

    folder, directory, barrier = sys.argv[1:]


    class InStep(keras.callbacks.Callback):
        # Each worker starts and ends its n-th trial with the other's n-th: both workers run
        # trials, and both ask for a trial after the last at once (the chief, once told the trials
        # are done, checks that no worker is left every 20 s).
        trials = 0  # of this process; keras-tuner gives each trial a copy of the callback

        def on_train_begin(self, logs=None):
            InStep.trials += 1
            self._wait_for_the_other("begin")

        def on_train_end(self, logs=None):
            self._wait_for_the_other("end")

        def _wait_for_the_other(self, event):
            name = f"{event}-{InStep.trials}"
            open(os.path.join(barrier, f"{name}-{os.environ['KERASTUNER_TUNER_ID']}"), "w").close()
            deadline = time.time() + 240
            while sum(mark.startswith(name + "-") for mark in os.listdir(barrier)) < 2:
                if time.time() > deadline:
                    return
                time.sleep(0.05)


    data = from_folder(folder, image_size=32, batch_size=8, val_split=0.3, augmentation="none", seed=0)
    best = search(data, backbone="resnet-test", weights=None, tuner="random", max_trials=4, tune_epochs=1,
                  seed=0, directory=directory, callbacks=[InStep()], verbose=0)
    print("BEST " + json.dumps(best))
""")


@pytest.mark.slow
def test_chief_and_two_workers_share_the_trials(make_image_folder, tmp_path):
    folder = make_image_folder(images_per_class=10)
    script = tmp_path / "search_process.py"
    script.write_text(SEARCH_PROCESS)
    directory, barrier = tmp_path / "search", tmp_path / "barrier"
    barrier.mkdir()
    (port,) = free_ports()
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {
            **os.environ,
            "KERASTUNER_TUNER_ID": tuner_id,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, str(script), folder, str(directory), str(barrier)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        outputs = {tuner_id: process.communicate(timeout=420)[0] for tuner_id, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id} failed:\n{outputs[tuner_id][-3000:]}"
    results = {tuner_id: json.loads(output.rsplit("BEST ", 1)[1]) for tuner_id, output in outputs.items()}
    for best in results.values():
        check_in_space(best)

    rows = read_trials(directory)
    assert len(rows) == 4 and all(row["status"] == "COMPLETED" for row in rows)
    ran = [row["worker"] for row in rows]
    assert ran.count("tuner0") >= 1 and ran.count("tuner1") >= 1 and len(ran) == 4
    with open(directory / "best_hyperparameters.json") as file:
        assert json.load(file) == results["chief"]
