"""The dataset check: planted problems reported where they belong, a clean folder reports none."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfresnet import check
from tfresnet.data import from_folder
from tfresnet.data.folder import _folder_parts, list_folder
from tfresnet.data.pipeline import stratified_split
from tfresnet.insight import check_images, dataset_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cats", "dogs", "foxes")
SIZE = 48
# The planted files, relative to the folder.
EXACT = ("cats/00.png", "dogs/dup_of_cat.bmp")  # the same pixels, in two classes
ORIGINAL, RESIZED = "foxes/02.png", "foxes/02_small.jpg"  # re-encoded and resized, across the split
GRAY, TRUNCATED = "cats/gray.png", "cats/truncated.jpg"


def photo(seed: int, size: int = SIZE) -> Image.Image:
    """A photo-like RGB image, unlike any other seed's: random colour fields at four scales, the
    finer the fainter (as the spectrum of a photograph falls), plus a little noise."""
    rng = np.random.default_rng(seed)
    total = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((3, 1.0), (6, 0.6), (12, 0.35), (24, 0.2)):
        field = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        channels = [
            Image.fromarray(field[..., k], mode="F").resize((size, size), Image.BICUBIC) for k in range(3)
        ]
        total += weight * np.stack([np.asarray(channel) for channel in channels], axis=-1)
    pixels = 128 + 60 * total + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_clean_folder(root: str, per_class: int = 8) -> str:
    """Three classes of distinct photos, PNG and JPEG alternately."""
    for number, name in enumerate(CLASSES):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            extension, options = (".png", {}) if i % 2 == 0 else (".jpg", {"quality": 90})
            photo(100 * number + i).save(os.path.join(root, name, f"{i:02d}{extension}"), **options)
    return root


def _side(root: str, val_split: float, seed: int) -> dict[str, bool]:
    """Whether each readable file lies in the validation set, by the split `from_folder` makes."""
    _, paths, labels, _ = list_folder(root, strict=False)
    validation = set(stratified_split(labels, val_split, seed)[1])
    return {os.path.relpath(path, root): i in validation for i, path in enumerate(paths)}


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> str:
    return write_clean_folder(str(tmp_path_factory.mktemp("clean") / "images"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[str, int]:
    """A clean folder plus the planted problems; returns it and a seed whose split puts the
    resized copy and its original on different sides."""
    root = write_clean_folder(str(tmp_path_factory.mktemp("planted") / "images"))
    Image.open(os.path.join(root, EXACT[0])).save(os.path.join(root, EXACT[1]))
    Image.open(os.path.join(root, ORIGINAL)).resize((40, 40)).save(os.path.join(root, RESIZED), quality=70)
    photo(999).convert("L").save(os.path.join(root, GRAY))
    photo(998).save(os.path.join(root, "whole.jpg"))
    with open(os.path.join(root, "whole.jpg"), "rb") as file:
        contents = file.read()
    with open(os.path.join(root, TRUNCATED), "wb") as file:
        file.write(contents[: len(contents) // 2])
    os.remove(os.path.join(root, "whole.jpg"))
    seed = next(
        seed for seed in range(100) if len({_side(root, 0.25, seed)[p] for p in (ORIGINAL, RESIZED)}) == 2
    )
    return root, seed


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


def test_perceptual_hashes_of_unrelated_images_differ_in_about_half_their_bits():
    grays = [np.asarray(photo(seed, 32).convert("L"), float) for seed in range(40)]
    hashes = [check_images.perceptual_hash(gray) for gray in grays]
    distances = [bin(a ^ b).count("1") for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > dataset_check.HAMMING_THRESHOLD
    assert 26 <= np.mean(distances) <= 38


@pytest.mark.parametrize("threshold", [-1, 64, 2.5])
def test_a_bad_threshold_is_refused(clean_folder, threshold):
    with pytest.raises(ValueError, match="hamming_threshold"):
        dataset_check.check_dataset(clean_folder, hamming_threshold=threshold)


# === The command ===


def test_the_command_writes_the_report_prints_a_table_and_strict_fails_on_leakage(
    planted, clean_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    root, seed = planted
    assert check.main([root, "--val-split", "0.25", "--seed", str(seed)]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / dataset_check.REPORT_FILE).read_text())
    assert written == json.loads(json.dumps(dataset_check.check_dataset(root, val_split=0.25, seed=seed)))
    assert f"cross-split leaks   {len(written['cross_split'])} groups" in printed
    assert str(tmp_path / dataset_check.REPORT_FILE) in printed
    output = str(tmp_path / "out" / "checked.json")
    assert check.main([root, "--val-split", "0.25", "--seed", str(seed), "--strict", "--output", output]) == 1
    assert json.loads(open(output).read())["cross_split"]
    assert check.main([clean_folder, "--strict", "--output", output]) == 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["{tmp}/missing"], "Image folder not found"),
        (["{clean}", "--output", "{tmp}"], "is a folder"),
        (["{clean}", "--val-split", "1.5"], "--val-split"),
    ],
    ids=["missing-folder", "output-is-a-folder", "bad-flag"],
)
def test_bad_input_exits_2_with_one_line(argv, expected, clean_folder, tmp_path, capsys):
    argv = [arg.format(tmp=tmp_path, clean=clean_folder) for arg in argv]
    try:
        code = check.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert len(stderr.splitlines()) == 1 and expected in stderr


def test_the_command_as_users_run_it(planted, tmp_path):
    """A fresh process: the table on stdout, nothing from TensorFlow on stderr, exit 1 with --strict."""
    root, seed = planted
    copy = str(tmp_path / "images")
    shutil.copytree(root, copy)
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfresnet.check",
            copy,
            "--val-split",
            "0.25",
            "--seed",
            str(seed),
            "--strict",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
    )
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout.splitlines()[0].startswith("images              27 in 3 classes")
    assert list(json.loads((tmp_path / dataset_check.REPORT_FILE).read_text())["unreadable"]) == [TRUNCATED]


# === A CSV file ===


def write_labels_csv(path, rows, header=("path", "label")) -> str:
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return str(path)


def folder_rows(root: str) -> list[tuple[str, str]]:
    """Every file of a folder of class folders, as `from_folder` lists them: (path, class)."""
    return [
        (os.path.join(name, file), name)
        for name in sorted(os.listdir(root))
        for file in sorted(os.listdir(os.path.join(root, name)))
    ]


def test_a_csv_listing_a_folder_gets_the_folders_report(planted, tmp_path):
    root, seed = planted
    path = write_labels_csv(tmp_path / "labels.csv", folder_rows(root))

    report = dataset_check.check_csv(path, image_dir=root, val_split=0.25, seed=seed)

    assert report.pop("csv") == str(tmp_path / "labels.csv")
    assert report.pop("split_column") is False
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


def test_the_command_checks_a_csv(tmp_path, monkeypatch, capsys):
    root = write_clean_folder(str(tmp_path / "images"), per_class=3)
    shutil.copy(os.path.join(root, "cats", "00.png"), os.path.join(root, "dogs", "00_copy.png"))
    rows = [(path, label.upper()) for path, label in folder_rows(root)]
    path = write_labels_csv(tmp_path / "labels.csv", rows, ("file", "class"))
    monkeypatch.chdir(tmp_path)
    flags = ["--csv", path, "--image-dir", root, "--path-column", "file", "--label-column", "class"]

    assert check.main([*flags, "--strict"]) == 1
    written = json.loads((tmp_path / dataset_check.REPORT_FILE).read_text())
    assert written["conflicting_labels"][0]["classes"] == ["CATS", "DOGS"]
    assert written["csv"] == path and written["num_images"] == 10
    assert capsys.readouterr().out.startswith("images              10 in 3 classes")
    for argv, expected in (
        ([root, *flags], "Pass either DATA_DIR or --csv FILE"),
        ([root, "--image-dir", root], "--image-dir goes with --csv"),
        (["--csv", str(tmp_path / "none.csv")], "CSV file not found"),
        (["--csv", path], "has no column 'path'; its columns are: file, class"),
        ([], "Pass either DATA_DIR or --csv FILE"),
    ):
        assert check.main(argv) == 2
        stderr = capsys.readouterr().err
        assert len(stderr.splitlines()) == 1 and expected in stderr, stderr


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


def test_max_image_pixels_moves_the_cap_for_the_check_training_and_the_command(image_folder, capsys):
    big = os.path.join(image_folder, "red", "big.png")
    Image.new("RGB", (60, 50), (200, 0, 0)).save(big)
    reason = "image of 3000 pixels is over the limit of 2999 pixels"
    report = dataset_check.check_dataset(image_folder, val_split=0, max_image_pixels=2999)
    assert report["unreadable"] == {os.path.join("red", "big.png"): reason}
    with pytest.warns(UserWarning, match="big.png"):
        data = from_folder(image_folder, image_size=32, val_split=0, max_image_pixels=2999)
    assert data.skipped == {big: reason} and data.num_train == 21
    at_the_cap = from_folder(image_folder, image_size=32, val_split=0, max_image_pixels=3000)
    assert at_the_cap.skipped == {} and at_the_cap.num_train == 22
    output = os.path.join(image_folder, "..", "report.json")
    assert check.main([image_folder, "--max-image-pixels", "2999", "--output", output]) == 0
    with open(output) as file:
        assert json.load(file)["unreadable"] == {os.path.join("red", "big.png"): reason}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        check.main([image_folder, "--max-image-pixels", "0"])
    assert "--max-image-pixels" in capsys.readouterr().err


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
