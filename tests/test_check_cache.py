"""Tests of tfresnet.data.check_cache: results kept per file, trusted only while the file's path,
size and modification time match, in a file that is ignored when it is corrupt or foreign."""

import os
import time

import numpy as np
import pytest

from tfresnet.data.check_cache import CACHE_ENV, Check, CheckCache, cache_folder, file_keys, file_stats

CHECK = Check("test", {"reason": ("text", ()), "score": ("float32", (2,))})
OTHER = Check("other", {"value": ("int64", ())})
HOUR_AGO = time.time_ns() - 3600 * 10**9


@pytest.fixture
def files(tmp_path) -> list[str]:
    """Three files last modified an hour ago."""
    made = []
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        path = tmp_path / "data" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode() * 10)
        os.utime(path, ns=(HOUR_AGO, HOUR_AGO))
        made.append(str(path))
    return made


def kept_after_a_check(files: list[str], folder: str) -> CheckCache:
    """Records `CHECK`'s results of `files` as a check begun now would, saves, and reads them back."""
    kept = CheckCache(os.path.dirname(files[0]), folder=folder)
    values = {"reason": ["", "empty file", ""], "score": np.arange(6, dtype=np.float32).reshape(3, 2)}
    kept.record(CHECK, file_keys(files), file_stats(files), values, started=time.time_ns())
    kept.save()
    return CheckCache(os.path.dirname(files[0]), folder=folder)


def test_results_are_kept_in_a_file_and_trusted_while_files_are_unchanged(files, tmp_path):
    kept = kept_after_a_check(files, str(tmp_path / "cache"))
    rows = kept.lookup(CHECK, file_keys(files), file_stats(files))

    assert sorted(rows.tolist()) == [0, 1, 2]
    assert kept.column(CHECK, "reason")[rows].tolist() == ["", "empty file", ""]
    np.testing.assert_array_equal(kept.column(CHECK, "score")[rows], np.arange(6).reshape(3, 2))
    assert os.listdir(tmp_path / "cache" / "checks") == [os.path.basename(kept.path)]
    assert kept.lookup(OTHER, file_keys(files), file_stats(files)).tolist() == [-1, -1, -1]


def test_a_file_changed_in_size_or_time_is_not_trusted(files, tmp_path):
    kept = kept_after_a_check(files, str(tmp_path / "cache"))
    with open(files[0], "ab") as file:  # a new size (and time)
        file.write(b"more")
    os.utime(files[1], ns=(HOUR_AGO, HOUR_AGO + 1))  # a new time, to the nanosecond
    os.utime(files[2], ns=(HOUR_AGO, HOUR_AGO))  # unchanged

    assert kept.lookup(CHECK, file_keys(files), file_stats(files)).tolist()[:2] == [-1, -1]
    assert kept.lookup(CHECK, file_keys(files), file_stats(files))[2] >= 0
    stats = file_stats(files)
    stats[2, 0] += 1
    assert kept.lookup(CHECK, file_keys(files), stats)[2] == -1


def test_a_file_without_a_time_or_changed_during_its_check_is_not_kept(files, tmp_path):
    kept = CheckCache(os.path.dirname(files[0]), folder=str(tmp_path / "cache"))
    stats = file_stats(files)
    stats[0, 1] = 0  # a store without modification times (ram://)
    os.utime(files[1], ns=(time.time_ns(), time.time_ns()))  # modified as the check began
    stats[1] = file_stats(files[1:2])[0]
    values = {"reason": ["", "", ""], "score": np.zeros((3, 2), np.float32)}
    kept.record(CHECK, file_keys(files), stats, values, started=time.time_ns())

    assert kept.lookup(CHECK, file_keys(files), stats).tolist()[:2] == [-1, -1]
    assert kept.lookup(CHECK, file_keys(files), stats)[2] >= 0


def test_recording_a_changed_file_drops_the_other_checks_results(files, tmp_path):
    kept = kept_after_a_check(files, str(tmp_path / "cache"))
    keys, stats = file_keys(files), file_stats(files)
    kept.record(OTHER, keys, stats, {"value": [1, 2, 3]}, started=time.time_ns())
    os.utime(files[0], ns=(HOUR_AGO + 5, HOUR_AGO + 5))
    kept.record(OTHER, keys, file_stats(files), {"value": [4, 2, 3]}, started=time.time_ns())

    assert kept.lookup(OTHER, keys, file_stats(files)).tolist() == [0, 1, 2]
    assert kept.lookup(CHECK, keys, file_stats(files)).tolist() == [-1, 1, 2]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another-folder", "another-format", "wrong-type"])
def test_a_corrupt_or_foreign_cache_file_counts_as_empty(damage, files, tmp_path):
    folder = str(tmp_path / "cache")
    kept = kept_after_a_check(files, folder)
    contents = open(kept.path, "rb").read()
    if damage == "garbage":
        contents = b"not a cache" * 100
    elif damage == "truncated":
        contents = contents[: len(contents) // 2]
    elif damage == "another-folder":  # a file of another folder's results, renamed as this one's
        other = CheckCache(str(tmp_path), folder=folder)
        other.record(
            CHECK,
            file_keys(files),
            file_stats(files),
            {"reason": ["", "", ""], "score": np.zeros((3, 2))},
            started=time.time_ns(),
        )
        other.save()
        contents = open(other.path, "rb").read()
    else:
        np.savez(
            kept.path,
            format=np.frombuffer(
                b"other/1\0" if damage == "another-format" else b"tfresnet-checks/1\0", np.uint8
            ),
            source=np.frombuffer(kept.source.encode() + b"\0", np.uint8),
            keys=np.frombuffer("".join(key + "\0" for key in file_keys(files)).encode(), np.uint8),
            sizes=file_stats(files)[:, 0],
            mtimes=file_stats(files)[:, 1],
            **{"number:test.kept": np.ones(3), "text:test.reason": np.frombuffer(b"\0\0\0", np.uint8)},
            **{"number:test.score": np.zeros((3, 2), np.float32)},
        )
        contents = open(kept.path, "rb").read()
    with open(kept.path, "wb") as file:
        file.write(contents)

    again = CheckCache(os.path.dirname(files[0]), folder=folder)
    assert again.lookup(CHECK, file_keys(files), file_stats(files)).tolist() == [-1, -1, -1]
    again.record(
        CHECK,
        file_keys(files),
        file_stats(files),
        {"reason": ["x", "y", "z"], "score": np.ones((3, 2))},
        started=time.time_ns(),
    )
    again.save()  # replaced by a whole file of this folder's results
    rows = CheckCache(os.path.dirname(files[0]), folder=folder).lookup(
        CHECK, file_keys(files), file_stats(files)
    )
    assert sorted(rows.tolist()) == [0, 1, 2]


def test_files_no_longer_listed_are_forgotten(files, tmp_path):
    kept = kept_after_a_check(files, str(tmp_path / "cache"))
    kept.retain(file_keys(files[1:]))
    kept.save()
    again = CheckCache(os.path.dirname(files[0]), folder=str(tmp_path / "cache"))
    assert again.keys == file_keys(files[1:])


def test_a_folder_that_cannot_be_written_keeps_nothing_and_raises_nothing(files, tmp_path):
    (tmp_path / "a_file").write_text("")
    kept = kept_after_a_check(files, str(tmp_path / "a_file" / "cache"))
    assert kept.keys == [] and kept.lookup(CHECK, file_keys(files), file_stats(files)).tolist() == [
        -1,
        -1,
        -1,
    ]


def test_the_cache_folder_is_the_variable_else_xdg_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_folder() == str(tmp_path / "mine")
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == str(tmp_path / "xdg" / "tfresnet")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_folder() == str(tmp_path / "home" / ".cache" / "tfresnet")


def test_keys_are_absolute_paths_and_urls_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert file_keys(["photos/a.jpg", "/abs/b.jpg", "gs://bucket/c.jpg"]) == [
        str(tmp_path / "photos" / "a.jpg"),
        "/abs/b.jpg",
        "gs://bucket/c.jpg",
    ]
    assert file_stats(["missing.jpg"]).tolist() == [[-1, -1]]
