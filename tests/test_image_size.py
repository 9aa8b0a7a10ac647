"""Image bombs: sizes read from headers, in Python and in the graph, before any decoding."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfresnet.data import decode_for_eval
from tfresnet.data.image_size import MAX_IMAGE_PIXELS, check_pixel_count, image_pixels, size_error

BOMB_PIXELS = 20000 * 20000


def test_the_default_cap_is_pils():
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485


def _encoded(image_format: str, width: int = 40, height: int = 30, **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "BMP"])
def test_python_and_graph_read_the_same_size(image_format, tmp_path):
    encoded = _encoded(image_format)
    path = tmp_path / f"image.{image_format.lower()}"
    path.write_bytes(encoded)
    assert image_pixels(str(path)) == 40 * 30
    check_pixel_count(tf.constant(encoded), 40 * 30)  # at the cap: accepted
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit"):
        check_pixel_count(tf.constant(encoded), 40 * 30 - 1)


def test_top_down_bmp_counts_its_negative_height(tmp_path):
    encoded = bytearray(_encoded("BMP"))
    encoded[22:26] = (-30).to_bytes(4, "little", signed=True)
    assert tf.io.decode_image(bytes(encoded)).shape == (30, 40, 3)  # TensorFlow reads it
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit"):
        check_pixel_count(tf.constant(bytes(encoded)), 40 * 30 - 1)


def test_bomb_is_measured_from_its_header(png_bomb):
    assert image_pixels(png_bomb) == BOMB_PIXELS
    assert size_error(BOMB_PIXELS) == (
        "image of 400000000 pixels is over the limit of 89478485 pixels"
    )
    assert size_error(BOMB_PIXELS, max_pixels=BOMB_PIXELS) is None


def test_decode_refuses_a_bomb_before_decoding(png_bomb):
    with open(png_bomb, "rb") as file:
        encoded = tf.constant(file.read())
    decode = tf.function(lambda data: decode_for_eval(data, 32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit of.*400000000"):
        decode(encoded)
