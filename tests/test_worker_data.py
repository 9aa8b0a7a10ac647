"""What `fit` trains on: each worker's batches of its share of the files, weighed by class as
`fit(class_weight=...)` weighs, mixed as asked; one machine's batches as the loader made them
(two workers training end to end: test_distribute.py)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import file_index, take_all

from tfresnet.data import decode_for_eval, from_csv, from_folder
from tfresnet.training import steps_per_epoch
from tfresnet.training.worker_data import (
    images_per_worker,
    training_input,
    with_class_weights,
    worker_dataset,
)

SIZE = 32
CLASS_WEIGHTS = {0: 0.5, 1: 2.0, 2: 1.25}


def _context(index: int, count: int = 2) -> tf.distribute.InputContext:
    """What `distribute_datasets_from_function` tells worker `index` of `count`, one replica each."""
    return tf.distribute.InputContext(count, index, num_replicas_in_sync=count)


@pytest.fixture
def folder_data(make_image_folder):
    """21 training images (3 classes of 7) in batches of 8: 3 steps an epoch."""
    folder = make_image_folder(images_per_class=7, size=SIZE)
    data = from_folder(folder, image_size=SIZE, batch_size=8, val_split=0, augmentation="none", seed=0)
    return folder, data


def test_each_worker_trains_on_its_share_in_per_replica_batches_weighed_by_class(folder_data):
    folder, data = folder_data
    paths = data.files["train"]
    decoded = np.stack([decode_for_eval(tf.io.read_file(path), SIZE).numpy() for path in paths])
    steps = steps_per_epoch(data)
    assert steps == 3

    seen = []
    for index in range(2):
        batches = list(worker_dataset(data, _context(index), class_weights=CLASS_WEIGHTS).take(2 * steps))
        assert [len(images) for images, _, _ in batches] == [4, 4, 3] * 2  # endless: 2 passes
        images = np.concatenate([images for images, _, _ in batches[:steps]])
        labels = np.concatenate([labels for _, labels, _ in batches[:steps]])
        weights = np.concatenate([weights for _, _, weights in batches[:steps]])
        files = file_index(images, decoded)
        assert np.array_equal(labels, np.eye(3)[labels.argmax(axis=1)])  # one-hot
        assert [paths[i].split(os.sep)[-2] for i in files] == [data.class_names[k] for k in labels.argmax(1)]
        np.testing.assert_allclose(weights, [CLASS_WEIGHTS[k] for k in labels.argmax(axis=1)])
        second_pass = file_index(np.concatenate([images for images, _, _ in batches[steps:]]), decoded)
        assert sorted(second_pass) == sorted(files)  # the same share, reshuffled
        seen.append(set(files))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(21))


def test_class_weights_as_sample_weights_train_as_fits_class_weight():
    """Soft labels (as MixUp leaves them) weigh by their largest entry in both."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(24, 5)).astype("float32")
    labels = rng.dirichlet([0.5, 0.5, 0.5], size=24).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(6)

    def trained(**fit_arguments):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
        model.fit(epochs=2, verbose=0, shuffle=False, **fit_arguments)
        return model.get_weights()

    keras_way = trained(x=dataset, class_weight=CLASS_WEIGHTS)
    ours = trained(x=with_class_weights(dataset, CLASS_WEIGHTS))
    unweighted = trained(x=dataset)
    for ours_array, keras_array in zip(ours, keras_way):
        np.testing.assert_allclose(ours_array, keras_array, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours[0], unweighted[0])


def test_a_workers_batches_are_mixed_as_asked(folder_data):
    _, data = folder_data
    # 12 batches of 4: MixUp's draws reach the batches in an order the parallel pipeline picks (see
    # `augment`), and a batch of 4 whose images all meet their own class keeps one-hot labels.
    batches = worker_dataset(data, _context(1), mixup=1.0, seed=0, class_weights=CLASS_WEIGHTS).take(12)
    labels = np.concatenate([labels for _, labels, _ in batches.as_numpy_iterator()])
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    assert ((labels > 0.01) & (labels < 0.99)).any()  # some are soft


def test_a_multi_label_workers_batches_keep_their_rows(multi_label_csv):
    data = from_csv(
        multi_label_csv, multi_label=True, image_size=SIZE, batch_size=8, val_split=0, augmentation="none"
    )
    batches = worker_dataset(data, _context(0)).take(steps_per_epoch(data))
    rows = np.concatenate([labels for _, labels in batches.as_numpy_iterator()])
    assert rows.shape == (24, len(data.class_names)) and rows.dtype == np.float32  # 48 images, half
    assert np.isin(rows, [0.0, 1.0]).all() and (rows.sum(axis=1) != 1).any()  # multi-hot rows


def test_one_machine_trains_on_the_loaders_batches_with_fits_class_weight(folder_data):
    _, data = folder_data
    strategy = tf.distribute.get_strategy()
    arguments = training_input(data, strategy, steps=3, class_weights=CLASS_WEIGHTS, seed=0)
    assert arguments["class_weight"] == CLASS_WEIGHTS and arguments["steps_per_epoch"] is None
    images, labels = take_all(arguments["x"])
    assert images.shape == (21, SIZE, SIZE, 3) and labels.sum(axis=0).tolist() == data.class_counts
    assert images_per_worker(data, strategy) == data.num_train == 21
