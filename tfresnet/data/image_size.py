"""Image bombs: an image's width and height, read from its header before it is decoded.

A 48 KB PNG can declare 20000 x 20000 pixels, 1.2 GB once decoded. Every image is measured
from its header first and refused above `MAX_IMAGE_PIXELS` (PIL's own default cap): in Python
with PIL's header parsers (`image_pixels`: the dataset check, the folder listing, `predict`),
in the graph with `check_pixel_count` (the pipeline and the exported
`serving_default`, where an oversized image fails its request instead of allocating).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import tensorflow as tf

# PIL's `Image.MAX_IMAGE_PIXELS`: 1024 * 1024 * 1024 // 4 // 3.
MAX_IMAGE_PIXELS = 89_478_485
_HEADER_BYTES = 26
# A GIF: its signature, the bytes before the screen's colour table, the blocks' first bytes.
GIF_MAGIC = b"GIF8"
_GIF_SCREEN_BYTES = 13
_GIF_EXTENSION = 0x21
_GIF_IMAGE = 0x2C


def size_error(pixels: int, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """The reason an image of `pixels` pixels is refused, or None.

    Example:
    >>> size_error(20000 * 20000)
    'image of 400000000 pixels is over the limit of 89478485 pixels'
    """
    if pixels <= max_pixels:
        return None
    return f"image of {pixels} pixels is over the limit of {max_pixels} pixels"


def image_pixels(source: str | bytes) -> int | None:
    """Width times height of the JPEG, PNG or BMP at the path `source` (local or on a store,
    `gs://...`), or in the bytes `source`, from its header (PIL's parsers, without decoding and
    without PIL's own cap), or what a GIF decodes to (`gif_pixels`); None for anything else.

    Example:
        image_pixels("big.png")
        # 400000000
    """
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    from tfresnet.paths import open_file

    parsers = (
        (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
        (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
        (b"BM", BmpImagePlugin.BmpImageFile),
    )
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open_file(source, "rb") as file:
            start = file.read(8)
            file.seek(0)
            if start.startswith(GIF_MAGIC):
                return gif_pixels(file.read())
            parser = next((parser for magic, parser in parsers if start.startswith(magic)), None)
            if parser is None:
                return None
            image = parser(file)
            width, height = image.size
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
        return None
    return int(width) * int(height)


def gif_pixels(contents: bytes) -> int:
    """The pixels TensorFlow decodes a GIF to: every frame, on a canvas as wide and as high as
    the largest frame (TensorFlow ignores the logical screen), counted by walking the file's
    blocks without decoding them (0 where the file holds no frame).

    Example:
        gif_pixels(open("animation.gif", "rb").read())  # 10 frames of 40 x 30
        # 12000
    """

    def byte(index: int) -> int:
        return contents[index] if index < len(contents) else 0

    def after_sub_blocks(position: int) -> int:
        while position < len(contents) and contents[position]:
            position += contents[position] + 1
        return position + 1

    frames = width = height = 0
    position = _GIF_SCREEN_BYTES + _colour_table_bytes(byte(10))
    while position < len(contents) and byte(position) in (_GIF_EXTENSION, _GIF_IMAGE):
        if byte(position) == _GIF_IMAGE:
            frames += 1
            width = max(width, _uint16(byte, position + 1) + _uint16(byte, position + 5))
            height = max(height, _uint16(byte, position + 3) + _uint16(byte, position + 7))
            position = after_sub_blocks(position + 11 + _colour_table_bytes(byte(position + 9)))
        else:
            position = after_sub_blocks(position + 2)
    return frames * width * height


def _uint16(byte: Callable[[int], int], position: int) -> int:
    return byte(position) + 256 * byte(position + 1)


def _colour_table_bytes(flags):
    """The bytes of the colour table a GIF's screen or image descriptor's flags announce (0 or
    3 x 2^(size + 1)); on ints and on int64 tensors alike."""
    return (flags // 128) * 3 * 2 ** (flags % 8 + 1)


def check_pixel_count(image_bytes: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Operation | None:
    """Asserts that encoded JPEG/PNG/GIF/BMP bytes declare at most `max_pixels` pixels.

    Reads headers only: JPEG's frame header (`tf.io.extract_jpeg_shape`), PNG's IHDR
    (bytes 16-24, big-endian), BMP's (bytes 18-26, little-endian, the height negative for
    top-down images), and every image descriptor of a GIF (as `gif_pixels`: all its frames
    are decoded). Other bytes pass (the decoder refuses them). Returns the assertion to run
    before decoding (None when eager).

    Raises:
        tf.errors.InvalidArgumentError: The image is larger than `max_pixels`.

    Example:
        with tf.control_dependencies([check_pixel_count(image_bytes)]):
            pixels = tf.io.decode_image(image_bytes)
    """
    import tensorflow as tf

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
    """Width times height from a PNG or BMP header, a GIF's frames times its canvas (0 for
    other bytes), as int64."""
    import tensorflow as tf

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
    bmp = signed32(number(18, 4, False)) * signed32(number(22, 4, False))
    starts = tf.strings.substr(header, 0, 4)
    return tf.case(
        [
            (tf.equal(starts, b"\x89PNG"), lambda: png),
            (tf.equal(starts, GIF_MAGIC), lambda: _gif_pixels_in_graph(image_bytes)),
            (tf.equal(tf.strings.substr(header, 0, 2), b"BM"), lambda: bmp),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def _gif_pixels_in_graph(image_bytes: tf.Tensor) -> tf.Tensor:
    """`gif_pixels` in the graph, as int64: the same walk over the file's blocks."""
    import tensorflow as tf

    contents = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int64)
    size = tf.size(contents, out_type=tf.int64)

    def byte(index):
        return tf.where(index < size, tf.gather(contents, tf.clip_by_value(index, 0, size - 1)), 0)

    def after_sub_blocks(position):
        def more(position):
            return tf.logical_and(position < size, byte(position) > 0)

        return tf.while_loop(more, lambda position: [position + byte(position) + 1], [position])[0] + 1

    def more_blocks(position, frames, width, height):
        kind = byte(position)
        return tf.logical_and(position < size, (kind == _GIF_EXTENSION) | (kind == _GIF_IMAGE))

    def block(position, frames, width, height):
        image = byte(position) == _GIF_IMAGE
        right = _uint16(byte, position + 1) + _uint16(byte, position + 5)
        bottom = _uint16(byte, position + 3) + _uint16(byte, position + 7)
        start = tf.where(image, position + 11 + _colour_table_bytes(byte(position + 9)), position + 2)
        return [
            after_sub_blocks(start),
            frames + tf.cast(image, tf.int64),
            tf.where(image, tf.maximum(width, right), width),
            tf.where(image, tf.maximum(height, bottom), height),
        ]

    start = _GIF_SCREEN_BYTES + _colour_table_bytes(byte(tf.constant(10, tf.int64)))
    zero = tf.constant(0, tf.int64)
    _, frames, width, height = tf.while_loop(more_blocks, block, [start, zero, zero, zero])
    return frames * width * height
