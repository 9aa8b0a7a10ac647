"""Tests of tfresnet.tuning.hypermodels: the search spaces and a trial's recipe, without a search."""

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURE_SIZE, NUM_CLASSES, TINY, fixed_hp, take_all

from tfresnet import tuning
from tfresnet.models.classifier import build_classifier, compile_classifier, is_multi_label
from tfresnet.models.multi_label import LabelWeightedCrossentropy, label_weights
from tfresnet.training.settings import class_weights
from tfresnet.tuning import ClassifierHyperModel, HeadHyperModel


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


# === Multi-label ===


@pytest.mark.parametrize("kind", ["head", "classifier"])
def test_multi_label_hypermodels_compile_the_label_weighted_loss(kind):
    weights = label_weights([4, 10, 16], 20, "balanced")
    options = {"multi_label": True, "label_weights": weights, "label_smoothing": 0.05}
    if kind == "head":
        hypermodel = HeadHyperModel(3, feature_dim=FEATURE_SIZE, **options)
    else:
        hypermodel = ClassifierHyperModel(3, image_size=32, **TINY, **options)
    model = hypermodel.build(fixed_hp(head_units=128, dropout=0.2, learning_rate=1e-3))
    assert is_multi_label(model)
    assert model.get_layer("predictions").activation is keras.activations.sigmoid
    assert type(model.loss) is LabelWeightedCrossentropy
    assert model.loss.positive_weights == pytest.approx(weights["positive"])
    assert model.loss.negative_weights == pytest.approx(weights["negative"])
    assert model.loss.label_smoothing == 0.05
    x = np.zeros((2, FEATURE_SIZE) if kind == "head" else (2, 32, 32, 3), "float32")
    logs = model.evaluate(x, np.array([[1, 0, 1], [0, 1, 0]], "float32"), verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mean_average_precision"}


def test_a_multi_label_head_trains_on_the_multi_hot_rows_as_they_are():
    """The logged loss of one full batch is the label-weighted loss of the rows themselves."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 16)).astype("float32")
    labels = (rng.uniform(size=(24, 3)) < 0.4).astype("float32")
    weights = label_weights(labels.sum(axis=0), 24, "balanced")
    hp = fixed_hp(head_units=0, dropout=0.0, learning_rate=1e-2)
    hypermodel = HeadHyperModel(3, feature_dim=16, seed=5, multi_label=True, label_weights=weights)
    head = hypermodel.build(hp)
    probabilities = head.predict(features, verbose=0)
    weighted = LabelWeightedCrossentropy(0.1, weights["positive"], weights["negative"])
    expected = float(weighted(labels, probabilities))
    assert float(LabelWeightedCrossentropy(0.1)(labels, probabilities)) != pytest.approx(expected, rel=1e-3)

    arguments = {"batch_size": 24, "shuffle": False, "epochs": 3, "verbose": 0}
    validation = (features, labels)
    history = hypermodel.fit(hp, head, features, labels, validation_data=validation, **arguments).history
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_mean_average_precision"][-1] > history["val_mean_average_precision"][0]


def test_a_multi_label_classifier_trial_is_fed_the_multi_hot_rows(multi_label_data):
    """The trial's validation numbers are those of the model on the multi-hot rows themselves."""
    hp = fixed_hp(head_units=0, dropout=0.0, learning_rate=1e-2)
    hypermodel = ClassifierHyperModel(3, image_size=32, seed=2, multi_label=True, **TINY)
    model = hypermodel.build(hp)
    data = multi_label_data
    arguments = {"validation_data": data.validation, "epochs": 1, "shuffle": False, "verbose": 0}
    history = hypermodel.fit(hp, model, data.train, **arguments).history
    assert set(history) == {"loss", "mean_average_precision", "val_loss", "val_mean_average_precision"}
    images, labels = take_all(data.validation)
    assert labels.shape == (data.num_validation, 3) and labels.dtype == np.float32
    logs = model.evaluate(images, labels, batch_size=len(labels), verbose=0, return_dict=True)
    assert history["val_loss"][0] == pytest.approx(logs["loss"], rel=1e-4)
    assert history["val_mean_average_precision"][0] == pytest.approx(logs["mean_average_precision"], rel=1e-4)
