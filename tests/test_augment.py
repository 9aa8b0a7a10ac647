"""Tests of tfresnet.data.augment: RandAugment in the training pipeline, MixUp and CutMix on
one-hot batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import take_all

from tfresnet.data import from_folder
from tfresnet.data.augment import check_mixing, mix_batches, randaugment

SIZE = 32


def test_randaugment_changes_the_training_images_only(image_folder):
    standard = from_folder(image_folder, image_size=SIZE, batch_size=64, seed=3, augmentation="standard")
    strong = from_folder(image_folder, image_size=SIZE, batch_size=64, seed=3, augmentation="randaugment")

    (plain, labels), (augmented, strong_labels) = take_all(standard.train), take_all(strong.train)

    # The same seeded crops and flips, in the same order, then RandAugment's operations.
    np.testing.assert_array_equal(labels, strong_labels)
    assert augmented.shape == plain.shape and augmented.dtype == np.float32
    assert 0 <= augmented.min() and augmented.max() <= 255
    changed = np.abs(augmented - plain).reshape(len(plain), -1).mean(axis=1) > 1.0
    assert changed.mean() > 0.5
    np.testing.assert_array_equal(take_all(standard.validation)[0], take_all(strong.validation)[0])


def black_and_white_batches(batches: int = 6, batch_size: int = 8) -> tf.data.Dataset:
    """Batches of all-black images labelled [1, 0] and all-white ones labelled [0, 1]."""
    white = np.arange(batch_size * batches) % 2
    images = np.repeat(white.astype("float32") * 255.0, SIZE * SIZE * 3).reshape(-1, SIZE, SIZE, 3)
    labels = np.eye(2, dtype="float32")[white]
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_mixed_labels_weigh_each_image_by_its_share(option):
    mixed = mix_batches(black_and_white_batches(), **{option: 1.0}, seed=0)

    images, labels = take_all(mixed)

    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 0.01) & (labels < 0.99)).any()  # some labels are soft
    # The share of white in each image is the weight of the "white" label (CutMix weighs by the
    # box it drew, which the image's border may clip: close, not exact).
    tolerance = 0.02 if option == "mixup" else 0.1
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)) / 255.0, labels[:, 1], atol=tolerance)
    if option == "cutmix":  # pasted boxes, not blends
        assert set(np.unique(images)) <= {0.0, 255.0}


def test_with_both_each_batch_is_mixed_one_way():
    mixed = mix_batches(black_and_white_batches(batches=16), mixup=1.0, cutmix=1.0, seed=0)

    kinds = []
    for images, _ in mixed:
        blended = bool(((images > 0.5) & (images < 254.5)).numpy().any())
        kinds.append("mixup" if blended else "cutmix")

    assert set(kinds) == {"mixup", "cutmix"}


def test_off_leaves_the_batches_alone():
    dataset = black_and_white_batches()
    assert mix_batches(dataset) is dataset


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mixup": -0.1, "cutmix": 0}, "Received: mixup=-0.1"),
        ({"mixup": 0, "cutmix": "big"}, "Received: cutmix='big'"),
    ],
)
def test_bad_alphas_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_mixing(**kwargs)


def test_randaugment_draws_among_the_operations_of_keras_randaugment():
    """`randaugment` runs the sub-layers `keras.layers.RandAugment` lists in `_AUGMENT_LAYERS`."""
    layer = keras.layers.RandAugment(value_range=(0, 255))
    operations = [getattr(layer, name) for name in layer._AUGMENT_LAYERS]
    assert len(operations) == 11 and all(isinstance(op, keras.layers.Layer) for op in operations)

    augment = randaugment(seed=0)
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    outputs = np.stack([augment(tf.constant(image)).numpy() for _ in range(8)])

    assert outputs.shape == (8, 32, 32, 3) and 0 <= outputs.min() and outputs.max() <= 255
    assert len({output.tobytes() for output in outputs}) == 8  # a new draw for every image
