"""Tests of tfresnet.data.file_check: each file's check kept between runs, trusted only while its
path, size and modification time match: a second load of an unchanged folder decodes nothing,
a changed file is checked again."""

import io
import os
import time

import numpy as np
import pytest
from conftest import write_image_folder
from PIL import Image

from tfresnet.data import from_csv, from_folder
from tfresnet.data.check_cache import CheckCache
from tfresnet.data.file_check import BATCH_FILES, FILE_CHECK, HEAD_BYTES, check_file, check_files, check_many

SIZE = 32
HOUR_AGO = time.time_ns() - 3600 * 10**9


@pytest.fixture
def aged_folder(tmp_path, monkeypatch) -> str:
    """A folder of 3 classes of 7 images, each last modified an hour ago, with its own cache folder."""
    monkeypatch.setenv("TFRESNET_CACHE_DIR", str(tmp_path / "cache"))
    root = str(tmp_path / "images")
    write_image_folder(root)
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), ns=(HOUR_AGO, HOUR_AGO))
    return root


def corrupt_keeping_size_and_time(path: str) -> None:
    """Overwrites the middle of `path` with bytes no decoder reads, then sets its time back: a change
    that neither its size nor its modification time shows."""
    stat = os.stat(path)
    with open(path, "r+b") as file:
        file.seek(stat.st_size // 3)
        file.write(b"\xff\x00" * (stat.st_size // 6))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_second_load_of_an_unchanged_folder_decodes_nothing_and_a_changed_file_is_checked_again(
    aged_folder,
):
    path = os.path.join(aged_folder, "red", "000.jpg")
    first = from_folder(aged_folder, image_size=SIZE, seed=0)
    corrupt_keeping_size_and_time(path)
    assert check_file(path) is not None  # the file no longer decodes...

    second = from_folder(aged_folder, image_size=SIZE, seed=0)  # ...but it was not read again
    assert second.skipped == {} and second.num_train == first.num_train

    os.utime(path, ns=(HOUR_AGO, HOUR_AGO + 1))  # its time changed: checked again, and skipped
    with pytest.warns(UserWarning, match="Skipped 1 files"):
        third = from_folder(aged_folder, image_size=SIZE, seed=0)
    assert list(third.skipped) == [path] and third.skipped[path].startswith("corrupt: ")
    assert third.num_train + third.num_validation == first.num_train + first.num_validation - 1


def test_a_file_of_a_new_size_is_checked_again(aged_folder):
    path = os.path.join(aged_folder, "green", "000.jpg")
    from_folder(aged_folder, image_size=SIZE, seed=0)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)
    os.utime(path, ns=(HOUR_AGO, HOUR_AGO))  # the same time: the size tells
    with pytest.warns(UserWarning, match="Skipped 1 files"):
        data = from_folder(aged_folder, image_size=SIZE, seed=0)
    assert data.skipped[path].startswith("truncated: ")


def test_a_corrupt_cache_file_is_ignored(aged_folder):
    path = os.path.join(aged_folder, "blue", "000.jpg")
    from_folder(aged_folder, image_size=SIZE, seed=0)
    kept = CheckCache(aged_folder)
    assert os.path.isfile(kept.path)
    with open(kept.path, "r+b") as file:
        file.seek(os.path.getsize(kept.path) // 2)
        file.write(b"\0" * 64)
    corrupt_keeping_size_and_time(path)

    with pytest.warns(UserWarning, match="Skipped 1 files"):
        data = from_folder(aged_folder, image_size=SIZE, seed=0)
    assert list(data.skipped) == [path]


def test_another_pixel_limit_checks_again(aged_folder):
    from_folder(aged_folder, image_size=SIZE, seed=0)
    paths = [os.path.join(aged_folder, "red", name) for name in ("000.jpg", "001.png")]
    with pytest.warns(UserWarning, match="Skipped 2 files"):
        skipped = check_files(paths, where=aged_folder, strict=False, max_pixels=40 * 40 - 1)
    assert skipped == {path: "image of 1600 pixels is over the limit of 1599 pixels" for path in paths}


def test_a_csv_keeps_its_own_results(aged_folder, tmp_path):
    rows = ["path,label"] + [
        f"{name}/{file},{name}"
        for name in sorted(os.listdir(aged_folder))
        for file in sorted(os.listdir(os.path.join(aged_folder, name)))
    ]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    first = from_csv(csv_path, image_dir=aged_folder, image_size=SIZE, seed=0)
    path = os.path.join(aged_folder, "red", "001.png")
    corrupt_keeping_size_and_time(path)

    assert from_csv(csv_path, image_dir=aged_folder, image_size=SIZE, seed=0).skipped == {}
    kept = CheckCache(str(csv_path))
    assert len(kept.keys) == first.num_train + first.num_validation
    assert kept.column(FILE_CHECK, "reason").tolist() == [""] * len(kept.keys)


def test_a_file_that_cannot_be_read_is_not_kept(aged_folder):
    path = os.path.join(aged_folder, "red", "odd.jpg")
    os.mkdir(path)  # a folder named as an image: read() fails, as on a file without read access
    os.utime(path, ns=(HOUR_AGO, HOUR_AGO))
    with pytest.warns(UserWarning, match="Skipped 1 files"):
        skipped = check_files([path], where=aged_folder, strict=False)
    assert skipped == {path: "unreadable: Is a directory"}
    assert CheckCache(aged_folder).keys == []  # it may be readable next time


# === Many files: the decodes in a tf.data pipeline ===


def encoded(image, file_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def write_mixed_files(folder) -> list[str]:
    """Good and bad files of every kind, repeated to a few hundred: what `check_many` must judge
    as `check_file` does."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    jpeg = encoded(noise, "JPEG")
    padding = b"".join(b"\xff\xef" + (60002).to_bytes(2, "big") + bytes(60000) for _ in range(2))
    frames = [
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40), dtype=np.uint8))
        for i in range(60)
    ]
    gif_bomb = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    corrupt = bytearray(jpeg)
    corrupt[len(jpeg) // 3 : len(jpeg) // 2] = (
        np.random.default_rng(1).integers(0, 256, len(jpeg) // 2 - len(jpeg) // 3, np.uint8).tobytes()
    )
    kinds = {
        "good.jpg": jpeg,
        "good.png": encoded(noise, "PNG"),
        "good.bmp": encoded(noise, "BMP"),
        "good.gif": encoded(noise.convert("P"), "GIF"),
        "big.jpg": encoded(noise.resize((80, 80)), "JPEG"),  # over the limit of 5000 pixels
        "long_header.jpg": jpeg[:2] + padding + jpeg[2:],  # its size comes after 120 KB
        "long_header_big.jpg": encoded(noise.resize((80, 80)), "JPEG")[:2]
        + padding
        + encoded(noise.resize((80, 80)), "JPEG")[2:],
        "many_frames.gif": gif_bomb,  # 60 frames of 1600 pixels, in more than HEAD_BYTES
        "gray16.png": encoded(Image.new("I;16", (20, 20)), "PNG"),
        "bits16.bmp": encoded(noise, "BMP")[:28] + (16).to_bytes(2, "little") + encoded(noise, "BMP")[30:],
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "corrupt.jpg": bytes(corrupt),
        "notes.jpg": b"not an image",
        "notes.txt": b"not an image",
    }
    os.makedirs(folder)
    paths = []
    for copy in range(20):
        for name, contents in kinds.items():
            path = os.path.join(folder, f"{copy:02d}_{name}")
            with open(path, "wb") as file:
                file.write(contents)
            paths.append(path)
    return paths


def test_many_files_are_judged_as_one_by_one(tmp_path):
    paths = write_mixed_files(tmp_path / "mixed")
    assert len(paths) >= BATCH_FILES
    one_by_one = [check_file(path, max_pixels=5000) or "" for path in paths]
    assert check_many(paths, max_pixels=5000) == one_by_one
    found = dict(zip((os.path.basename(path)[3:] for path in paths), one_by_one))
    assert [name for name, reason in found.items() if not reason] == [
        "good.jpg",
        "good.png",
        "good.bmp",
        "good.gif",
        "long_header.jpg",
        "gray16.png",
    ]
    assert (
        found["long_header_big.jpg"]
        == found["big.jpg"]
        == "image of 6400 pixels is over the limit of 5000 pixels"
    )
    assert found["many_frames.gif"] == "image of 96000 pixels is over the limit of 5000 pixels"
    assert os.path.getsize(paths[list(found).index("many_frames.gif")]) > HEAD_BYTES
