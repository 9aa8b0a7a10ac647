"""Tests of tfresnet.data.cache: file caches served again, and caches of killed runs cleared and refilled."""

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import take_all

from tfresnet.data import from_folder
from tfresnet.data.cache import clear_stale_cache

SIZE = 32


def test_file_cache_serves_the_same_images_to_a_new_loader(image_folder, tmp_path):
    cache = tmp_path / "cache"
    data = from_folder(image_folder, image_size=SIZE, cache=str(cache), seed=0)

    first = take_all(data.validation)
    names = os.listdir(cache)
    again = take_all(from_folder(image_folder, image_size=SIZE, cache=str(cache), seed=0).validation)

    assert any(name.startswith("validation-") and name.endswith(".index") for name in names)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def leave_killed_cache(prefix: str) -> list[str]:
    """Leaves on disk what a run killed while filling the cache `prefix` leaves: tf.data's
    lockfile and partial file (copied while a cache fills: dropping the iterator removes them)."""
    aside = os.path.join(os.path.dirname(prefix), "aside")
    os.makedirs(aside)
    iterator = iter(tf.data.Dataset.range(1000).cache(prefix))
    next(iterator)
    left = glob.glob(glob.escape(prefix) + "_*")
    for path in left:
        shutil.copy(path, aside)
    del iterator
    for path in left:
        shutil.move(os.path.join(aside, os.path.basename(path)), path)
    os.rmdir(aside)
    assert any(path.endswith("_0.lockfile") for path in left)
    return left


def test_a_killed_cache_blocks_tf_data(tmp_path):
    """The state `leave_killed_cache` leaves is the one that fails the next run (whose failing
    iterator then removes the lockfile: the run after it works)."""
    prefix = str(tmp_path / "validation-0123456789abcdef")
    leave_killed_cache(prefix)

    with pytest.raises(tf.errors.AlreadyExistsError, match="concurrent caching iterator.*lockfile"):
        list(tf.data.Dataset.range(3).cache(prefix))


def test_cache_left_locked_by_a_killed_run_is_filled_again(image_folder, tmp_path):
    cache = tmp_path / "cache"
    expected = take_all(from_folder(image_folder, image_size=SIZE, cache=str(cache), seed=0).validation)
    (index,) = glob.glob(str(cache / "validation-*.index"))
    prefix = index[: -len(".index")]
    for path in glob.glob(glob.escape(prefix) + ".index") + glob.glob(glob.escape(prefix) + ".data-*"):
        os.remove(path)  # no cache yet: a run was killed while filling it
    leave_killed_cache(prefix)

    data = from_folder(image_folder, image_size=SIZE, cache=str(cache), seed=0)
    images, labels = take_all(data.validation)

    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    assert os.path.exists(prefix + ".index") and not glob.glob(glob.escape(prefix) + "_*")


def test_stale_cache_is_cleared_only_once_no_live_run_holds_it(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    prefix = str(tmp_path / "validation-0123456789abcdef")
    left = leave_killed_cache(prefix)

    with open(prefix + ".lock", "a") as other_run:  # another live process filling this cache
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        clear_stale_cache(prefix)
        assert all(os.path.exists(path) for path in left)
    clear_stale_cache(prefix)  # that process ended

    assert not any(os.path.exists(path) for path in left)
    assert list(tf.data.Dataset.range(3).cache(prefix).as_numpy_iterator()) == [0, 1, 2]


def test_a_file_cache_on_a_store_serves_the_same_images_to_a_new_loader(image_folder, ram_dir):
    from tfresnet import paths

    cache = paths.join(ram_dir, "cache")
    data = from_folder(image_folder, image_size=SIZE, cache=cache, seed=0)
    first = take_all(data.validation)
    names = paths.listdir(cache)
    again = take_all(from_folder(image_folder, image_size=SIZE, cache=cache, seed=0).validation)

    assert any(name.startswith("validation-") and name.endswith(".index") for name in names)
    assert paths.listdir(cache) == names  # served, not written again
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_what_a_killed_run_left_of_a_cache_on_a_store_is_cleared(ram_dir):
    from tfresnet import paths

    prefix = paths.join(ram_dir, "validation-0123")
    for name in ("validation-0123_0.lockfile", "validation-0123_0.data-00000-of-00001", "other_0.lockfile"):
        with paths.open_file(paths.join(ram_dir, name), "wb") as file:
            file.write(b"left")
    clear_stale_cache(prefix)
    assert paths.listdir(ram_dir) == ["other_0.lockfile"]
    assert list(tf.data.Dataset.range(3).cache(prefix).as_numpy_iterator()) == [0, 1, 2]
