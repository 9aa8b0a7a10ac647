"""Image bombs: an image's width and height, read from its header before it is decoded.

A 48 KB PNG can declare 20000 x 20000 pixels, 1.2 GB once decoded. Every image is measured
from its header first and refused above `MAX_IMAGE_PIXELS` (PIL's own default cap): in Python
with PIL's header parsers (`image_pixels`: the dataset check, the folder listing, `predict`),
in the graph with `check_pixel_count` (the pipeline and the exported
`serving_default`, where an oversized image fails its request instead of allocating).
"""

from __future__ import annotations

import tensorflow as tf

# PIL's `Image.MAX_IMAGE_PIXELS`: 1024 * 1024 * 1024 // 4 // 3.
MAX_IMAGE_PIXELS = 89_478_485
_HEADER_BYTES = 26


def size_error(pixels: int, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """The reason an image of `pixels` pixels is refused, or None.

    Example:
    >>> size_error(20000 * 20000)
    'image of 400000000 pixels is over the limit of 89478485 pixels'
    """
    if pixels <= max_pixels:
        return None
    return f"image of {pixels} pixels is over the limit of {max_pixels} pixels"


def image_pixels(path: str) -> int | None:
    """Width times height of the JPEG, PNG, GIF or BMP at `path`, from its header (PIL's
    parsers, without decoding and without PIL's own cap); None for anything else.

    Example:
    >>> image_pixels("big.png")
    400000000
    """
    from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin

    parsers = (
        (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
        (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
        (b"GIF8", GifImagePlugin.GifImageFile),
        (b"BM", BmpImagePlugin.BmpImageFile),
    )
    try:
        with open(path, "rb") as file:
            start = file.read(8)
            file.seek(0)
            parser = next((parser for magic, parser in parsers if start.startswith(magic)), None)
            if parser is None:
                return None
            image = parser(file)
            width, height = image.size
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
        return None
    return int(width) * int(height)


def check_pixel_count(image_bytes: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Operation | None:
    """Asserts that encoded JPEG/PNG/GIF/BMP bytes declare at most `max_pixels` pixels.

    Reads the header only: JPEG's frame header (`tf.io.extract_jpeg_shape`), PNG's IHDR
    (bytes 16-24, big-endian), GIF's logical screen (bytes 6-10) and BMP's (bytes 18-26,
    little-endian, the height negative for top-down images). Other bytes pass (the decoder
    refuses them). Returns the assertion to run before decoding (None when eager).

    Raises:
        tf.errors.InvalidArgumentError: The image is larger than `max_pixels`.

    Example:
    >>> with tf.control_dependencies([check_pixel_count(image_bytes)]):
    ...     pixels = tf.io.decode_image(image_bytes)
    """
    pixels = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.reduce_prod(tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64)),
        lambda: _header_pixels(image_bytes),
    )
    return tf.debugging.Assert(
        pixels <= max_pixels,
        [
            "image over the limit of",
            max_pixels,
            "pixels. Received: pixels",
            pixels,
        ],
    )


def _header_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """Width times height from a PNG, GIF or BMP header (0 for other bytes), as int64."""
    header = tf.strings.substr(
        tf.strings.join([tf.strings.substr(image_bytes, 0, _HEADER_BYTES), "\0" * _HEADER_BYTES]),
        0,
        _HEADER_BYTES,
    )
    data = tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int64)

    def number(start: int, length: int, big_endian: bool) -> tf.Tensor:
        weights = [256**i for i in range(length)]
        return tf.reduce_sum(data[start : start + length] * (weights[::-1] if big_endian else weights))

    def signed32(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    png = number(16, 4, True) * number(20, 4, True)
    gif = number(6, 2, False) * number(8, 2, False)
    bmp = signed32(number(18, 4, False)) * signed32(number(22, 4, False))
    starts = tf.strings.substr(header, 0, 4)
    return tf.case(
        [
            (tf.equal(starts, b"\x89PNG"), lambda: png),
            (tf.equal(tf.strings.substr(header, 0, 4), b"GIF8"), lambda: gif),
            (tf.equal(tf.strings.substr(header, 0, 2), b"BM"), lambda: bmp),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )
