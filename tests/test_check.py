"""The command `python -m tfresnet.check`: the report it writes, the table it prints, `--strict`, a
CSV file and bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import (
    TRUNCATED,
    copy_to_ram,
    exit_code,
    folder_rows,
    write_clean_folder,
    write_labels_csv,
    write_multi_label_csv,
)
from PIL import Image

from tfresnet import check, paths
from tfresnet.data import from_folder
from tfresnet.insight import dataset_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        (["{clean}", "--multi-label"], "--multi-label reads each image's labels from a CSV's label column"),
    ],
    ids=["missing-folder", "output-is-a-folder", "bad-flag", "multi-label-folder"],
)
def test_bad_input_exits_2_with_one_line(argv, expected, clean_folder, tmp_path, capsys):
    argv = [arg.format(tmp=tmp_path, clean=clean_folder) for arg in argv]
    code = exit_code(check.main, argv)
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


def test_the_command_checks_a_multi_label_csv(multi_label_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert check.main(["--csv", multi_label_csv, "--multi-label", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / dataset_check.REPORT_FILE).read_text())
    expected = dataset_check.check_csv(multi_label_csv, multi_label=True, seed=0)
    assert written == json.loads(json.dumps(expected))
    assert printed.startswith("images              48 with 3 labels")
    assert "label pairs         " in printed
    assert f"unlabelled          {written['unlabelled']['count']} images" in printed
    semicolons = write_multi_label_csv(str(tmp_path / "semicolons"), delimiter=";")
    flags = ["--csv", semicolons, "--multi-label", "--label-delimiter", ";", "--output", "semicolons.json"]
    assert check.main([*flags, "--seed", "0", "--strict"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "semicolons.json").read_text())["label_counts"] == written["label_counts"]
    for argv, expected in (
        (
            ["--csv", multi_label_csv, "--label-delimiter", ";"],
            "--label-delimiter separates the labels of --multi-label",
        ),
        (["--csv", multi_label_csv, "--multi-label", "--label-issues"], "--label-issues is single-label"),
        (["--csv", semicolons, "--multi-label"], "label_delimiter=';'"),
        (["--apply-fixes", "issues.csv", "--output", "fixed.csv", "--multi-label"], "single-label only"),
    ):
        assert check.main(argv) == 2, argv
        stderr = capsys.readouterr().err
        assert len(stderr.splitlines()) == 1 and expected in stderr, stderr


# === Data and reports on a store (ram://, TensorFlow's in-memory file system: in-process) ===


@pytest.fixture
def planted_report_local(planted) -> dict:
    root, seed = planted
    return json.loads(json.dumps(dataset_check.check_dataset(root, val_split=0.25, seed=seed)))


def test_the_command_checks_a_folder_on_a_store_and_writes_its_report_there(
    planted, planted_report_local, ram_dir, capsys
):
    root, seed = planted
    ram = copy_to_ram(root, paths.join(ram_dir, "images"))
    output = paths.join(ram_dir, "reports", "checked.json")

    assert check.main([ram, "--val-split", "0.25", "--seed", str(seed), "--output", output]) == 0
    written = json.loads(paths.read_bytes(output))
    assert written.pop("directory") == ram
    assert written == {key: value for key, value in planted_report_local.items() if key != "directory"}
    printed = capsys.readouterr().out
    assert f"report              {output}" in printed
    assert printed.splitlines()[0].startswith("images              27 in 3 classes")


def test_a_missing_folder_or_csv_on_a_store_is_the_one_line_of_a_local_one(tmp_path, ram_dir, capsys):
    lines = []
    for root in (str(tmp_path), ram_dir):
        for argv in ([paths.join(root, "missing")], ["--csv", paths.join(root, "missing.csv")]):
            assert check.main(argv) == 2
            lines.append(capsys.readouterr().err.replace(root, "ROOT"))
    assert lines[:2] == lines[2:]
    assert all(len(line.splitlines()) == 1 for line in lines)


def test_label_issues_on_a_store_keep_their_features_and_csv_there(flipped_folder, ram_dir, capsys):
    ram = copy_to_ram(flipped_folder, paths.join(ram_dir, "images"))
    output, features = paths.join(ram_dir, "check", "report.json"), paths.join(ram_dir, "features")
    tiny = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32", "--folds", "2"]

    assert (
        check.main([ram, "--label-issues", *tiny, "--seed", "0", "--output", output, "--cache-dir", features])
        == 0
    )
    assert sorted(paths.listdir(paths.join(ram_dir, "check"))) == ["label_issues.csv", "report.json"]
    assert [name for name in paths.listdir(features) if name.startswith("features-")]
    report = json.loads(paths.read_bytes(output))
    assert report["label_issues"]["num_images"] == 42
    assert report["label_issues"]["file"] == paths.join(ram_dir, "check", "label_issues.csv")
