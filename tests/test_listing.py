"""Tests of tfresnet.data.listing: the files under a folder in the order `os.walk` visits them,
hidden ones and links to folders left out, sizes and times measured once, locally and on a store."""

import os

from conftest import copy_to_ram

from tfresnet import paths
from tfresnet.data.listing import class_folders, files_under, list_files


def walked(folder: str) -> list[str]:
    """The files `os.walk` lists, as the loaders listed them before."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if not name.startswith(".")]
    return found


def write_tree(root: str) -> None:
    for path in (
        "b/2.jpg",
        "b/1.jpg",
        "a.jpg",
        "b/c/3.png",
        "b/.hidden/4.jpg",
        ".5.jpg",
        "b/Z.JPG",
        "b/notes.txt",
    ):
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "wb") as file:
            file.write(path.encode())
    os.makedirs(os.path.join(root, "elsewhere"))
    with open(os.path.join(root, "elsewhere", "6.jpg"), "wb") as file:
        file.write(b"6")
    os.symlink(os.path.join(root, "elsewhere"), os.path.join(root, "b", "linked"))


def test_files_are_listed_as_os_walk_visits_them_with_their_sizes_and_times(tmp_path):
    root = str(tmp_path / "tree")
    write_tree(root)
    found, stats = list_files(root)

    assert found == walked(root)
    assert [os.path.relpath(path, root) for path in found] == [
        "a.jpg",
        "b/1.jpg",
        "b/2.jpg",
        "b/Z.JPG",
        "b/notes.txt",
        "b/c/3.png",
        "elsewhere/6.jpg",
    ]
    assert stats.tolist() == [[os.stat(path).st_size, os.stat(path).st_mtime_ns] for path in found]
    assert files_under(os.path.join(root, "b"), suffixes=(".jpg",)) == [
        os.path.join(root, "b", name) for name in ("1.jpg", "2.jpg", "Z.JPG")
    ]
    assert list_files(str(tmp_path / "missing"))[0] == []


def test_a_folder_on_a_store_is_listed_as_its_local_copy(tmp_path, ram_dir):
    root = str(tmp_path / "tree")
    write_tree(root)
    os.remove(os.path.join(root, "b", "linked"))
    ram = copy_to_ram(root, paths.join(ram_dir, "tree"))
    local, local_stats = list_files(root)
    remote, remote_stats = list_files(ram)

    assert [os.path.relpath(path, ram) for path in remote] == [os.path.relpath(path, root) for path in local]
    assert remote_stats[:, 0].tolist() == local_stats[:, 0].tolist()  # sizes (ram:// keeps no times)
    assert class_folders(ram) == class_folders(root) == ["b", "elsewhere"]
