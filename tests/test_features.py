"""Tests of tfresnet.tuning.features: the backbone's features, their cache, and heads trained on them."""

import keras
import numpy as np
import tensorflow as tf
from conftest import (
    CLASS_SIZES,
    FEATURE_SIZE,
    NUM_CLASSES,
    TINY,
    assert_close_across_kernels,
    fixed_hp,
    make_arrays,
    take_all,
)

from tfresnet import paths
from tfresnet.data import ImageData
from tfresnet.models.classifier import build_classifier
from tfresnet.training.settings import class_weights
from tfresnet.tuning import ClassifierHyperModel, HeadHyperModel, extract_features
from tfresnet.tuning import features as features_module


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


def test_the_feature_cache_holds_multi_hot_rows_keyed_apart(data, multi_label_data, tmp_path):
    features = extract_features(multi_label_data, seed=3, cache_dir=tmp_path, **TINY)
    _, train_labels = take_all(multi_label_data.train_evaluation)
    _, validation_labels = take_all(multi_label_data.validation)
    assert features.train_labels.dtype == np.float32 and features.train_labels.shape == (36, 3)
    np.testing.assert_array_equal(features.train_labels, train_labels)
    np.testing.assert_array_equal(features.validation_labels, validation_labels)
    assert features.train_labels.sum(axis=0).tolist() == list(multi_label_data.class_counts)
    (path,) = tmp_path.glob("features-*.npz")
    with np.load(path) as stored:
        np.testing.assert_array_equal(stored["train_labels"], train_labels)
    cached = extract_features(multi_label_data, seed=3, cache_dir=tmp_path, **TINY)
    np.testing.assert_array_equal(cached.validation_labels, validation_labels)
    assert cached.validation_labels.dtype == np.float32

    description = features_module.describe_data(multi_label_data)
    assert description["multi_label"] is True
    assert "multi_label" not in features_module.describe_data(data)  # as single-label data always was
    single = {name: value for name, value in description.items() if name != "multi_label"}
    key = features_module.features_key(description, "resnet-test", None, 3)
    assert key != features_module.features_key(single, "resnet-test", None, 3)
    assert path.name == f"features-{key}.npz"
    single_label = extract_features(data, seed=3, cache_dir=tmp_path, **TINY)
    assert single_label.train_labels.dtype == np.int32 and single_label.train_labels.ndim == 1
    assert len(list(tmp_path.glob("features-*.npz"))) == 2


def test_the_feature_cache_on_a_store_is_written_there_and_read_back(data, ram_dir, monkeypatch):
    cache = paths.join(ram_dir, "tuning")  # created by the first call
    features = extract_features(data, seed=3, cache_dir=cache, **TINY)
    (name,) = paths.listdir(cache)
    assert name.startswith("features-") and name.endswith(".npz")

    def not_again(*args, **kwargs):
        raise AssertionError("the features were computed again")

    monkeypatch.setattr(features_module, "_feature_extractor", not_again)
    cached = extract_features(data, seed=3, cache_dir=cache, **TINY)
    for field in ("train_features", "train_labels", "validation_features", "validation_labels"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(features, field))
    assert cached.batch_size == features.batch_size == 8


def test_a_weights_file_on_a_store_is_described_by_its_url_and_bytes(tmp_path, ram_dir):
    local = tmp_path / "backbone.weights.h5"
    local.write_bytes(b"A" * 64)
    path = paths.join(ram_dir, "backbone.weights.h5")
    paths.copy_file(str(local), path)
    described = features_module.describe_weights(path)
    assert described == {"path": path, "sha256": features_module.describe_weights(str(local))["sha256"]}
    key = features_module.features_key({"data": 1}, "resnet50", path, 0)
    assert key == features_module.features_key({"data": 1}, "resnet50", str(local), 0)
