"""Stronger augmentation from Keras's own layers: RandAugment on each training image, MixUp and
CutMix on training batches.

- `augmentation="randaugment"` (a loader argument): the standard random resized crop and flip,
  then `randaugment_ops` operations drawn per image from `RANDAUGMENT_TABLE` (Keras's
  preprocessing layers, as `keras.layers.RandAugment` uses them) at `randaugment_magnitude` on
  timm's 0-10 scale, in the `tf.data` pipeline on the CPU.
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

from typing import Callable, Sequence

import keras
import tensorflow as tf

from tfresnet import internals

# === RandAugment ===

# timm's defaults (`rand-m9-n2`): the magnitude on its 0-10 scale, the operations per image.
RANDAUGMENT_MAGNITUDE = 9
RANDAUGMENT_OPS = 2
MAX_MAGNITUDE = 10
# What the geometric operations fill uncovered pixels with (timm fills with the mean colour).
_FILL = {"fill_mode": "constant", "fill_value": 128.0}
_RANGE = {"value_range": (0, 255)}


def _solarize(level: float, seed: int | None):
    """Inverts the pixels at or above a threshold drawn in [256 - 256 * level, 256]."""
    generator = keras.random.SeedGenerator(seed)

    def solarize(image: tf.Tensor) -> tf.Tensor:
        threshold = keras.random.uniform((), 256.0 * (1.0 - level), 256.0, seed=generator)
        return tf.where(image >= threshold, 255.0 - image, image)

    return solarize


# The operations RandAugment draws from, as timm's `rand_augment_transform` sets them at a
# magnitude m (its "increasing" table, `inc1`: a higher m is always stronger), with level = m / 10.
# Each row: the operation, timm's setting at m, and the Keras layer that draws within it.
# The Keras layers draw each setting uniformly within the range, either sign (timm draws the sign
# and uses m itself): at m, no image is changed more than timm's m changes it.
# Keras's brightness adds an offset where timm's multiplies: the offset is the one timm's factor
# gives a mid-grey pixel. timm's Invert and SolarizeAdd have no Keras layer and are left out.
RANDAUGMENT_TABLE = (
    ("rotate", "+/- 30 * m/10 degrees",
     lambda level, seed: keras.layers.RandomRotation(30 * level / 360, **_FILL, seed=seed)),
    ("shear_x", "+/- 0.3 * m/10",
     lambda level, seed: keras.layers.RandomShear(0.3 * level, 0.0, **_FILL, seed=seed)),
    ("shear_y", "+/- 0.3 * m/10",
     lambda level, seed: keras.layers.RandomShear(0.0, 0.3 * level, **_FILL, seed=seed)),
    ("translate_x", "+/- 0.45 * m/10 of the side",
     lambda level, seed: keras.layers.RandomTranslation(0.0, 0.45 * level, **_FILL, seed=seed)),
    ("translate_y", "+/- 0.45 * m/10 of the side",
     lambda level, seed: keras.layers.RandomTranslation(0.45 * level, 0.0, **_FILL, seed=seed)),
    ("brightness", "factor 1 +/- 0.9 * m/10",
     lambda level, seed: keras.layers.RandomBrightness(0.45 * level, **_RANGE, seed=seed)),
    ("color", "factor 1 +/- 0.9 * m/10",
     lambda level, seed: keras.layers.RandomColorDegeneration(
         (-0.9 * level, 0.9 * level), **_RANGE, seed=seed)),
    ("contrast", "factor 1 +/- 0.9 * m/10",
     lambda level, seed: keras.layers.RandomContrast(0.9 * level, **_RANGE, seed=seed)),
    ("sharpness", "factor 1 +/- 0.9 * m/10",  # Keras's factor is half the enhancement factor
     lambda level, seed: keras.layers.RandomSharpness(
         (0.5 - 0.45 * level, 0.5 + 0.45 * level), **_RANGE, seed=seed)),
    ("posterize", "keep 4 - int(4 * m/10) bits",
     lambda level, seed: keras.layers.RandomPosterization(
         (max(1, 4 - int(4 * level)), 8), **_RANGE, seed=seed)),
    ("solarize", "threshold 256 - 256 * m/10", _solarize),
    ("auto_contrast", "(no magnitude)", lambda level, seed: keras.layers.AutoContrast(**_RANGE)),
    ("equalize", "(no magnitude)", lambda level, seed: keras.layers.Equalization(**_RANGE)),
)


def check_randaugment(magnitude: float, ops: int) -> None:
    """Raises a ValueError unless `magnitude` is in [0, 10] and `ops` an integer >= 0."""
    number = isinstance(magnitude, (int, float)) and not isinstance(magnitude, bool)
    if not number or not 0 <= magnitude <= MAX_MAGNITUDE:
        raise ValueError(
            f"randaugment_magnitude is RandAugment's strength on timm's scale, a number in [0, "
            f"{MAX_MAGNITUDE}] (9 is usual). Received: randaugment_magnitude={magnitude!r}"
        )
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 0:
        raise ValueError(
            f"randaugment_ops is the number of operations per image, an integer >= 0 (2 is usual). "
            f"Received: randaugment_ops={ops!r}"
        )


def randaugment(
    seed: int | None = None,
    *,
    magnitude: float = RANDAUGMENT_MAGNITUDE,
    ops: int = RANDAUGMENT_OPS,
    operations: Sequence[str | Callable[[tf.Tensor], tf.Tensor]] | None = None,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """The per-image RandAugment of `augmentation="randaugment"`: raw pixels in, raw pixels out.

    Draws `ops` operations per image from `RANDAUGMENT_TABLE` at `magnitude` (timm's 0-10
    scale), each draw running only the operation it chose (`keras.layers.RandAugment` runs
    every operation and keeps the chosen ones: the same images for about eleven times the work).

    Args:
        seed: Seeds the draws.
        magnitude: Strength on timm's scale, 0 to 10 (at 0 only `auto_contrast` and
            `equalize`, which have no magnitude, change an image).
        ops: Operations per image.
        operations: Names of `RANDAUGMENT_TABLE`'s rows to draw from (default: all of them),
            or callables on one image.

    Example:
    >>> augment = randaugment(seed=0, magnitude=9, ops=2)
    >>> augment(tf.zeros((64, 64, 3))).shape
    TensorShape([64, 64, 3])
    """
    check_randaugment(magnitude, ops)
    builders = {name: build for name, _, build in RANDAUGMENT_TABLE}
    chosen = list(builders) if operations is None else list(operations)
    unknown = [name for name in chosen if not callable(name) and name not in builders]
    if unknown or not chosen:
        raise ValueError(
            f"operations are names of RANDAUGMENT_TABLE ({', '.join(builders)}) or callables. "
            f"Received: operations={operations!r}"
        )
    level = magnitude / MAX_MAGNITUDE
    operations = [name if callable(name) else builders[name](level, seed) for name in chosen]
    generator = keras.random.SeedGenerator(seed)

    # One traced draw, called `ops` times: a pipeline's graph holds each operation once, not once
    # per draw (half the time to build a pipeline at the usual 2 draws).
    @tf.function(autograph=False)
    def draw(image: tf.Tensor) -> tf.Tensor:
        choice = keras.random.randint((), 0, len(operations), seed=generator)
        return tf.switch_case(choice, [_applied(operation, image) for operation in operations])

    def augment(image: tf.Tensor) -> tf.Tensor:
        for _ in range(ops):
            image = draw(image)
        return tf.clip_by_value(image, 0.0, 255.0)

    return augment


def _applied(operation: Callable[..., tf.Tensor], image: tf.Tensor):
    if isinstance(operation, keras.layers.Layer):
        return lambda: tf.cast(operation(image, training=True), tf.float32)
    return lambda: tf.cast(operation(image), tf.float32)


# === MixUp and CutMix ===


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
    """MixUp and/or CutMix on batches of `(images, one-hot labels)`, or of multi-hot rows (each
    label weighed by the shares of the images mixed); unchanged when both are 0.

    Args:
        dataset: Training batches with one-hot (float) labels or multi-hot rows.
        mixup: MixUp's alpha (0: off).
        cutmix: CutMix's alpha (0: off).
        seed: Seeds the layers' draws and, with both on, the choice per batch.

    Returns:
        The dataset, its labels now soft (a one-hot row still sums to 1).

    Example:
        train = data.train.map(one_hot_labels(3))
        mixed = mix_batches(train, mixup=0.2)
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

    # The same draws for the same seed, whatever TensorFlow's global seed is now.
    with internals.global_seed(seed):
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
