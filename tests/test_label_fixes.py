"""The fixes fed back: a badly filled file or bad flags get one line and exit 2, and a CSV's
split column survives `apply_label_fixes`. (The whole loop, check to training, is in
test_label_issues.py.)"""

import csv
import os

import pytest
from conftest import COLOURS, copy_to_ram, exit_code

import tfresnet
from tfresnet import check
from tfresnet.files import write_json, write_text
from tfresnet.insight import label_fixes
from tfresnet.paths import join, open_file


@pytest.mark.parametrize(
    "row, expected",
    [
        ("green/flipped_002.jpg,green,blue,0.01,rename", "has action 'rename'"),
        ("green/flipped_002.jpg,green,wolf,0.01,relabel", "relabels to 'wolf', which is not a class"),
        (
            "green/elsewhere.jpg,green,blue,0.01,drop",
            "names 'green/elsewhere.jpg', which is not in the dataset",
        ),
    ],
    ids=["unknown-action", "unknown-class", "unknown-file"],
)
def test_a_badly_filled_file_exits_2_with_one_line(row, expected, flipped_folder, tmp_path, capsys):
    issues_csv = tmp_path / label_fixes.ISSUES_FILE
    issues_csv.write_text(",".join(label_fixes.ISSUE_COLUMNS) + "\n" + row + "\n")
    output = tmp_path / "labels.csv"
    code = check.main([flipped_folder, "--apply-fixes", str(issues_csv), "--output", str(output)])
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.splitlines()) == 1 and expected in stderr
    assert not output.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["--apply-fixes", "{tmp}/missing.csv", "--output", "{tmp}/labels.csv"],
            "Label issues file not found",
        ),
        (["--apply-fixes", "{tmp}/orphan.csv", "--output", "{tmp}/labels.csv"], "No check report beside"),
        (["{data}", "--apply-fixes", "{tmp}/orphan.csv"], "pass its path as --output"),
        (["{data}", "--label-issues", "--folds", "1"], "--folds"),
    ],
    ids=["missing-file", "no-report", "no-output", "one-fold"],
)
def test_bad_input_exits_2_with_one_line(argv, expected, flipped_folder, tmp_path, capsys):
    (tmp_path / "orphan.csv").write_text(",".join(label_fixes.ISSUE_COLUMNS) + "\n")
    argv = [arg.format(tmp=tmp_path, data=flipped_folder) for arg in argv]
    code = exit_code(check.main, argv)
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.splitlines()) == 1 and expected in stderr


def test_fixes_to_a_csv_keep_its_split_column(flipped_folder, tmp_path):
    rows = [(os.path.join(flipped_folder, name, f"{i:03d}.jpg"), name) for name in COLOURS for i in range(2)]
    source = tmp_path / "source.csv"
    with open(source, "w", newline="") as file:
        splits = ["validation"] + ["train"] * (len(rows) - 1)
        csv.writer(file).writerows(
            [("image", "class", "split")] + [row + (split,) for row, split in zip(rows, splits)]
        )
    issues_csv = tmp_path / label_fixes.ISSUES_FILE
    relative = os.path.relpath(rows[2][0], tmp_path)
    issues_csv.write_text(f"path,given,suggested,probability,action\n{relative},green,red,0.1,relabel\n")
    fixed = label_fixes.apply_label_fixes(
        issues_csv,
        tmp_path / "out" / "labels.csv",
        csv_path=source,
        path_column="image",
        label_column="class",
    )
    assert fixed == {"images": 6, "relabelled": 1, "dropped": 0}
    with open(tmp_path / "out" / "labels.csv", newline="") as file:
        written = list(csv.DictReader(file))
    assert list(written[0]) == ["image", "class", "split"]
    assert [row["split"] for row in written] == splits
    assert [row["class"] for row in written] == ["blue", "blue", "red", "green", "red", "red"]
    assert (
        tfresnet.from_csv(
            tmp_path / "out" / "labels.csv", path_column="image", label_column="class"
        ).num_validation
        == 1
    )


def test_fixes_on_a_store_read_there_and_write_a_labels_csv_there(flipped_folder, ram_dir):
    """The check's files, the dataset and the labels CSV on TensorFlow's in-memory file system."""
    images = copy_to_ram(flipped_folder, join(ram_dir, "images"))
    issues_csv = join(ram_dir, "check", label_fixes.ISSUES_FILE)
    fixes = "green/flipped_002.jpg,green,blue,0.01,relabel\nred/flipped_005.jpg,red,green,0.02,drop\n"
    write_text(issues_csv, ",".join(label_fixes.ISSUE_COLUMNS) + "\n" + fixes)
    write_json(
        join(ram_dir, "check", "check.json"), {"directory": images, "label_issues": {"file": issues_csv}}
    )
    assert label_fixes.checked_dataset(issues_csv) == {"directory": images}

    inside, outside = join(images, "labels.csv"), join(ram_dir, "fixed", "labels.csv")
    for output in (inside, outside):
        fixed = label_fixes.apply_label_fixes(issues_csv, output, directory=images)
        assert fixed == {"images": 41, "relabelled": 1, "dropped": 1}
    with open_file(inside, newline="") as file:
        rows = dict(list(csv.reader(file))[1:])
    assert len(rows) == 41 and "red/flipped_005.jpg" not in rows
    assert rows["green/flipped_002.jpg"] == "blue" and rows["blue/000.jpg"] == "blue"
    with open_file(outside, newline="") as file:  # outside the images' folder: their whole URLs
        assert dict(list(csv.reader(file))[1:]) == {join(images, path): label for path, label in rows.items()}
