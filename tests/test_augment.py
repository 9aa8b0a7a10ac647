"""Tests of tfresnet.data.augment: RandAugment in the training pipeline, MixUp and CutMix on
one-hot and multi-hot batches."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import take_all

from tfresnet.data import from_folder
from tfresnet.data.augment import RANDAUGMENT_TABLE, check_mixing, mix_batches, randaugment

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


def _kinds(mixed) -> list[str]:
    """How each batch was mixed: blended (MixUp) or pasted (CutMix)."""
    return ["mixup" if ((images > 0.5) & (images < 254.5)).numpy().any() else "cutmix" for images, _ in mixed]


def test_with_both_each_batch_is_mixed_one_way():
    mixed = mix_batches(black_and_white_batches(batches=16), mixup=1.0, cutmix=1.0, seed=0)

    assert set(_kinds(mixed)) == {"mixup", "cutmix"}


def test_one_seed_chooses_the_same_mixing_per_batch_whatever_tensorflows_global_seed():
    """The layers' own draws may reach the images in another order (see `augment`); the choice
    of MixUp or CutMix for each batch is the seed's alone."""

    def kinds(global_seed):
        tf.random.set_seed(global_seed)
        return _kinds(mix_batches(black_and_white_batches(batches=16), mixup=1.0, cutmix=1.0, seed=0))

    assert kinds(1) == kinds(2) == kinds(3)


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


def line_image(size: int = 64) -> np.ndarray:
    """A black image with a white horizontal bar through its centre, 40 px long, 3 px thick."""
    image = np.zeros((size, size, 3), "float32")
    image[size // 2 - 1 : size // 2 + 2, size // 2 - 20 : size // 2 + 20] = 255.0
    return image


def line_angle(image: np.ndarray) -> float:
    """The angle to the horizontal of the bright pixels' main axis, in degrees (0 to 90)."""
    rows, columns = np.nonzero(image.mean(axis=-1) > 127.5)
    points = np.stack([columns, rows]).astype("float64")
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points))
    dx, dy = eigenvectors[:, np.argmax(eigenvalues)]
    return float(np.degrees(np.arctan2(abs(dy), abs(dx))))


def test_randaugment_rotates_within_timms_range_at_magnitude_9():
    """timm rotates by up to 30 * m / 10 degrees: 27 at magnitude 9 (Keras's own layer: 180)."""
    augment = randaugment(seed=0, magnitude=9, ops=1, operations=["rotate"])
    image = tf.constant(line_image())

    angles = [line_angle(augment(image).numpy()) for _ in range(60)]

    assert line_angle(line_image()) < 0.5
    assert max(angles) <= 27.0 + 1.5  # the measure's own error on a 3-px line: about a degree
    assert max(angles) > 18.0  # and it does rotate, across the range


def test_randaugment_magnitude_0_leaves_the_geometry_alone():
    augment = randaugment(seed=0, magnitude=0, ops=2, operations=["rotate", "shear_x", "translate_y"])
    image = line_image()

    np.testing.assert_allclose(augment(tf.constant(image)).numpy(), image, atol=1e-3)


@pytest.mark.parametrize("ops", [0, 1, 3])
def test_randaugment_runs_ops_operations_per_image(ops):
    augment = randaugment(seed=0, ops=ops, operations=[lambda image: image + 1.0, lambda image: image + 1.0])

    assert float(augment(tf.zeros((8, 8, 3))).numpy().max()) == ops


def test_a_pipeline_traces_each_operation_once_whatever_the_draws():
    traced = []

    def add_one(image):
        traced.append(image.shape)  # runs when TensorFlow traces the operation
        return image + 1.0

    augment = randaugment(seed=0, ops=3, operations=[add_one])
    dataset = tf.data.Dataset.from_tensor_slices(tf.zeros((2, 8, 8, 3))).map(augment)

    assert len(traced) == 1
    assert [float(image.numpy().max()) for image in dataset] == [3.0, 3.0]


def test_randaugment_table_covers_every_operation():
    names = [name for name, _, _ in RANDAUGMENT_TABLE]
    augment = randaugment(seed=0)
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype("float32")
    outputs = np.stack([augment(tf.constant(image)).numpy() for _ in range(8)])

    assert len(names) == len(set(names)) == 13
    assert outputs.shape == (8, 32, 32, 3) and 0 <= outputs.min() and outputs.max() <= 255
    assert len({output.tobytes() for output in outputs}) == 8  # a new draw for every image


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"magnitude": 11}, "Received: randaugment_magnitude=11"),
        ({"ops": -1}, "Received: randaugment_ops=-1"),
        ({"operations": ["spin"]}, "Received: operations=\\['spin'\\]"),
    ],
)
def test_bad_randaugment_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        randaugment(seed=0, **kwargs)


@pytest.mark.parametrize("option", ["mixup", "cutmix"])
def test_multi_hot_rows_mix_label_by_label(option):
    """Black images have labels {0}, white ones {1, 2}: a mixed row weighs each image's labels by
    its share, so labels 1 and 2 get the white share and label 0 the black one."""
    white = np.arange(48) % 2
    images = np.repeat(white.astype("float32") * 255.0, SIZE * SIZE * 3).reshape(-1, SIZE, SIZE, 3)
    labels = np.stack([1 - white, white, white], axis=1).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)

    mixed_images, mixed = take_all(mix_batches(batches, **{option: 1.0}, seed=0))

    assert ((mixed > 0.01) & (mixed < 0.99)).any()
    np.testing.assert_allclose(mixed[:, 1], mixed[:, 2], atol=1e-6)
    np.testing.assert_allclose(mixed[:, 0], 1 - mixed[:, 1], atol=1e-5)
    tolerance = 0.02 if option == "mixup" else 0.1
    np.testing.assert_allclose(mixed_images.mean(axis=(1, 2, 3)) / 255.0, mixed[:, 1], atol=tolerance)
