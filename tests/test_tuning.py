"""Tests of tfresnet.tuning: search spaces built without training, tiny searches on 32 px images."""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import tuning
from tfresnet.data import ImageData
from tfresnet.tuning import ClassifierHyperModel, HeadHyperModel, extract_features, search


def fixed_hp(**values) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def read_trials(directory) -> list[dict]:
    with open(os.path.join(directory, "trials.csv"), newline="") as file:
        return list(csv.DictReader(file))


def check_in_space(best: dict) -> None:
    assert best["head_units"] is None or best["head_units"] in tuning.HEAD_UNITS[1:]
    assert tuning.DROPOUT_RANGE[0] <= best["dropout"] <= tuning.DROPOUT_RANGE[1]
    assert tuning.LEARNING_RATE_RANGE[0] <= best["learning_rate"] <= tuning.LEARNING_RATE_RANGE[1]


class RecordTraining(keras.callbacks.Callback):
    """Records each trial's optimizer step and `predictions` kernel when its fit starts and ends.

    The record is a class attribute, so it survives the copy the search makes for each trial.
    """

    record = []

    def on_train_begin(self, logs=None):
        self.record.append(("begin", *self.state()))

    def on_train_end(self, logs=None):
        self.record.append(("end", *self.state()))

    def state(self):
        kernel = self.model.get_layer("predictions").kernel
        return int(self.model.optimizer.iterations), keras.ops.convert_to_numpy(kernel)


# === Search spaces, built without training ===


def test_head_hypermodel_default_values_build_the_default_head():
    model = HeadHyperModel(3, feature_dim=64).build(keras_tuner.HyperParameters())
    assert [layer.name for layer in model.layers] == ["features", "output_dropout", "predictions"]
    assert model.input_shape == (None, 64)
    assert model.output_shape == (None, 3)
    assert model.get_layer("output_dropout").rate == pytest.approx(tuning.DEFAULT_DROPOUT)
    assert float(model.optimizer.learning_rate) == pytest.approx(tuning.DEFAULT_LEARNING_RATE)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"


def test_head_hypermodel_builds_a_hidden_layer_and_no_dropout_at_zero():
    hp = fixed_hp(head_units=128, dropout=0.0, learning_rate=3e-4)
    model = HeadHyperModel(5, feature_dim=32).build(hp)
    assert [layer.name for layer in model.layers] == ["features", "head_dense", "predictions"]
    assert model.get_layer("head_dense").units == 128
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)


def test_head_hypermodel_declares_the_space_with_defaults():
    hp = keras_tuner.HyperParameters()
    HeadHyperModel(3).declare_hyperparameters(hp)
    assert [p.name for p in hp.space] == ["head_units", "dropout", "learning_rate"]
    assert list(hp.space[0].values) == list(tuning.HEAD_UNITS)
    assert hp.values == {"head_units": 0, "dropout": 0.2, "learning_rate": 1e-3}


def test_classifier_hypermodel_default_values_freeze_the_backbone():
    model = ClassifierHyperModel(3, weights=None, image_size=32).build(keras_tuner.HyperParameters())
    names = ["images", "preprocessing", "backbone", "pooler", "output_dropout", "predictions"]
    assert [layer.name for layer in model.layers] == names
    assert [v.path for v in model.trainable_variables] == ["predictions/kernel", "predictions/bias"]
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_classifier_hypermodel_searches_where_to_freeze():
    hypermodel = ClassifierHyperModel(3, weights=None, image_size=32, freeze_until_choices=[None, "conv5"])
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert hp.get("freeze_until") == "none"
    assert list(hp.space[-1].values) == ["none", "conv5"]
    hp.values["freeze_until"] = "conv5"
    model = hypermodel.build(hp)
    trainable = {v.path.split("/")[0] for v in model.get_layer("backbone").trainable_variables}
    assert trainable and all(name.startswith("conv5") for name in trainable)


# === Fast path ===


def take_all(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_fast_path_trains_the_same_head_as_the_full_frozen_model(tuning_data, tmp_path):
    # The same images in a fixed order for both paths, so only the path differs.
    train, validation = take_all(tuning_data.train), take_all(tuning_data.validation)
    data = ImageData(
        train=tf.data.Dataset.from_tensor_slices(train).batch(8),
        validation=tf.data.Dataset.from_tensor_slices(validation).batch(8),
        class_names=tuning_data.class_names,
        class_counts=tuning_data.class_counts,
        num_train=len(train[1]),
        num_validation=len(validation[1]),
        image_size=32,
    )
    features = extract_features(data, weights=None, seed=3, cache_dir=tmp_path)
    np.testing.assert_array_equal(features.train_labels, train[1])
    assert features.train_features.shape == (len(train[1]), 2048)
    assert features.batch_size == 8
    cached = extract_features(data, weights=None, seed=3, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.validation_features, features.validation_features)
    assert len(list(tmp_path.glob("features-*.npz"))) == 1

    hp = fixed_hp(head_units=16, dropout=0.3, learning_rate=3e-3)
    head = HeadHyperModel(3, feature_dim=features.feature_dim, seed=3)
    head_model = head.build(hp)
    fast = head.fit(
        hp,
        head_model,
        features.train_features,
        features.train_labels,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(features.validation_features, features.validation_labels),
    ).history
    full = ClassifierHyperModel(3, weights=None, image_size=32, seed=3)
    full_model = full.build(hp)
    slow = full.fit(
        hp, full_model, data.train, epochs=2, shuffle=False, validation_data=data.validation, verbose=0
    ).history

    assert max(fast["val_accuracy"]) > 1 / 3  # it learns something
    np.testing.assert_allclose(fast["val_accuracy"], slow["val_accuracy"], atol=1e-6)
    np.testing.assert_allclose(fast["val_loss"], slow["val_loss"], rtol=1e-3)
    for name in ("head_dense", "predictions"):
        np.testing.assert_allclose(
            head_model.get_layer(name).kernel, full_model.get_layer(name).kernel, atol=1e-4
        )


# === Searches ===


@pytest.fixture(scope="module")
def hyperband_search(tuning_folder, tmp_path_factory):
    """A finished default-tuner search, run once: `(directory, best, RecordTraining.record)`."""
    from tfresnet.data import from_folder

    data = from_folder(tuning_folder, image_size=32, batch_size=8, val_split=0.3, augmentation="none", seed=0)
    RecordTraining.record = []
    directory = tmp_path_factory.mktemp("hyperband") / "search"
    best = search(
        data,
        weights=None,
        max_trials=4,
        tune_epochs=3,
        seed=0,
        directory=directory,
        callbacks=[RecordTraining()],
        verbose=0,
    )
    return directory, best, list(RecordTraining.record)


def copy_search(directory, tmp_path):
    shutil.copytree(directory, tmp_path / "search")
    return tmp_path / "search"


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


def test_hyperband_continues_a_trial_with_its_optimizer_state(hyperband_search):
    directory, _, record = hyperband_search
    # Three 1-epoch trials, then the best of them continued to 3 epochs.
    rows = read_trials(directory)
    assert [row["epochs"] for row in rows] == ["1", "1", "1", "3"]
    parent = int(rows[3]["continues"])
    assert float(rows[parent]["val_accuracy"]) == max(float(row["val_accuracy"]) for row in rows[:3])
    _, parent_steps, parent_kernel = record[2 * parent + 1]  # the parent's end
    _, steps, kernel = record[6]  # the continuation's start
    assert steps == parent_steps == 3  # 21 training images in batches of 8: Adam's step kept
    np.testing.assert_array_equal(kernel, parent_kernel)
    assert not list(directory.glob("trial_*/continuation.npz"))


def test_resuming_a_finished_search_runs_no_new_trial(hyperband_search, tuning_data, tmp_path):
    finished, best, _ = hyperband_search
    directory = copy_search(finished, tmp_path)
    arguments = {"weights": None, "tune_epochs": 3, "seed": 0, "directory": directory, "verbose": 0}
    RecordTraining.record = []
    assert search(tuning_data, max_trials=4, callbacks=[RecordTraining()], **arguments) == best
    assert RecordTraining.record == []
    assert len(read_trials(directory)) == 4

    check_in_space(search(tuning_data, max_trials=5, callbacks=[RecordTraining()], **arguments))
    assert len(RecordTraining.record) == 2  # one more trial: its begin and end
    assert len(read_trials(directory)) == 5


def test_changed_settings_are_refused_unless_overwrite(hyperband_search, tuning_data, tmp_path, monkeypatch):
    directory = copy_search(hyperband_search[0], tmp_path)
    arguments = {"weights": None, "seed": 0, "directory": directory, "verbose": 0}
    with pytest.raises(ValueError, match=r"tune_epochs: 3 -> 2.*overwrite=True.*--overwrite"):
        search(tuning_data, tune_epochs=2, **arguments)
    with pytest.raises(ValueError, match=r"tuner: \"hyperband\" -> \"random\""):
        search(tuning_data, tune_epochs=3, tuner="random", **arguments)

    monkeypatch.setattr(tuning, "HEAD_UNITS", (0, 8, 16))
    with pytest.raises(ValueError, match=r"space: .*overwrite=True"):
        search(tuning_data, tune_epochs=3, **arguments)
    best = search(tuning_data, tuner="random", max_trials=1, tune_epochs=1, overwrite=True, **arguments)
    assert best["head_units"] in (None, 8, 16)
    with open(directory / "search.json") as file:
        assert json.load(file)["space"][0]["config"]["values"] == [0, 8, 16]
    assert len(read_trials(directory)) == 1


def test_overwrite_deletes_only_a_search_directory(tuning_data, tmp_path):
    (tmp_path / "notes.txt").write_text("not a search")
    with pytest.raises(ValueError, match="holds files but no search"):
        search(tuning_data, weights=None, directory=tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_bayesian_search_reuses_the_feature_cache(hyperband_search, tuning_data, tmp_path):
    pytest.importorskip("sklearn")
    (cache,) = hyperband_search[0].glob("features-*.npz")
    directory = tmp_path / "search"
    directory.mkdir()
    shutil.copy(cache, directory)
    copied_at = (directory / cache.name).stat().st_mtime_ns
    best = search(
        tuning_data,
        weights=None,
        tuner="bayesian",
        max_trials=2,
        tune_epochs=1,
        seed=0,
        objective="val_loss",
        directory=directory,
        verbose=0,
    )
    check_in_space(best)
    rows = read_trials(directory)
    assert len(rows) == 2 and "val_loss" in rows[0]
    assert best["learning_rate"] == pytest.approx(
        float(min(rows, key=lambda row: float(row["val_loss"]))["learning_rate"])
    )
    assert (directory / cache.name).stat().st_mtime_ns == copied_at  # read, not computed again


def test_full_model_search_of_freeze_until(tuning_data, tmp_path):
    best = search(
        tuning_data,
        weights=None,
        tuner="random",
        max_trials=1,
        tune_epochs=1,
        seed=0,
        freeze_until_choices=[None, "conv5"],
        directory=tmp_path / "search",
        verbose=0,
    )
    check_in_space(best)
    assert best["freeze_until"] in (None, "conv5")
    (row,) = read_trials(tmp_path / "search")
    assert row["freeze_until"] in ("none", "conv5")
    with open(tmp_path / "search" / "search.json") as file:
        assert json.load(file)["fast"] is False


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"tuner": "grid"}, r"one of \('hyperband', 'random', 'bayesian'\). Received: tuner='grid'"),
        ({"objective": "accuracy"}, r"Received: objective='accuracy'"),
        ({"max_trials": 0}, r"Received: max_trials=0"),
        ({"freeze_until_choices": "conv5"}, r"a list of .*Received: freeze_until_choices='conv5'"),
        ({"freeze_until_choices": [None, 1.5]}, r"Received: 1.5 in"),
        ({"freeze_until_choices": [None, "conv9"]}, r"No backbone layer is named 'conv9'"),
        ({"distribution_strategy": "mirrored"}, r"Received: distribution_strategy='mirrored'"),
    ],
)
def test_invalid_arguments_are_refused(tuning_data, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        search(tuning_data, weights=None, directory=tmp_path / "search", **arguments)
    assert not (tmp_path / "search").exists()


def test_multi_worker_strategy_and_data_without_validation_are_refused(tuning_data, tmp_path):
    with pytest.raises(ValueError, match="single-machine strategies.*KERASTUNER_ORACLE_IP"):
        search(
            tuning_data, directory=tmp_path, distribution_strategy=tf.distribute.MultiWorkerMirroredStrategy()
        )
    no_validation = ImageData(tuning_data.train, None, ["a", "b"], [1, 1], 2, 0, 32)
    with pytest.raises(ValueError, match="val_split > 0"):
        search(no_validation, directory=tmp_path)


# === Several processes ===

SEARCH_PROCESS = textwrap.dedent("""
    import json, os, sys, time

    import keras

    from tfresnet.data import from_folder
    from tfresnet.tuning import search

    folder, directory, barrier = sys.argv[1:]


    class WaitForBothWorkers(keras.callbacks.Callback):
        # Holds each worker's first trial until the other worker runs a trial too.
        def on_train_begin(self, logs=None):
            open(os.path.join(barrier, os.environ["KERASTUNER_TUNER_ID"]), "w").close()
            deadline = time.time() + 240
            while len(os.listdir(barrier)) < 2 and time.time() < deadline:
                time.sleep(0.2)


    data = from_folder(folder, image_size=32, batch_size=8, val_split=0.3, augmentation="none", seed=0)
    best = search(data, weights=None, tuner="random", max_trials=4, tune_epochs=1, seed=0,
                  directory=directory, callbacks=[WaitForBothWorkers()], verbose=0)
    print("BEST " + json.dumps(best))
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_share_the_trials(make_image_folder, tmp_path):
    folder = make_image_folder(images_per_class=10)
    script = tmp_path / "search_process.py"
    script.write_text(SEARCH_PROCESS)
    directory, barrier = tmp_path / "search", tmp_path / "barrier"
    barrier.mkdir()
    port = free_port()
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
