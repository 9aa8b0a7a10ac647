"""Tests of tfresnet.insight.check_images: the perceptual hash, near duplicates and unreadable images."""

import os
import shutil
import time

import numpy as np
import pytest
from conftest import CHECK_SIZE as SIZE
from conftest import photo, write_clean_folder
from PIL import Image

from tfresnet.data import from_folder
from tfresnet.insight import check_images, dataset_check

# === Near and exact duplicates ===


@pytest.mark.parametrize(
    "copy",
    ["jpeg-quality-50", "half-size", "double-size", "cropped-1px-each-side", "one-pixel-changed"],
)
def test_a_changed_copy_is_a_near_duplicate_not_an_exact_one(copy, tmp_path):
    root = write_clean_folder(str(tmp_path / "images"), per_class=3)
    original = Image.open(os.path.join(root, "cats", "00.png"))
    path = os.path.join(root, "cats", "copy.png")
    if copy == "jpeg-quality-50":
        path = path.replace(".png", ".jpg")
        original.save(path, quality=50)
    elif copy == "half-size":
        original.resize((SIZE // 2, SIZE // 2)).save(path)
    elif copy == "double-size":
        original.resize((2 * SIZE, 2 * SIZE), Image.BICUBIC).save(path)
    elif copy == "cropped-1px-each-side":
        original.crop((1, 1, SIZE - 1, SIZE - 1)).save(path)
    else:
        pixels = np.array(original)
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(path)
    report = dataset_check.check_dataset(root, val_split=0)
    assert report["near_duplicates"] == [["cats/00.png", os.path.relpath(path, root)]]
    assert report["exact_duplicates"] == []


def test_perceptual_hashes_of_unrelated_images_differ_in_about_half_their_bits():
    grays = [np.asarray(photo(seed, 32).convert("L"), float) for seed in range(40)]
    hashes = [check_images.perceptual_hash(gray) for gray in grays]
    distances = [bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > dataset_check.HAMMING_THRESHOLD
    assert 26 <= np.mean(distances) <= 38


def _stroke_digit(tilt: float, width: int) -> Image.Image:
    """A 32 px grayscale "1": one white stroke on black, drawn at 4x and scaled down."""
    from PIL import ImageDraw

    canvas = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(canvas).line([(64 + tilt, 20), (64 - tilt, 108)], fill=255, width=width)
    return canvas.resize((32, 32), Image.Resampling.LANCZOS)


def test_the_near_duplicate_rule_at_32_px_groups_copies_not_look_alikes(tmp_path):
    root = tmp_path / "digits"
    for name in ("a", "b"):
        os.makedirs(root / name)
    original, look_alike = _stroke_digit(6, 10), _stroke_digit(6, 14)  # a thicker stroke
    original.save(root / "a" / "one.png")
    look_alike.save(root / "b" / "other_one.png")
    original.save(root / "a" / "one_reencoded.jpg", quality=75)
    original.resize((24, 24), Image.Resampling.BICUBIC).save(root / "a" / "one_resized.png")
    original.crop((1, 1, 31, 31)).save(root / "a" / "one_cropped.png")
    hashes = [check_images.perceptual_hash(np.asarray(image, float)) for image in (original, look_alike)]
    # The hash alone matched them.
    assert bin(hashes[0] ^ hashes[1]).count("1") <= dataset_check.HAMMING_THRESHOLD
    report = dataset_check.check_dataset(str(root), val_split=0)
    assert report["near_duplicates"] == [
        ["a/one.png", "a/one_cropped.png", "a/one_reencoded.jpg", "a/one_resized.png"]
    ]
    assert report["conflicting_labels"] == []


# === Reading the images ===


def test_check_and_training_list_an_image_bomb_as_unreadable_with_one_reason(image_folder, png_bomb):
    bomb = os.path.join(image_folder, "red", "bomb.png")
    shutil.copy(png_bomb, bomb)
    reason = "image of 400000000 pixels is over the limit of 89478485 pixels"
    report = dataset_check.check_dataset(image_folder, val_split=0)
    assert report["unreadable"] == {os.path.join("red", "bomb.png"): reason}
    with pytest.warns(UserWarning, match="bomb.png"):
        data = from_folder(image_folder, image_size=32, val_split=0, augmentation="standard", seed=0)
    assert data.skipped == {bomb: reason}
    assert data.num_train == report["num_images"] == 21


# === Images on a store (ram://, through tf.io.gfile) ===


def test_images_on_a_store_are_described_as_on_disk(planted, ram_dir):
    from conftest import copy_to_ram, folder_rows

    from tfresnet import paths

    root, _ = planted
    ram = copy_to_ram(root, paths.join(ram_dir, "images"))
    names = [path for path, _ in folder_rows(root)]
    local = check_images.describe_images([os.path.join(root, name) for name in names])
    remote = check_images.describe_images([paths.join(ram, name) for name in names])
    assert [isinstance(found, str) for found in remote] == [isinstance(found, str) for found in local]
    assert sum(isinstance(found, str) for found in remote) == 1  # the truncated file
    for mine, theirs in zip(local, remote):
        if not isinstance(mine, str):
            assert (mine.width, mine.height, mine.mode, mine.hash) == (
                theirs.width,
                theirs.height,
                theirs.mode,
                theirs.hash,
            )
            np.testing.assert_array_equal(mine.colors, theirs.colors)


# === What is read of each image, kept between runs ===


def test_an_unchanged_image_is_read_once_and_a_changed_one_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TFRESNET_CACHE_DIR", str(tmp_path / "cache"))
    hour_ago = (time.time_ns() - 3600 * 10**9,) * 2
    paths = [str(tmp_path / f"{seed}.bmp") for seed in (1, 2)]
    for seed, path in zip((1, 2), paths):
        photo(seed).save(path)
        os.utime(path, ns=hour_ago)
    first = check_images.describe_images(paths, source=str(tmp_path))
    photo(3).save(paths[0])  # other pixels, the same size: a BMP of the same width and height
    os.utime(paths[0], ns=hour_ago)

    again = check_images.describe_images(paths, source=str(tmp_path))
    assert [facts.hash for facts in again] == [facts.hash for facts in first]  # not read again
    np.testing.assert_array_equal(again[0].colors, first[0].colors)
    os.utime(paths[0], ns=(hour_ago[0], hour_ago[1] + 1))
    changed = check_images.describe_images(paths, source=str(tmp_path))
    assert changed[0].hash == check_images.describe_images(paths[:1])[0].hash != first[0].hash
    assert changed[1].hash == first[1].hash
