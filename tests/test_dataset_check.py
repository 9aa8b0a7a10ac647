"""Tests of tfresnet.insight.dataset_check: planted problems found, a clean folder clean, a CSV's report."""

import collections
import csv
import itertools
import os
import shutil

import pytest
from conftest import CHECK_SIZE as SIZE
from conftest import (
    EXACT,
    ORIGINAL,
    RESIZED,
    TRUNCATED,
    copy_to_ram,
    folder_rows,
    photo,
    write_clean_folder,
    write_labels_csv,
    write_multi_label_csv,
)

from tfresnet import paths
from tfresnet.data import from_folder
from tfresnet.data.folder import _folder_parts
from tfresnet.insight import dataset_check


@pytest.fixture(scope="module")
def planted_report(planted) -> dict:
    root, seed = planted
    return dataset_check.check_dataset(root, val_split=0.25, seed=seed)


# === Planted problems ===


def test_a_clean_folder_reports_no_problem(clean_folder):
    report = dataset_check.check_dataset(clean_folder, seed=0)
    assert report["num_images"] == 24
    assert report["class_counts"] == {"cats": 8, "dogs": 8, "foxes": 8}
    assert report["imbalance_ratio"] == 1.0
    for key in ("exact_duplicates", "near_duplicates", "conflicting_labels", "cross_split"):
        assert report[key] == [], key
    assert report["unreadable"] == {}
    assert report["modes"] == {"grayscale": 0, "rgba": 0, "cmyk": 0, "palette": 0, "rgb": 24, "other": 0}
    assert report["image_sizes"]["width"] == {"min": SIZE, "median": SIZE, "max": SIZE}
    assert not dataset_check.has_problems(report)


def test_an_exact_duplicate_across_classes_is_a_label_conflict(planted_report):
    assert planted_report["exact_duplicates"] == [list(EXACT)]
    assert {"kind": "exact", "paths": list(EXACT), "classes": ["cats", "dogs"]} in planted_report[
        "conflicting_labels"
    ]
    assert len(planted_report["conflicting_labels"]) == 1  # the resized copy stays in its class
    assert all(EXACT[0] not in group for group in planted_report["near_duplicates"])


def test_a_resized_copy_across_the_split_is_leakage_on_the_split_from_folder_makes(planted, planted_report):
    root, seed = planted
    assert planted_report["near_duplicates"] == [[ORIGINAL, RESIZED]]
    leaks = [group for group in planted_report["cross_split"] if group["kind"] == "near"]
    assert len(leaks) == 1
    # The loader's own split, read from the datasets it builds:
    _, train, validation, _, _, _ = _folder_parts(root, None, val_split=0.25, seed=seed, strict=False)
    in_validation = {os.path.relpath(p.decode(), root) for p, _ in validation.items.as_numpy_iterator()}
    in_train = {os.path.relpath(p.decode(), root) for p, _ in train.items.as_numpy_iterator()}
    assert set(leaks[0]["validation"]) == {ORIGINAL, RESIZED} & in_validation
    assert set(leaks[0]["train"]) == {ORIGINAL, RESIZED} & in_train
    assert len(leaks[0]["validation"]) == len(leaks[0]["train"]) == 1
    assert dataset_check.has_problems(planted_report)


def test_the_grayscale_image_and_the_truncated_file_are_reported(planted, planted_report):
    assert planted_report["modes"]["grayscale"] == 1
    assert list(planted_report["unreadable"]) == [TRUNCATED]
    assert planted_report["unreadable"][TRUNCATED].startswith("truncated")
    # The same files and reasons as the loader's
    root, _ = planted
    skipped = from_folder(root, image_size=32, val_split=0, seed=0).skipped
    assert {os.path.relpath(path, root): reason for path, reason in skipped.items()} == planted_report[
        "unreadable"
    ]
    assert planted_report["num_images"] == 24 + 3
    assert planted_report["class_counts"] == {"cats": 9, "dogs": 9, "foxes": 9}


def test_without_a_split_there_is_no_leakage(planted):
    report = dataset_check.check_dataset(planted[0], val_split=0)
    assert report["cross_split"] == []
    assert report["near_duplicates"] == [[ORIGINAL, RESIZED]]


def test_modes_sizes_and_imbalance_are_counted(tmp_path):
    root = str(tmp_path / "images")
    os.makedirs(os.path.join(root, "a"))
    os.makedirs(os.path.join(root, "b"))
    photo(1, 40).convert("P").save(os.path.join(root, "a", "palette.png"))
    photo(2, 50).convert("RGBA").save(os.path.join(root, "a", "alpha.png"))
    photo(3, 60).convert("CMYK").save(os.path.join(root, "a", "cmyk.jpg"))
    photo(4, 70).convert("L").save(os.path.join(root, "a", "gray.jpg"))
    photo(5, 80).save(os.path.join(root, "b", "rgb.png"))
    report = dataset_check.check_dataset(root, val_split=0)
    assert report["modes"] == {"grayscale": 1, "rgba": 1, "cmyk": 1, "palette": 1, "rgb": 1, "other": 0}
    assert report["image_sizes"]["height"] == {"min": 40, "median": 60.0, "max": 80}
    assert report["imbalance_ratio"] == 4.0


@pytest.mark.parametrize("threshold", [-1, 64, 2.5])
def test_a_bad_threshold_is_refused(clean_folder, threshold):
    with pytest.raises(ValueError, match="hamming_threshold"):
        dataset_check.check_dataset(clean_folder, hamming_threshold=threshold)


# === A CSV file ===


def test_a_csv_listing_a_folder_gets_the_folders_report(planted, tmp_path):
    root, seed = planted
    path = write_labels_csv(tmp_path / "labels.csv", folder_rows(root))

    report = dataset_check.check_csv(path, image_dir=root, val_split=0.25, seed=seed)

    assert report.pop("csv") == str(tmp_path / "labels.csv")
    assert report.pop("split_column") is False
    assert (report.pop("path_column"), report.pop("label_column")) == ("path", "label")
    assert report == dataset_check.check_dataset(root, val_split=0.25, seed=seed)
    assert any(group["kind"] == "near" for group in report["cross_split"])  # the resized copy


def test_a_duplicate_across_the_csv_split_column_is_leakage(tmp_path):
    root = write_clean_folder(str(tmp_path / "images"), per_class=3)
    rows = [(path, label, "train") for path, label in folder_rows(root)] + [
        ("copy.png", "cats", "Validation"),
        ("dogs/00.png", "dogs", "val"),  # the same file on both sides
    ]
    shutil.copy(os.path.join(root, "cats", "00.png"), os.path.join(root, "copy.png"))
    path = write_labels_csv(root + "/labels.csv", rows, ("path", "label", "split"))
    leaks = [
        {"kind": "exact", "train": ["cats/00.png"], "validation": ["copy.png"]},
        {"kind": "exact", "train": ["dogs/00.png"], "validation": ["dogs/00.png"]},
    ]

    for val_split in (0.5, 0):  # the split column decides, whatever val_split says
        report = dataset_check.check_csv(path, val_split=val_split, seed=0)
        assert report["cross_split"] == leaks
        assert report["exact_duplicates"] == [["cats/00.png", "copy.png"], ["dogs/00.png", "dogs/00.png"]]
        assert report["conflicting_labels"] == [] and report["split_column"] is True
        assert report["class_counts"] == {"cats": 4, "dogs": 4, "foxes": 3}
        assert report["directory"] == root
    assert "cross-split leaks   2 groups\n" in dataset_check.summary_table(report)
    assert dataset_check.has_problems(report)


# === Several labels per image ===


def _label_sets(csv_path: str, delimiter: str = " ") -> list[tuple[str, list[str]]]:
    """Each line's path and labels, read with the csv module."""
    with open(csv_path, newline="") as file:
        lines = list(csv.DictReader(file))
    return [(line["path"], line["label"].split(delimiter) if line["label"] else []) for line in lines]


def test_a_multi_label_csv_gets_its_label_counts_pairs_and_unlabelled_images(multi_label_csv):
    report = dataset_check.check_csv(multi_label_csv, multi_label=True, seed=0)
    rows = _label_sets(multi_label_csv)
    counts = collections.Counter(label for _, labels in rows for label in labels)
    assert report["label_counts"] == dict(sorted(counts.items())) and sum(counts.values()) > 48 / 2
    pairs = collections.Counter(
        pair for _, labels in rows for pair in itertools.combinations(sorted(labels), 2)
    )
    most_first = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))
    assert report["label_pairs"] == [{"labels": list(pair), "count": count} for pair, count in most_first]
    empty = [path for path, labels in rows if not labels]
    assert report["unlabelled"] == {"count": len(empty), "examples": empty[:5]} and empty
    assert report["multi_label"] is True and report["label_delimiter"] == " " and report["num_images"] == 48
    assert "conflicting_labels" not in report and "class_counts" not in report
    assert "single-label check" in report["not_checked"]["conflicting_labels"]
    assert not dataset_check.has_problems(report)
    table = dataset_check.summary_table(report)
    assert table.startswith("images              48 with 3 labels (most / least frequent: ")
    assert f"unlabelled          {len(empty)} images\n" in table
    assert "conflicting labels  not checked (single-label only)\n" in table


def test_a_duplicate_across_the_split_of_a_multi_label_csv_is_leakage(tmp_path):
    root = str(tmp_path)
    rows = _label_sets(write_multi_label_csv(root, delimiter=";"), ";")
    shutil.copy(os.path.join(root, "images", "0.png"), os.path.join(root, "copy.png"))
    lines = [(path, ";".join(labels), "train" if i % 4 else "val") for i, (path, labels) in enumerate(rows)]
    lines.append(("copy.png", ";".join(rows[0][1]), "train"))  # image 0, a validation image, in training
    path = write_labels_csv(os.path.join(root, "split.csv"), lines, ("path", "label", "split"))

    report = dataset_check.check_csv(path, multi_label=True, label_delimiter=";")

    assert report["cross_split"] == [{"kind": "exact", "train": ["copy.png"], "validation": ["images/0.png"]}]
    assert report["exact_duplicates"] == [["images/0.png", "copy.png"]]  # in the CSV's order
    assert report["split_column"] is True and dataset_check.has_problems(report)
    counts = collections.Counter(label for _, labels in rows + [rows[0]] for label in labels)
    assert report["label_counts"] == dict(sorted(counts.items())) and report["num_images"] == 49
    with pytest.raises(ValueError, match=r"^The search for label issues .* is single-label only"):
        dataset_check.check_csv(path, multi_label=True, label_delimiter=";", label_issues=True)


# === Data on a store (ram://, TensorFlow's in-memory file system, through tf.io.gfile) ===


def test_a_folder_and_a_csv_on_a_store_get_the_report_of_their_local_copies(
    planted, planted_report, ram_dir, tmp_path
):
    root, seed = planted
    ram = copy_to_ram(root, paths.join(ram_dir, "images"))
    remote = dataset_check.check_dataset(ram, val_split=0.25, seed=seed)
    assert remote.pop("directory") == ram
    assert remote == {key: value for key, value in planted_report.items() if key != "directory"}
    assert [EXACT[0], EXACT[1]] in remote["exact_duplicates"] and remote["cross_split"]

    rows = [(path, label) for path, label in folder_rows(root) if path != TRUNCATED]
    with paths.open_file(paths.join(ram, "labels.csv"), "w") as file:
        csv.writer(file).writerows([("path", "label"), *rows])
    from_csv = dataset_check.check_csv(paths.join(ram, "labels.csv"), val_split=0.25, seed=seed)
    local = dataset_check.check_csv(
        write_labels_csv(tmp_path / "labels.csv", rows),
        image_dir=root,
        val_split=0.25,
        seed=seed,
    )
    assert from_csv["csv"] == paths.join(ram, "labels.csv") and from_csv["directory"] == ram
    ignored = ("csv", "directory")
    assert {k: v for k, v in from_csv.items() if k not in ignored} == {
        k: v for k, v in local.items() if k not in ignored
    }
