"""The image transforms: decode, crop and resize, the one evaluation transform the export also uses.

Two transforms exist:
- evaluation (`decode_for_eval`): the central square of `crop_fraction` of the shorter side,
  resized to `image_size`; by default 87.5% (`CROP_FRACTION`: the 224 px crop of an image
  resized to 256 px, how Keras's and torchvision's V1 weights were evaluated), 224/232 for
  torchvision's V2 weights (each weights' fraction: `tfresnet.models.eval_crop_fraction`);
- training with `augmentation="standard"`: a random crop of 8% to 100% of the area with an
  aspect ratio of 3/4 to 4/3, resized to `image_size`, then a random horizontal flip.
JPEG files are decoded only inside the crop window, shrunk 2, 4 or 8 times by libjpeg
when the crop is that much larger than `image_size`; other formats are decoded, then cropped.
Resizing is bilinear and antialiased (like torchvision's and PIL's resize): shrinking averages
every source pixel instead of sampling a few, so fine patterns do not alias.
BMP images other than 24- and 32-bit are refused: TensorFlow reads them, 8-bit palette ones
included, as wrong colours.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from tfresnet.data.image_size import MAX_IMAGE_PIXELS, check_pixel_count

CROP_FRACTION = 0.875
RANDOM_CROP_AREA = (0.08, 1.0)
RANDOM_CROP_ASPECT = (3 / 4, 4 / 3)
RANDOM_CROP_ATTEMPTS = 10
JPEG_SHRINK_RATIOS = (1, 2, 4, 8)
# The BMP bit depths TensorFlow decodes correctly: it reads 8-bit BMPs as gray levels,
# ignoring their palette.
BMP_BITS = (24, 32)


def decode_for_eval(
    image_bytes: tf.Tensor,
    image_size: int,
    max_pixels: int = MAX_IMAGE_PIXELS,
    crop_fraction: float = CROP_FRACTION,
) -> tf.Tensor:
    """Decodes one encoded image exactly as the evaluation pipeline does.

    JPEG, PNG, BMP (24- and 32-bit) and GIF (first frame); grayscale, RGBA and palette
    images become RGB. The central square of `crop_fraction` of the shorter side is resized
    bilinearly, antialiased, to `image_size` (a JPEG crop at least twice that size is
    first shrunk 2, 4 or 8 times by libjpeg while decoding), and values are rounded to
    whole pixel values. Graph-safe: use it inside `tf.function`, `tf.map_fn` or a serving
    signature.

    Args:
        image_bytes: Scalar string tensor holding the encoded file.
        image_size: Side of the square output, in pixels.
        max_pixels: The largest image accepted, read from its header before decoding
            (default PIL's cap, about 89 megapixels).
        crop_fraction: The side of the central square, as a fraction of the shorter side
            (the data's `ImageData.crop_fraction`; an export keeps its own).

    Returns:
        float32 tensor of shape `(image_size, image_size, 3)` with values in [0, 255].

    Raises:
        tf.errors.InvalidArgumentError: The bytes are not a readable image, are a BMP
            of a bit depth other than 24 or 32 (convert those to PNG), or declare more than
            `max_pixels` pixels.

    Example:
        image = decode_for_eval(tf.io.read_file("flowers/daisy/1.jpg"), 224)
        image.shape, image.dtype
        # (TensorShape([224, 224, 3]), tf.float32)
    """
    check_positive_int("image_size", image_size)
    check_crop_fraction(crop_fraction)
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    return eval_transform(image_bytes, image_size, max_pixels, crop_fraction)


def eval_transform(
    image: tf.Tensor,
    image_size: int,
    max_pixels: int = MAX_IMAGE_PIXELS,
    crop_fraction: float = CROP_FRACTION,
) -> tf.Tensor:
    """The evaluation transform of encoded bytes or decoded pixels, unchecked (see `decode_for_eval`)."""
    if _is_one_file(image):
        return eval_of_bytes(image_size, max_pixels, crop_fraction)(image)
    return _eval(image, image_size, max_pixels, crop_fraction)


def train_transform(
    image: tf.Tensor, seed: tf.Tensor, image_size: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> tf.Tensor:
    """The `"standard"` training transform: a random resized crop, then a random flip, seeded by `seed`."""
    if _is_one_file(image):
        seed = tf.convert_to_tensor(seed)
        return _train_of_bytes(int(image_size), int(max_pixels), seed.dtype)(image, seed)
    return _train(image, seed, image_size, max_pixels)


# The transforms are graph code as written (tf.cond, tf.switch_case; Python `if`s test only shapes
# and dtypes): autograph's conversion would only cost time, about a second a process.
@tf.autograph.experimental.do_not_convert
def _eval(image: tf.Tensor, image_size: int, max_pixels: int, crop_fraction: float) -> tf.Tensor:
    return tf.round(_crop_and_resize(image, _central_box(crop_fraction), image_size, max_pixels))


@tf.autograph.experimental.do_not_convert
def _train(image: tf.Tensor, seed: tf.Tensor, image_size: int, max_pixels: int) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = _crop_and_resize(image, _random_box(crop_seed), image_size, max_pixels)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


# The transforms of one encoded file, as `tf.function`s made once per setting in a process: their
# graph (the header checks, four decoders) is traced once, when made, then called by every pipeline,
# export and predictor that uses the setting, instead of traced again by each (about 0.5 s each
# time). Made under a lock and traced before anything calls them: threads that call a `tf.function`
# before its first trace ends each trace it again.
def _is_one_file(image: tf.Tensor) -> bool:
    return image.dtype == tf.string and image.shape.rank == 0


_MAKING = threading.RLock()  # a transform made inside the making of another would not wait


def _made_once(make: Callable[..., tf.types.experimental.PolymorphicFunction]) -> Callable:
    """`make(*setting)`, made once per setting in a process, under a lock, and traced before any
    caller gets it."""

    @functools.cache
    def traced(*setting):
        function = make(*setting)
        function.get_concrete_function()  # its input_signature says what to trace
        return function

    @functools.wraps(make)
    def made(*setting):
        with _MAKING:
            return traced(*setting)

    return made


def eval_of_bytes(image_size: int, max_pixels: int = MAX_IMAGE_PIXELS, crop_fraction: float = CROP_FRACTION):
    """The evaluation transform of one encoded file, a traced `tf.function` shared in the process.

    Unchecked (see `decode_for_eval`); safe to call from several threads at once.

    Example:
        decode = eval_of_bytes(224)
        decode(tf.io.read_file("flowers/daisy/1.jpg")).shape
        # TensorShape([224, 224, 3])
    """
    return _eval_of_bytes(int(image_size), int(max_pixels), float(crop_fraction))


@_made_once
def _eval_of_bytes(image_size: int, max_pixels: int, crop_fraction: float):
    return tf.function(
        lambda image_bytes: _eval(image_bytes, image_size, max_pixels, crop_fraction),
        input_signature=[tf.TensorSpec([], tf.string)],
        autograph=False,
    )


@_made_once
def _train_of_bytes(image_size: int, max_pixels: int, seed_dtype: tf.DType):
    return tf.function(
        lambda image_bytes, seed: _train(image_bytes, seed, image_size, max_pixels),
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None], seed_dtype)],
        autograph=False,
    )


def check_positive_int(name: str, value) -> None:
    """Raises a ValueError naming `name` unless `value` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def check_crop_fraction(crop_fraction: float) -> float:
    """Raises a ValueError unless `crop_fraction` is a number in (0, 1]; returns it as a float."""
    number = isinstance(crop_fraction, (int, float)) and not isinstance(crop_fraction, bool)
    if not number or not 0 < crop_fraction <= 1:
        raise ValueError(
            f"crop_fraction is the side of the evaluation's central crop as a fraction of the shorter "
            f"side, in (0, 1] (0.875: a 224 px crop of 256 px). Received: crop_fraction={crop_fraction!r}"
        )
    return float(crop_fraction)


def _central_box(crop_fraction: float) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    def box(height, width):
        shorter = tf.cast(tf.minimum(height, width), tf.float32)
        side = tf.maximum(tf.cast(crop_fraction * shorter, tf.int32), 1)
        return (height - side) // 2, (width - side) // 2, side, side

    return box


def _random_box(seed: tf.Tensor) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    def box(height, width):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.stack([height, width, 3]),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=RANDOM_CROP_AREA[0],
            aspect_ratio_range=RANDOM_CROP_ASPECT,
            area_range=RANDOM_CROP_AREA,
            max_attempts=RANDOM_CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        return begin[0], begin[1], size[0], size[1]

    return box


def _crop_and_resize(image: tf.Tensor, box: Callable, image_size: int, max_pixels: int) -> tf.Tensor:
    """Crops `box(height, width)` out of encoded bytes or decoded pixels, then resizes."""
    if image.dtype == tf.string:
        with tf.control_dependencies([check_pixel_count(image, max_pixels)]):
            image = _decode_and_crop(image, box, image_size)
    else:
        image = _crop(_to_rgb(image), box)
    resized = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def _decode_and_crop(image_bytes: tf.Tensor, box: Callable, image_size: int) -> tf.Tensor:
    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes)
        top, left, height, width = box(shape[0], shape[1])
        # libjpeg shrinks by 2, 4 or 8 while decoding (a box filter, and far less work) as
        # long as the crop stays at least image_size; the bilinear resize does the rest.
        shorter = tf.minimum(height, width)
        larger = [ratio * image_size for ratio in JPEG_SHRINK_RATIOS[1:]]
        shrink = tf.reduce_sum(tf.cast(shorter >= larger, tf.int32))

        def decode(ratio):
            window = tf.stack(
                [top // ratio, left // ratio, tf.maximum(height // ratio, 1), tf.maximum(width // ratio, 1)]
            )
            return lambda: tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3, ratio=ratio)

        return tf.switch_case(shrink, [decode(ratio) for ratio in JPEG_SHRINK_RATIOS])

    def other():
        with tf.control_dependencies([check_bmp_bits(image_bytes)]):
            pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return _crop(pixels, box)

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def check_bmp_bits(image_bytes: tf.Tensor) -> tf.Operation | None:
    """Asserts that encoded bytes are not a BMP of a bit depth TensorFlow decodes wrongly.

    Returns the assertion to run before decoding (None when executing eagerly, where a
    failed assertion raises at once).

    Raises:
        tf.errors.InvalidArgumentError: The bytes are a BMP not of 24 or 32 bits per pixel.
    """
    # The bit depth is the little-endian uint16 at byte 28; pad short strings with zeros.
    header = tf.strings.substr(tf.strings.join([tf.strings.substr(image_bytes, 0, 30), "\0" * 30]), 0, 30)
    is_bmp = tf.equal(tf.strings.substr(header, 0, 2), "BM")
    bits = tf.io.decode_raw(tf.strings.substr(header, 28, 2), tf.uint16, little_endian=True)[0]
    supported = tf.reduce_any(tf.equal(tf.cast(bits, tf.int32), BMP_BITS))
    return tf.debugging.Assert(
        tf.logical_or(tf.logical_not(is_bmp), supported),
        [
            f"BMP images must have {' or '.join(map(str, BMP_BITS))} bits per pixel: TensorFlow decodes "
            f"other BMPs, 8-bit palette ones included, to wrong colours. Convert the image to PNG or "
            f"24-bit BMP. Received: BMP bit depth",
            bits,
        ],
    )


def _crop(image: tf.Tensor, box: Callable) -> tf.Tensor:
    shape = tf.shape(image)
    top, left, height, width = box(shape[0], shape[1])
    return image[top : top + height, left : left + width]


def _to_rgb(pixels: tf.Tensor) -> tf.Tensor:
    channels = pixels.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(pixels)
    if channels == 4:
        return pixels[..., :3]
    if channels == 3:
        return pixels
    raise ValueError(
        f"Images must have 1 (gray), 3 (RGB) or 4 (RGBA) channels. Received: shape={pixels.shape}"
    )
