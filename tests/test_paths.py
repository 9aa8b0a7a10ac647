"""Tests of tfresnet.paths: the same calls on a local folder and on TensorFlow's in-memory file
system (`ram://`, read and written through tf.io.gfile), and what a folder replacement leaves."""

import os

import numpy as np
import pytest

from tfresnet import paths
from tfresnet.files import copy_atomically, read_json, save_arrays, write_json, write_text


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path, ram_dir) -> str:
    """A fresh folder, local or on ram://: every test runs on both."""
    return str(tmp_path) if request.param == "local" else ram_dir


def _tree(folder: str) -> dict[str, str]:
    """Every file under `folder`, relative to it, with its text."""
    return {
        os.path.relpath(paths.join(top, name), folder): paths.open_file(paths.join(top, name)).read()
        for top, _, names in paths.walk(folder)
        for name in names
    }


def test_is_local_and_absolute():
    assert paths.is_local("flowers/a.jpg") and paths.is_local("file:///tmp/a.jpg")
    assert not paths.is_local("gs://bucket/a.jpg") and not paths.is_local("ram://x/a.jpg")
    assert paths.absolute("ram://x/y") == "ram://x/y"  # os.path.abspath would give /cwd/ram:/x/y
    assert paths.absolute("flowers") == os.path.abspath("flowers")


def test_folders_files_and_walks_agree_on_both_file_systems(root):
    paths.makedirs(paths.join(root, "b", "c"))
    paths.makedirs(paths.join(root, "a"))
    write_text(paths.join(root, "a", "1.txt"), "one")
    write_text(paths.join(root, "b", "c", "2.txt"), "two")
    write_text(paths.join(root, "b", "3.txt"), "héllo\n")

    assert paths.listdir(root) == ["a", "b"]
    assert paths.isdir(paths.join(root, "b")) and not paths.isfile(paths.join(root, "b"))
    assert paths.isfile(paths.join(root, "b", "3.txt")) and not paths.isdir(paths.join(root, "b", "3.txt"))
    assert not paths.exists(paths.join(root, "missing"))
    assert _tree(root) == {"a/1.txt": "one", "b/3.txt": "héllo\n", "b/c/2.txt": "two"}
    assert paths.stat(paths.join(root, "b", "3.txt"))[0] == len("héllo\n".encode())
    assert paths.read_bytes(paths.join(root, "a", "1.txt")) == b"one"

    pruned = []
    for top, folders, _ in paths.walk(root):
        folders[:] = [name for name in folders if name != "c"]  # pruned in place, as os.walk allows
        pruned.append(os.path.relpath(top, root))
    assert sorted(pruned) == [".", "a", "b"]

    paths.remove(paths.join(root, "a", "1.txt"))
    paths.remove(paths.join(root, "a", "1.txt"))  # gone already: nothing to do
    paths.rmtree(paths.join(root, "b"))
    paths.rmtree(paths.join(root, "b"))
    assert _tree(root) == {}


def test_json_arrays_and_copies_round_trip(root, tmp_path):
    write_json(paths.join(root, "config.json"), {"epochs": 3})
    assert read_json(paths.join(root, "config.json")) == {"epochs": 3}
    assert read_json(paths.join(root, "missing.json")) is None
    save_arrays(paths.join(root, "features.npz"), train=np.arange(4.0))
    with paths.open_file(paths.join(root, "features.npz"), "rb") as file:
        np.testing.assert_array_equal(np.load(file)["train"], np.arange(4.0))
    copy_atomically(paths.join(root, "config.json"), paths.join(root, "copy.json"))
    assert read_json(paths.join(root, "copy.json")) == {"epochs": 3}
    # Written whole under another name, then renamed: no temporary is left beside the files.
    assert paths.listdir(root) == ["config.json", "copy.json", "features.npz"]

    local = tmp_path / "copied"
    paths.copy_tree(root, str(local))
    assert sorted(os.listdir(local)) == ["config.json", "copy.json", "features.npz"]


def test_a_failing_writer_leaves_the_previous_file_on_a_store(ram_dir):
    path = paths.join(ram_dir, "best.json")
    write_json(path, {"value": 0.5})

    def fail_halfway(temporary):
        with open(temporary, "w") as file:
            file.write('{"val')
        raise OSError("disk full")

    from tfresnet.files import write_atomically

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail_halfway)
    assert read_json(path) == {"value": 0.5}
    assert paths.listdir(ram_dir) == ["best.json"]


def test_replace_folder_puts_the_new_folder_in_place_of_the_old(root):
    target = paths.join(root, "export", "1")
    for version in ("old", "new"):
        staging = paths.staging_folder(target)
        paths.makedirs(paths.join(staging, "variables"))
        write_text(paths.join(staging, "variables", "data"), version)
        if version == "old":
            write_text(paths.join(staging, "only_in_old.txt"), version)
        paths.replace_folder(staging, target)
    assert _tree(target) == {"variables/data": "new"}
    assert paths.listdir(paths.join(root, "export")) == ["1"]  # no staging folder left


def test_a_local_folder_left_aside_by_a_kill_is_put_back(tmp_path):
    target = tmp_path / "1"
    aside = tmp_path / ".1.previous"  # where replace_folder keeps the old folder between renames
    aside.mkdir()
    (aside / "saved_model.pb").write_text("previous")
    paths.restore_folder(str(target))
    assert (target / "saved_model.pb").read_text() == "previous" and not aside.exists()


def test_a_name_that_only_starts_another_does_not_exist_on_a_store(ram_dir):
    write_text(paths.join(ram_dir, "model.onnx.json"), "{}")
    assert not paths.exists(paths.join(ram_dir, "model.onnx"))
    assert not paths.isdir(paths.join(ram_dir, "model.onnx")) and not paths.isfile(
        paths.join(ram_dir, "model")
    )
    assert paths.isfile(paths.join(ram_dir, "model.onnx.json"))


def test_copying_over_a_file_replaces_it(root):
    write_text(paths.join(root, "a.txt"), "12345")
    write_text(paths.join(root, "b.txt"), "xy")
    paths.copy_file(paths.join(root, "b.txt"), paths.join(root, "a.txt"))
    write_text(paths.join(root, "b.txt"), "z")
    assert paths.read_bytes(paths.join(root, "a.txt")) == b"xy"
    assert paths.read_bytes(paths.join(root, "b.txt")) == b"z"
    assert paths.listdir(root) == ["a.txt", "b.txt"]


def test_a_folder_made_by_writing_a_file_into_it_is_a_folder(root, tmp_path):
    source = tmp_path / "source.txt"
    source.write_text("x")
    if paths.is_local(root):
        paths.makedirs(paths.join(root, "images", "cats"))  # a store needs no folder made first
    paths.copy_file(str(source), paths.join(root, "images", "cats", "1.txt"))
    assert paths.isdir(paths.join(root, "images")) and paths.isdir(paths.join(root, "images", "cats"))
    assert paths.exists(paths.join(root, "images", "cats"))
    assert not paths.exists(paths.join(root, "images", "ca"))
