"""Image bombs: sizes read from headers, in Python and in the graph, before any decoding."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfresnet.data import decode_for_eval
from tfresnet.data.file_check import check_file
from tfresnet.data.image_size import MAX_IMAGE_PIXELS, check_pixel_count, gif_pixels, image_pixels, size_error

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
    assert size_error(BOMB_PIXELS) == ("image of 400000000 pixels is over the limit of 89478485 pixels")
    assert size_error(BOMB_PIXELS, max_pixels=BOMB_PIXELS) is None


def test_decode_refuses_a_bomb_before_decoding(png_bomb):
    with open(png_bomb, "rb") as file:
        encoded = tf.constant(file.read())
    decode = tf.function(lambda data: decode_for_eval(data, 32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit of.*400000000"):
        decode(encoded)


def _with_tiny_frames(gif: bytes, frames: int) -> bytes:
    """`gif` with `frames` 1 x 1 frames added before its trailer: TensorFlow decodes every frame,
    each on a canvas the size of the largest."""
    tiny = _encoded("GIF", width=1, height=1)
    flags = tiny[10]
    start = 13 + (3 * 2 ** (flags % 8 + 1) if flags & 0x80 else 0)
    assert tiny[start] == 0x2C and tiny[-1] == 0x3B  # PIL writes the image right after the screen
    return gif[:-1] + tiny[start:-1] * frames + gif[-1:]


def _animation(frames: int = 4) -> bytes:
    """An animated GIF whose later frames PIL crops to where they change (offset frames)."""
    base = np.random.default_rng(0).integers(0, 256, (21, 33, 3), dtype=np.uint8)
    images = []
    for index in range(frames):
        pixels = base.copy()
        pixels[5 + index : 9 + index, 3 + 2 * index : 10 + 2 * index] //= 2
        images.append(Image.fromarray(pixels))
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], optimize=True, disposal=2)
    return buffer.getvalue()


def _small_screen() -> bytes:
    gif = bytearray(_encoded("GIF"))
    gif[6:10] = (3).to_bytes(2, "little") + (2).to_bytes(2, "little")  # a 3 x 2 screen, a 40 x 30 frame
    return bytes(gif)


@pytest.mark.parametrize(
    "gif",
    [
        pytest.param(lambda: _encoded("GIF"), id="one frame"),
        pytest.param(_animation, id="animated, offset frames"),
        pytest.param(_small_screen, id="frame larger than the screen"),
        pytest.param(lambda: _with_tiny_frames(_encoded("GIF"), 3), id="tiny frames after a large one"),
    ],
)
def test_a_gif_is_measured_as_tensorflow_decodes_it(gif, tmp_path):
    encoded = gif()
    decoded = int(np.prod(tf.io.decode_gif(encoded).shape[:3]))
    path = tmp_path / "image.gif"
    path.write_bytes(encoded)
    assert gif_pixels(encoded) == image_pixels(str(path)) == decoded
    check_pixel_count(tf.constant(encoded), decoded)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit"):
        check_pixel_count(tf.constant(encoded), decoded - 1)


def test_a_gif_of_many_frames_is_a_bomb_though_its_first_frame_is_not(tmp_path):
    first = io.BytesIO()
    Image.new("RGB", (3000, 3000), (0, 90, 0)).save(first, "GIF")  # 9 megapixels, under the cap
    encoded = _with_tiny_frames(first.getvalue(), 10)  # 11 frames of 9 megapixels decoded
    path = tmp_path / "frames.gif"
    path.write_bytes(encoded)
    reason = f"image of {11 * 3000 * 3000} pixels is over the limit of {MAX_IMAGE_PIXELS} pixels"
    assert check_file(str(path)) == reason
    decode = tf.function(lambda data: decode_for_eval(data, 32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"image over the limit.*{11 * 3000 * 3000}"):
        decode(tf.constant(encoded))


def test_a_header_on_a_store_or_in_bytes_is_read_as_on_disk(png_bomb, ram_dir):
    from tfresnet import paths

    encoded = _encoded("JPEG")
    with open(png_bomb, "rb") as file:
        bomb = file.read()
    for name, contents in (("image.jpg", encoded), ("bomb.png", bomb)):
        with paths.open_file(paths.join(ram_dir, name), "wb") as file:
            file.write(contents)
    assert image_pixels(paths.join(ram_dir, "image.jpg")) == image_pixels(encoded) == 40 * 30
    assert image_pixels(paths.join(ram_dir, "bomb.png")) == image_pixels(bomb) == BOMB_PIXELS
    assert image_pixels(paths.join(ram_dir, "missing.png")) is None
