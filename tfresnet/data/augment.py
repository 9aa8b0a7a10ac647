"""Stronger augmentation from Keras's own layers: RandAugment on each training image, MixUp and
CutMix on training batches.

- `augmentation="randaugment"` (a loader argument): the standard random resized crop and flip,
  then the operations of `keras.layers.RandAugment` (two drawn per image among its eleven, at
  its default magnitude factor 0.5), in the `tf.data` pipeline on the CPU.
- `mix_batches(..., mixup=ALPHA, cutmix=ALPHA)` (`fine_tune`'s `mixup` / `cutmix`): blends pairs
  of training images and their one-hot labels with `keras.layers.MixUp` (a mixing weight drawn
  from Beta(ALPHA, ALPHA)) or pastes a box of one into the other with `keras.layers.CutMix`
  (labels weighted by area); with both, each batch gets one or the other, at even odds.
  Evaluation batches are never mixed.

These layers draw from Keras's seed generators: with a seed, a run starts from the same draws,
but the parallel pipeline may hand them to images in another order, so their draws are not
repeatable image by image as the crop and flip are.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# RandAugment's settings: Keras's defaults (two operations per image, magnitude factor 0.5).
RANDAUGMENT_OPS = 2
RANDAUGMENT_FACTOR = 0.5


def randaugment(seed: int | None = None):
    """The per-image RandAugment of `augmentation="randaugment"`: raw pixels in, raw pixels out.

    The operations are those of `keras.layers.RandAugment` (its own sub-layers, with their
    settings), drawn `RANDAUGMENT_OPS` times per image; each draw runs only the operation it
    chose. (The layer itself runs every operation and keeps the chosen ones: the same images
    for about eleven times the work.)

    Example:
    >>> augment = randaugment(seed=0)
    >>> augment(tf.zeros((64, 64, 3))).shape
    TensorShape([64, 64, 3])
    """
    layer = keras.layers.RandAugment(
        value_range=(0, 255),
        num_ops=RANDAUGMENT_OPS,
        factor=RANDAUGMENT_FACTOR,
        seed=seed,
        dtype="float32",
    )
    # The layer's operations, as it names them (pinned by tests/test_augment.py).
    operations = [getattr(layer, name) for name in layer._AUGMENT_LAYERS]
    generator = keras.random.SeedGenerator(seed)

    def augment(image: tf.Tensor) -> tf.Tensor:
        for _ in range(RANDAUGMENT_OPS):
            choice = keras.random.randint((), 0, len(operations), seed=generator)
            branches = [_applied(operation, image) for operation in operations]
            image = tf.switch_case(choice, branches)
        return tf.clip_by_value(image, 0.0, 255.0)

    return augment


def _applied(operation: keras.layers.Layer, image: tf.Tensor):
    return lambda: tf.cast(operation(image, training=True), tf.float32)


def check_mixing(mixup: float, cutmix: float) -> None:
    """Raises a ValueError unless `mixup` and `cutmix` are alphas >= 0 (0: off)."""
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(
                f"{name} is the alpha of its Beta distribution, a number >= 0 (0: off; 0.2 to 1 are "
                f"usual). Received: {name}={value!r}"
            )


def mix_batches(
    dataset: tf.data.Dataset, *, mixup: float = 0.0, cutmix: float = 0.0, seed: int | None = None
) -> tf.data.Dataset:
    """MixUp and/or CutMix on batches of `(images, one-hot labels)`; unchanged when both are 0.

    Args:
        dataset: Training batches with one-hot (float) labels.
        mixup: MixUp's alpha (0: off).
        cutmix: CutMix's alpha (0: off).
        seed: Seeds the layers' draws and, with both on, the choice per batch.

    Returns:
        The dataset, its labels now soft (each row still sums to 1).

    Example:
    >>> train = data.train.map(one_hot_labels(3))
    >>> mixed = mix_batches(train, mixup=0.2)
    """
    check_mixing(mixup, cutmix)
    layers = []
    if mixup:
        layers.append(keras.layers.MixUp(alpha=float(mixup), seed=seed, dtype="float32"))
    if cutmix:
        layers.append(keras.layers.CutMix(factor=float(cutmix), seed=seed, dtype="float32"))
    if not layers:
        return dataset

    def apply(layer):
        def mix(images, labels):
            mixed = layer({"images": images, "labels": labels}, training=True)
            return tf.cast(mixed["images"], tf.float32), tf.cast(mixed["labels"], tf.float32)

        return mix

    if len(layers) == 1:
        return dataset.map(apply(layers[0]), num_parallel_calls=tf.data.AUTOTUNE)
    coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    mixup_batch, cutmix_batch = apply(layers[0]), apply(layers[1])

    def either(batch, coin):
        images, labels = batch
        return tf.cond(
            coin % 2 == 0, lambda: mixup_batch(images, labels), lambda: cutmix_batch(images, labels)
        )

    return tf.data.Dataset.zip((dataset, coins)).map(either, num_parallel_calls=tf.data.AUTOTUNE)
