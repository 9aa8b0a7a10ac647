"""Tests of tfresnet.tuning: search spaces built without training, tiny searches on 32 px images.

Every model here is built on the tiny test backbone (`backbone="resnet-tiny"`, `weights=None`,
128 features), and every search runs on 32 images of 32 px in three imbalanced classes.
"""

import csv
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import warnings

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close_across_kernels

from tfresnet import tuning
from tfresnet.data import ImageData, from_arrays
from tfresnet.data.examples import CLASS_COLORS, CLASS_SHAPES, draw_shape
from tfresnet.models.classifier import build_classifier, compile_classifier
from tfresnet.training.settings import class_weights
from tfresnet.tuning import ClassifierHyperModel, HeadHyperModel, extract_features, search
from tfresnet.tuning import features as features_module
from tfresnet.tuning import trials as trials_module
from tfresnet.tuning import tuner as tuner_module

# `tfresnet.tuning.search` is the function; the module holds what the tests patch.
search_module = importlib.import_module("tfresnet.tuning.search")

TINY = {"backbone": "resnet-tiny", "weights": None}
# Images per class: imbalanced, so the balanced class weights differ from 1. A quarter of each
# class is held out: 24 training images (12, 6, 6), 3 batches of 8, and 8 validation images.
CLASS_SIZES = (16, 8, 8)
NUM_CLASSES = len(CLASS_SIZES)
FEATURE_SIZE = 128  # resnet-tiny's


def make_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32 px images in which class k is the k-th colour and shape on a noisy background."""
    rng = np.random.default_rng(seed)
    colors = list(CLASS_COLORS.values())
    labels = np.repeat(np.arange(NUM_CLASSES), CLASS_SIZES)
    images = np.stack([np.asarray(draw_shape(CLASS_SHAPES[k], colors[k], 32, rng)) for k in labels])
    return images, labels


def make_data(seed: int = 0) -> ImageData:
    images, labels = make_arrays(seed)
    return from_arrays(
        images, labels, image_size=32, batch_size=8, val_split=0.25, augmentation="none", seed=0
    )


@pytest.fixture
def data() -> ImageData:
    return make_data()


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


def take_all(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def record_fit_calls(monkeypatch, hypermodel_class) -> list[dict]:
    """Records the keyword arguments of every `hypermodel_class.fit` a trial makes."""
    calls = []
    fit = hypermodel_class.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        calls.append(kwargs)
        return fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(hypermodel_class, "fit", recording_fit)
    return calls


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


class RecordBackboneKernels(keras.callbacks.Callback):
    """Records a conv5 and a conv4 kernel of the backbone when a trial's fit starts and ends."""

    LAYERS = ("conv5_block1_1_conv", "conv4_block6_3_conv")
    record = []

    def on_train_begin(self, logs=None):
        self.record.append(self.kernels())

    def on_train_end(self, logs=None):
        self.record.append(self.kernels())

    def kernels(self) -> dict:
        backbone = self.model.get_layer("backbone")
        return {name: keras.ops.convert_to_numpy(backbone.get_layer(name).kernel) for name in self.LAYERS}


# === Search spaces and the recipe, built without searching ===


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


def test_a_reused_head_trains_as_a_new_one_with_the_steps_traced_once():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 16)).astype("float32")
    labels = np.arange(24) % NUM_CLASSES
    arguments = {"batch_size": 8, "epochs": 2, "verbose": 0, "validation_data": (features[:8], labels[:8])}
    first = fixed_hp(head_units=32, dropout=0.3, learning_rate=1e-2)
    second = fixed_hp(head_units=32, dropout=0.1, learning_rate=3e-3)  # another rate: the same steps

    reusing = HeadHyperModel(NUM_CLASSES, feature_dim=16, seed=5, reuse_models=True)
    model = reusing.build(first)
    assert model.jit_compile is False  # a head's few steps are not worth an XLA compilation
    reusing.fit(first, model, features, labels, **arguments)
    train_function, test_function = model.train_function, model.test_function
    assert reusing.build(second) is model
    assert int(model.optimizer.iterations) == 0
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)
    reused = reusing.fit(second, model, features, labels, **arguments).history
    assert (model.train_function, model.test_function) == (train_function, test_function)

    fresh_hypermodel = HeadHyperModel(NUM_CLASSES, feature_dim=16, seed=5)
    fresh_model = fresh_hypermodel.build(second)
    fresh = fresh_hypermodel.fit(second, fresh_model, features, labels, **arguments).history
    assert reused == fresh
    for name in ("head_dense", "predictions"):
        np.testing.assert_array_equal(model.get_layer(name).kernel, fresh_model.get_layer(name).kernel)
    for variable, fresh_variable in zip(model.optimizer.variables, fresh_model.optimizer.variables):
        np.testing.assert_array_equal(variable, fresh_variable)

    assert model.get_layer("output_dropout").rate == 0.1
    no_dropout = fixed_hp(head_units=32, dropout=0.0, learning_rate=3e-3)
    assert reusing.build(no_dropout) is model  # at rate 0, trains as a head without dropout
    reused_without = reusing.fit(no_dropout, model, features, labels, **arguments).history
    without_hypermodel = HeadHyperModel(NUM_CLASSES, feature_dim=16, seed=5)
    without = without_hypermodel.build(no_dropout)
    assert "output_dropout" not in [layer.name for layer in without.layers]
    fresh_without = without_hypermodel.fit(no_dropout, without, features, labels, **arguments).history
    assert reused_without == fresh_without
    assert reusing.build(fixed_hp(head_units=64, dropout=0.3, learning_rate=3e-3)) is not model
    reusing.clear_models()
    assert reusing.build(second) is not model
    assert fresh_hypermodel.build(second) is not fresh_model  # reuse_models=False: always new


def test_a_head_sets_tensorflows_seed_only_when_it_holds_another(monkeypatch):
    """Setting TensorFlow's global seed clears its kernel caches, which a head trial would pay
    for in every trial: a build sets it (its shuffles read it) only when it differs, and the
    trials train to the same numbers either way."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 16)).astype("float32")
    labels = np.arange(24) % NUM_CLASSES
    set_seed, calls = tf.random.set_seed, []
    monkeypatch.setattr(tf.random, "set_seed", lambda seed: (calls.append(seed), set_seed(seed)))
    hp = fixed_hp(head_units=8, dropout=0.2, learning_rate=1e-2)
    hypermodel = HeadHyperModel(NUM_CLASSES, feature_dim=16, seed=5, reuse_models=True)

    set_seed(11)  # the user's seed
    histories = []
    for _ in range(3):
        model = hypermodel.build(hp)
        history = hypermodel.fit(hp, model, features, labels, batch_size=8, epochs=2, verbose=0)
        histories.append(history.history)
    assert calls == [5]
    assert tf.compat.v1.get_seed(1) == (5, 1)
    assert histories[0] == histories[1] == histories[2]


def test_head_hypermodel_declares_the_space_with_defaults():
    hp = keras_tuner.HyperParameters()
    HeadHyperModel(3).declare_hyperparameters(hp)
    assert [p.name for p in hp.space] == ["head_units", "dropout", "learning_rate"]
    assert list(hp.space[0].values) == list(tuning.HEAD_UNITS)
    assert hp.values == {"head_units": 0, "dropout": 0.2, "learning_rate": 1e-3}


def test_classifier_hypermodel_default_values_freeze_the_backbone():
    model = ClassifierHyperModel(3, image_size=32, **TINY).build(keras_tuner.HyperParameters())
    names = ["images", "preprocessing", "backbone", "pooler", "output_dropout", "predictions"]
    assert [layer.name for layer in model.layers] == names
    assert [v.path for v in model.trainable_variables] == ["predictions/kernel", "predictions/bias"]
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_classifier_hypermodel_searches_where_to_freeze():
    hypermodel = ClassifierHyperModel(3, image_size=32, freeze_until_choices=[None, "conv5"], **TINY)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert hp.get("freeze_until") == "none"
    assert list(hp.space[-1].values) == ["none", "conv5"]
    hp.values["freeze_until"] = "conv5"
    model = hypermodel.build(hp)
    trainable = {v.path.split("/")[0] for v in model.get_layer("backbone").trainable_variables}
    assert trainable and all(name.startswith("conv5") for name in trainable)


@pytest.mark.parametrize("label_smoothing", [None, 0.25])
@pytest.mark.parametrize("kind", ["head", "classifier"])
def test_hypermodels_compile_fine_tunes_loss(kind, label_smoothing):
    options = {} if label_smoothing is None else {"label_smoothing": label_smoothing}
    if kind == "head":
        hypermodel = HeadHyperModel(3, feature_dim=FEATURE_SIZE, **options)
    else:
        hypermodel = ClassifierHyperModel(3, image_size=32, **TINY, **options)
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert type(model.loss) is keras.losses.CategoricalCrossentropy
    assert model.loss.label_smoothing == (0.1 if label_smoothing is None else label_smoothing)
    assert model.loss.get_config()["from_logits"] is False
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_a_trial_optimises_the_loss_of_fine_tune(data):
    """A trial's loss on a batch is fine_tune's: smoothed cross-entropy weighted by class."""
    images, labels = take_all(data.train)
    weights = class_weights(data.class_counts, "balanced")
    assert len(set(weights.values())) > 1  # imbalanced: the weights matter
    # fine_tune's model and recipe (compile_classifier's defaults, fine_tune's class weights).
    classifier = build_classifier(NUM_CLASSES, image_size=32, dropout=0.0, **TINY)
    compile_classifier(classifier, learning_rate=1e-3)
    features = keras.Model(classifier.input, classifier.get_layer("pooler").output).predict(images, verbose=0)
    # A trial's head on those features, its weights copied into the classifier's head.
    hp = fixed_hp(head_units=0, dropout=0.0, learning_rate=1e-3)
    hypermodel = HeadHyperModel(NUM_CLASSES, feature_dim=FEATURE_SIZE)
    head = hypermodel.build(hp)
    kernel, bias = head.get_layer("predictions").get_weights()
    classifier.get_layer("predictions").set_weights([kernel, bias])

    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    sample_weight = np.array([weights[label] for label in labels], dtype="float32")
    recipe = classifier.evaluate(
        images, one_hot, sample_weight=sample_weight, batch_size=len(labels), verbose=0, return_dict=True
    )["loss"]
    # One batch, one epoch: the logged loss is the loss before the only update.
    trial = hypermodel.fit(
        hp,
        head,
        features,
        labels,
        batch_size=len(labels),
        shuffle=False,
        epochs=1,
        class_weight=weights,
        verbose=0,
    ).history["loss"][0]
    assert trial == pytest.approx(recipe, rel=1e-5)

    # The same number from first principles, and the numbers a trial without label smoothing
    # or without class weights would give. From logits: Keras computes a softmax layer's
    # cross-entropy from its logits, which clipped probabilities would not match.
    logits = features @ kernel + bias
    smoothed = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    unsmoothed = keras.losses.CategoricalCrossentropy(from_logits=True)
    assert float(smoothed(one_hot, logits, sample_weight=sample_weight)) == pytest.approx(recipe, rel=1e-5)
    assert float(unsmoothed(one_hot, logits, sample_weight=sample_weight)) != pytest.approx(recipe, rel=1e-5)
    assert float(smoothed(one_hot, logits)) != pytest.approx(recipe, rel=1e-5)


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
    check(("conv5", "conv4_block2"), backbone="resnet-tiny", image_size=32)  # a block: built to be checked
    assert [kwargs["weights"] for kwargs in built] == [None]


# === keras-tuner's private hook ===


# === Fast path ===


def test_fast_path_trains_the_same_head_as_the_full_frozen_model(data, tmp_path):
    # The same images in a fixed order for both paths, so only the path differs.
    train, validation = take_all(data.train), take_all(data.validation)
    ordered = ImageData(
        train=tf.data.Dataset.from_tensor_slices(train).batch(8),
        validation=tf.data.Dataset.from_tensor_slices(validation).batch(8),
        class_names=data.class_names,
        class_counts=data.class_counts,
        num_train=len(train[1]),
        num_validation=len(validation[1]),
        image_size=32,
    )
    features = extract_features(ordered, seed=3, cache_dir=tmp_path, **TINY)
    np.testing.assert_array_equal(features.train_labels, train[1])
    assert features.train_features.shape == (len(train[1]), FEATURE_SIZE)
    assert features.batch_size == 8
    cached = extract_features(ordered, seed=3, cache_dir=tmp_path, **TINY)
    np.testing.assert_array_equal(cached.validation_features, features.validation_features)
    assert len(list(tmp_path.glob("features-*.npz"))) == 1

    hp = fixed_hp(head_units=16, dropout=0.3, learning_rate=3e-3)
    weights = class_weights(data.class_counts, "balanced")
    head = HeadHyperModel(NUM_CLASSES, feature_dim=features.feature_dim, seed=3)
    head_model = head.build(hp)
    fast = head.fit(
        hp,
        head_model,
        features.train_features,
        features.train_labels,
        batch_size=8,
        epochs=2,
        shuffle=False,
        class_weight=weights,
        verbose=0,
        validation_data=(features.validation_features, features.validation_labels),
    ).history
    full = ClassifierHyperModel(NUM_CLASSES, image_size=32, seed=3, **TINY)
    full_model = full.build(hp)
    slow = full.fit(
        hp,
        full_model,
        ordered.train,
        epochs=2,
        shuffle=False,
        class_weight=weights,
        validation_data=ordered.validation,
        verbose=0,
    ).history

    np.testing.assert_allclose(fast["loss"], slow["loss"], rtol=1e-4)
    np.testing.assert_allclose(fast["val_accuracy"], slow["val_accuracy"], atol=1e-6)
    np.testing.assert_allclose(fast["val_loss"], slow["val_loss"], rtol=1e-3)
    assert fast["loss"][1] < fast["loss"][0]  # it learns something
    for name in ("head_dense", "predictions"):
        np.testing.assert_allclose(
            head_model.get_layer(name).kernel, full_model.get_layer(name).kernel, atol=1e-4
        )


def test_features_are_the_backbones_for_partial_batches_under_a_strategy():
    # 27 training images in batches of 8 (the last of 3) and 5 validation images: one graph
    # serves every batch size, features stay with their labels, and a strategy's replicas
    # (one here) gather what they computed.
    images, labels = make_arrays()
    images = images.astype("float32")
    ordered = ImageData(
        train=tf.data.Dataset.from_tensor_slices((images[:27], labels[:27])).batch(8),
        validation=tf.data.Dataset.from_tensor_slices((images[27:], labels[27:])).batch(8),
        class_names=["a", "b", "c"],
        class_counts=list(CLASS_SIZES),
        num_train=27,
        num_validation=5,
        image_size=32,
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    features = extract_features(ordered, seed=3, distribution_strategy=strategy, **TINY)

    keras.utils.set_random_seed(3)
    classifier = build_classifier(NUM_CLASSES, image_size=32, dropout=0.0, **TINY)
    pooled = keras.Model(classifier.input, classifier.get_layer("pooler").output)
    expected = keras.ops.convert_to_numpy(pooled(images, training=False))
    assert_close_across_kernels(features.train_features, expected[:27])  # batches of 8 against 32
    assert_close_across_kernels(features.validation_features, expected[27:])
    np.testing.assert_array_equal(features.train_labels, labels[:27])
    np.testing.assert_array_equal(features.validation_labels, labels[27:])
    assert features.train_features.dtype == np.float32 and features.train_labels.dtype == np.int32
    assert features.batch_size == 8


# === Searches ===


@pytest.fixture(scope="module")
def hyperband_search(tmp_path_factory):
    """A finished default-tuner search, run once: `(directory, best, RecordTraining.record)`."""
    RecordTraining.record = []
    directory = tmp_path_factory.mktemp("hyperband") / "search"
    best = search(
        make_data(),
        max_trials=4,
        tune_epochs=3,
        seed=0,
        directory=directory,
        callbacks=[RecordTraining()],
        verbose=0,
        **TINY,
    )
    keras.backend.clear_session()
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


def test_the_feature_cache_keys_a_weights_file_by_its_bytes(tmp_path):
    """Another file at the same path and of the same size is other weights: other features."""
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(b"A" * 64)
    first = features_module.features_key({"data": 1}, "resnet50", str(path), 0)
    path.write_bytes(b"B" * 64)
    assert features_module.features_key({"data": 1}, "resnet50", str(path), 0) != first
    moved = tmp_path / "moved.h5"
    path.rename(moved)  # the same bytes elsewhere: the same features
    second = features_module.features_key({"data": 1}, "resnet50", str(moved), 0)
    moved.write_bytes(b"B" * 64)
    assert features_module.features_key({"data": 1}, "resnet50", str(moved), 0) == second


def test_a_half_written_settings_file_is_named(data, tmp_path):
    (tmp_path / "search.json").write_text('{"tuner": "hyperb')
    with pytest.raises(ValueError, match=r"search\.json.* is not valid JSON"):
        search(data, directory=tmp_path, verbose=0, **TINY)


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


@pytest.mark.parametrize(
    "present",
    [
        ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_PORT"),
        ("KERASTUNER_TUNER_ID",),
        ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"),
    ],
)
def test_a_shared_search_needs_all_three_variables_or_none(monkeypatch, present):
    values = {
        "KERASTUNER_TUNER_ID": "tuner0",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": "8000",
    }
    for name in values:
        monkeypatch.delenv(name, raising=False)
    assert tuner_module.role() == "local"
    for name in present:
        monkeypatch.setenv(name, values[name])
    missing = sorted(set(values) - set(present))
    with pytest.raises(ValueError, match=" and ".join(missing)):
        tuner_module.role()


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
    np.testing.assert_array_equal(begin["conv4_block6_3_conv"], end["conv4_block6_3_conv"])  # frozen
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


@pytest.mark.parametrize("address, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_a_chief_listening_on_every_interface_is_warned(monkeypatch, address, warned):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", address)
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert tuner_module.role() == "chief"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner_module.warn_if_exposed()
    assert [str(w.message).startswith("The chief's oracle listens on every interface") for w in caught] == (
        [True] if warned else []
    )


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
    best = search(data, backbone="resnet-tiny", weights=None, tuner="random", max_trials=4, tune_epochs=1,
                  seed=0, directory=directory, callbacks=[WaitForBothWorkers()], verbose=0)
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


def test_trials_are_read_in_the_order_they_were_created(tmp_path):
    """A resumed search with more trials pads ids wider: trial_010 comes after trial_09."""
    for trial_id in ("08", "09", "010", "011"):
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        trial = {"trial_id": trial_id, "status": "COMPLETED", "score": 0.5, "hyperparameters": {"values": {}}}
        (folder / "trial.json").write_text(json.dumps(trial))

    trials = trials_module.read_trials(str(tmp_path))
    assert [trial["trial_id"] for trial in trials] == ["08", "09", "010", "011"]
