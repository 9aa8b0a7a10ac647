"""Tests of tfresnet.data.transforms: decoding every format, refusing palette BMPs, and an
antialiased resize that JPEG and PNG files share."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import write_image_folder
from PIL import Image

from tfresnet.data import decode_for_eval, from_arrays
from tfresnet.data.examples import FILE_VARIANTS
from tfresnet.data.transforms import CROP_FRACTION, eval_transform, train_transform

SIDE = 40  # the side of the images write_image_folder writes


def encode(pixels: np.ndarray, file_format: str, mode: str | None = None, **options) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def stripes(side: int = 512) -> np.ndarray:
    """Black and white vertical stripes 2 px wide: a plain bilinear shrink by an even factor
    samples only black or only white columns."""
    pixels = np.zeros((side, side, 3), np.uint8)
    pixels[:, (np.arange(side) // 2) % 2 == 1] = 255
    return pixels


def smooth_image(side: int = 512) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] / side
    channels = [127 + 100 * np.sin(2 * np.pi * 1.5 * x), 127 + 100 * np.cos(4 * np.pi * y), 255 * x * y]
    return np.stack(channels, axis=-1).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def format_files(tmp_path_factory) -> dict[str, str]:
    """One class folder's files of every format and colour mode, by name."""
    root = tmp_path_factory.mktemp("formats")
    names = write_image_folder(root, num_classes=2, images_per_class=len(FILE_VARIANTS), size=SIDE)
    folder = os.path.join(root, names[0])
    return {name: os.path.join(folder, name) for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("index", range(len(FILE_VARIANTS)), ids=[f"{m}-{f}" for m, f, _ in FILE_VARIANTS])
def test_every_format_and_colour_mode_becomes_rgb(format_files, index):
    """A crop side equal to image_size needs no resampling: pixels must match PIL's RGB."""
    path = sorted(format_files.values())[index]
    side = int(CROP_FRACTION * SIDE)
    top = (SIDE - side) // 2

    decoded = decode_for_eval(tf.io.read_file(path), side).numpy()

    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)[
        top : top + side, top : top + side
    ]
    assert decoded.shape == (side, side, 3) and decoded.dtype == np.float32
    tolerance = 4 if path.endswith((".jpg", ".jpeg")) else 0
    np.testing.assert_allclose(decoded, expected, atol=tolerance)


def serve_like_export(image_bytes: bytes, image_size: int) -> tf.Tensor:
    """Decodes as the exported `serving_default` does: `tf.map_fn` in a `tf.function`."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(batch):
        spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)
        return tf.map_fn(
            lambda encoded: decode_for_eval(encoded, image_size), batch, fn_output_signature=spec
        )

    return serve(tf.constant([image_bytes]))


@pytest.mark.parametrize("mode", ["P", "L", "1"])
@pytest.mark.parametrize("call", ["eager", "serving"])
def test_bmp_other_than_24_or_32_bit_is_refused_naming_its_bit_depth(mode, call):
    pixels = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    contents = encode(pixels, "BMP", mode)
    bits = int.from_bytes(contents[28:30], "little")
    assert bits in (1, 8)  # precondition: PIL wrote a palette BMP

    with pytest.raises(
        tf.errors.InvalidArgumentError, match=rf"24 or 32 bits per pixel.*bit depth\W+{bits}\b"
    ):
        if call == "eager":
            decode_for_eval(contents, 32)
        else:
            serve_like_export(contents, 32)


def test_palette_bmp_would_decode_to_wrong_colours():
    """Why such BMPs are refused: TensorFlow reads the palette indices as gray levels."""
    pixels = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    contents = encode(pixels, "BMP", "P")

    raw = tf.io.decode_image(contents, channels=3, expand_animations=False).numpy()

    truth = np.asarray(Image.open(io.BytesIO(contents)).convert("RGB"))
    assert np.abs(raw.astype(int) - truth).mean() > 20
    assert (raw[..., 0] == raw[..., 1]).all()  # gray


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("file_format", ["BMP", "PNG"])
def test_24_and_32_bit_bmp_and_png_decode_exactly(file_format, mode):
    pixels = np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    contents = encode(pixels, file_format, mode)
    side = int(CROP_FRACTION * SIDE)
    top = (SIDE - side) // 2

    decoded = decode_for_eval(contents, side).numpy()

    np.testing.assert_array_equal(decoded, pixels[top : top + side, top : top + side])


@pytest.mark.parametrize(
    "transform",
    [
        lambda pixels, size: decode_for_eval(encode(pixels, "PNG"), size),
        lambda pixels, size: eval_transform(tf.constant(pixels), size),
        lambda pixels, size: train_transform(tf.constant(encode(pixels, "PNG")), tf.constant([3, 0]), size),
    ],
    ids=["decode_for_eval", "eval_transform-pixels", "train_transform"],
)
def test_shrinking_fine_stripes_gives_uniform_gray_not_aliasing(transform):
    pixels = stripes(512)
    side = int(CROP_FRACTION * 512)
    crop = pixels[:side, :side].astype(np.float32)
    # Precondition: a resize that samples instead of averaging turns the stripes into stripes.
    assert tf.image.resize(crop, (32, 32), antialias=False).numpy().std() > 100

    resized = transform(pixels, 32).numpy()

    assert resized.shape == (32, 32, 3)
    assert abs(resized.mean() - 127.5) < 3 and resized.std() < 8


@pytest.mark.parametrize("image_size", [32, 100, 224])  # libjpeg shrinks the 448 px crop 8, 4 and 2 times
def test_jpeg_path_stays_within_a_few_gray_levels_of_the_png_path(image_size):
    pixels = smooth_image(512)

    from_jpeg = decode_for_eval(encode(pixels, "JPEG", quality=95), image_size).numpy()
    from_png = decode_for_eval(encode(pixels, "PNG"), image_size).numpy()

    difference = np.abs(from_jpeg - from_png)
    assert difference.max() <= 5 and difference.mean() < 1.5


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True, None])
def test_decode_for_eval_refuses_a_bad_image_size(image_size):
    with pytest.raises(
        ValueError, match=rf"image_size must be a positive integer. Received: image_size={image_size!r}"
    ):
        decode_for_eval(encode(stripes(8), "PNG"), image_size)


def test_train_transform_is_seeded():
    contents = tf.constant(encode(smooth_image(96), "PNG"))

    first, again, other = (
        train_transform(contents, tf.constant(seed), 32) for seed in ([1, 2], [1, 2], [5, 6])
    )

    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())


@pytest.mark.parametrize("crop_fraction", [1.0, 224 / 232, CROP_FRACTION, 0.5])
def test_the_evaluation_crop_keeps_its_fraction_of_the_shorter_side(crop_fraction):
    """An image of distinct pixels, its crop taken at the crop's own size: no resampling, so
    the decoded pixels are exactly the central square of that fraction."""
    height, width = 60, 90
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    side = int(crop_fraction * height)
    top, left = (height - side) // 2, (width - side) // 2

    decoded = decode_for_eval(encode(pixels, "PNG"), side, crop_fraction=crop_fraction).numpy()
    np.testing.assert_array_equal(decoded, pixels[top : top + side, left : left + side])


@pytest.mark.parametrize("crop_fraction", [0, 1.5, -0.1, True, "0.9"])
def test_a_crop_fraction_outside_0_to_1_is_refused(crop_fraction):
    with pytest.raises(ValueError, match="crop_fraction .* in \\(0, 1\\]"):
        decode_for_eval(encode(np.zeros((8, 8, 3), np.uint8), "PNG"), 8, crop_fraction=crop_fraction)
    images, labels = np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="crop_fraction"):
        from_arrays(images, labels, image_size=8, val_split=0, crop_fraction=crop_fraction)


def test_the_loaders_evaluate_at_their_crop_fraction():
    """The validation and evaluation batches of `from_arrays(crop_fraction=...)` are the
    central squares of that fraction; the data says which."""
    images = np.random.default_rng(1).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1])
    data = from_arrays(images, labels, image_size=20, val_split=0, batch_size=4, crop_fraction=0.5)
    assert data.crop_fraction == 0.5
    batch = next(iter(data.train_evaluation))[0].numpy()
    np.testing.assert_array_equal(batch, images[:, 10:30, 10:30].astype(np.float32))


def test_one_setting_decodes_files_with_one_trace_shared_by_pipelines_and_exports(tmp_path):
    """Each setting's transforms of a file are one `tf.function`: a second folder, and a
    predictor of the same setting, run the graph traced for the first instead of tracing it again;
    another crop fraction is a function of its own."""
    from tfresnet.data import from_folder, transforms
    from tfresnet.export.predictor import load_predictor
    from tfresnet.export.saved_model import export_saved_model
    from tfresnet.models import build_classifier

    image_size = 36  # a size no other test of this process decodes at
    write_image_folder(str(tmp_path / "images"), num_classes=2, images_per_class=4, size=SIDE)
    options = {"image_size": image_size, "batch_size": 4, "val_split": 0.25, "augmentation": "standard"}
    for seed in (0, 1):
        data = from_folder(str(tmp_path / "images"), seed=seed, **options)
        [next(iter(batches)) for batches in (data.train, data.validation)]
    evaluation = transforms.eval_of_bytes(image_size, transforms.MAX_IMAGE_PIXELS, CROP_FRACTION)
    training = transforms._train_of_bytes(image_size, transforms.MAX_IMAGE_PIXELS, tf.int64)
    assert (evaluation.experimental_get_tracing_count(), training.experimental_get_tracing_count()) == (1, 1)

    model = build_classifier(2, backbone="resnet-test", weights=None, image_size=image_size)
    export_dir = export_saved_model(model, str(tmp_path / "export" / "1"), class_names=data.class_names)
    rows = load_predictor(export_dir).predict([str(tmp_path / "images")])
    assert len(rows) == 8 and not any(row["error"] for row in rows)
    assert evaluation.experimental_get_tracing_count() == 2  # once more, inside the SavedModel
    other = transforms.eval_of_bytes(image_size, transforms.MAX_IMAGE_PIXELS, 0.5)
    assert other is not evaluation and other.experimental_get_tracing_count() == 1  # traced when made
