"""The fixes a person decides on the label check's findings, fed back as a labels CSV.

`write_issues_csv` writes the findings of `tfresnet.insight.label_issues.find_label_issues` as
`label_issues.csv` (`path,given,suggested,probability,action`), the action empty for a person to
fill with `relabel`, `drop` or `keep`; `apply_label_fixes` turns the filled file and the dataset
into a labels CSV that `tfresnet.from_csv` (`--csv`) trains on. No image is moved or changed.
Every file may be local or on a store (`gs://...`).

Example:
    write_issues_csv("runs/check/label_issues.csv", report["label_issues"]["issues"])
    # ... a person fills the action column ...
    apply_label_fixes("runs/check/label_issues.csv", "labels.csv", directory="flowers/")
"""

from __future__ import annotations

import csv
import io
import os

from tfresnet import paths
from tfresnet.files import read_json, write_text

ISSUES_FILE = "label_issues.csv"
ISSUE_COLUMNS = ("path", "given", "suggested", "probability", "action")
ACTIONS = ("relabel", "drop", "keep")


def write_issues_csv(path: str | os.PathLike, issues: list[dict]) -> None:
    """Writes `issues` (`find_label_issues`'s, paths as they are given) as
    `path,given,suggested,probability,action`, the action empty, atomically.

    Example:
        write_issues_csv("runs/check/label_issues.csv", report["label_issues"]["issues"])
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(ISSUE_COLUMNS)
    for issue in issues:
        writer.writerow(
            [issue["path"], issue["given"], issue["suggested"], f"{issue['probability']:.4f}", ""]
        )
    write_text(os.fspath(path), text.getvalue())


def read_fixes(path: str | os.PathLike, class_names: list[str]) -> dict[str, tuple[str, str]]:
    """The filled `label_issues.csv`: `{relative path: (action, label)}` for the rows with an
    action other than `keep` (`relabel` takes the `suggested` column, which may be edited to any
    class). Raises a ValueError naming the line of a bad row.

    Example:
        read_fixes("runs/check/label_issues.csv", ["cat", "dog"])
        # {'cat/7.jpg': ('relabel', 'dog'), 'dog/3.jpg': ('drop', 'dog')}
    """
    path = _existing(path)
    with paths.open_file(path, newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
        header = list(rows[0]) if rows else []
    missing = [column for column in ISSUE_COLUMNS if rows and column not in header]
    if missing:
        raise ValueError(
            f"{path!r} has no column {missing[0]!r}: give it the header {','.join(ISSUE_COLUMNS)}."
        )
    fixes = {}
    for line, row in enumerate(rows, start=2):
        action = (row["action"] or "").strip().lower()
        label = (row["suggested"] or "").strip()
        if action not in ACTIONS + ("",):
            raise ValueError(
                f"Line {line} of {path!r} has action {row['action']!r}; write relabel, drop, keep or nothing."
            )
        if action == "relabel" and label not in class_names:
            raise ValueError(
                f"Line {line} of {path!r} relabels to {label!r}, which is not a class "
                f"({', '.join(class_names)}). Put a class name in its 'suggested' column."
            )
        if action in ("relabel", "drop"):
            fixes[_normal(row["path"].strip())] = (action, label)
    return fixes


def checked_dataset(issues_csv: str | os.PathLike) -> dict:
    """The dataset the check that wrote `issues_csv` ran on, as `apply_label_fixes` takes it,
    from the check's report beside it (the JSON file whose `label_issues.file` is `issues_csv`).

    Example:
        checked_dataset("runs/check/label_issues.csv")
        # {'directory': '/data/flowers', 'csv_path': None, ...}
    """
    issues_csv = paths.absolute(_existing(issues_csv))
    folder = os.path.dirname(issues_csv)
    for name in paths.listdir(folder) if paths.isdir(folder) else []:
        if not name.endswith(".json"):
            continue
        try:
            report = read_json(paths.join(folder, name))
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or (report.get("label_issues") or {}).get("file") != issues_csv:
            continue
        if "csv" not in report:
            return {"directory": report["directory"]}
        return {
            "csv_path": report["csv"],
            "image_dir": report["directory"],
            "path_column": report.get("path_column", "path"),
            "label_column": report.get("label_column", "label"),
        }
    raise ValueError(
        f"No check report beside {issues_csv!r} names it. Pass the DATA_DIR or --csv FILE the check ran on."
    )


def apply_label_fixes(
    issues_csv: str | os.PathLike,
    output: str | os.PathLike,
    *,
    directory: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
) -> dict:
    """Writes a labels CSV of the dataset with the filled `label_issues.csv`'s fixes applied.

    The dataset is a class-folder `directory` or the CSV `csv_path` (with `image_dir` and the
    column names as `from_csv` takes them), the one the check ran on. Every image it lists is
    written with its label (`relabel`: the row's `suggested` class), except those marked
    `drop`; a CSV's `split` column is kept. Paths are written relative to `output`'s folder,
    so `from_csv(output)` reads them. Nothing else is changed.

    Returns:
        `{"images": written, "relabelled": n, "dropped": n}`.

    Example:
        apply_label_fixes("runs/check/label_issues.csv", "labels.csv", directory="flowers/")
        # {'images': 298, 'relabelled': 3, 'dropped': 2}
    """
    from tfresnet.data.csv_labels import SPLIT_COLUMN, list_csv
    from tfresnet.data.folder import list_folder

    if (directory is None) == (csv_path is None):
        raise ValueError(
            "Pass the dataset the check ran on: either a folder or a CSV file, not both or neither."
        )
    if csv_path is None:
        class_names, files, labels, _ = list_folder(directory, strict=False)
        root, split = os.fspath(directory), None
    else:
        listing = list_csv(
            csv_path, image_dir=image_dir, path_column=path_column, label_column=label_column, val_split=0
        )
        class_names, files, labels, root = (
            listing.class_names,
            listing.paths,
            listing.labels,
            listing.image_dir,
        )
        split = listing.in_validation if listing.split_column else None
    fixes = read_fixes(issues_csv, class_names)
    relative = [_relative(path, root) for path in files]
    unknown = sorted(set(fixes) - set(relative))
    if unknown:
        raise ValueError(
            f"{os.fspath(issues_csv)!r} names {unknown[0]!r}, which is not in the dataset: pass the "
            f"folder or CSV the check that wrote it ran on."
        )
    output = os.fspath(output)
    folder = os.path.dirname(paths.absolute(output))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([path_column, label_column] + ([SPLIT_COLUMN] if split is not None else []))
    written = 0
    for i, (path, name) in enumerate(zip(relative, (class_names[label] for label in labels))):
        action, label = fixes.get(path, ("keep", name))
        if action == "drop":
            continue
        row = [_relative(files[i], folder), label]
        writer.writerow(row + (["validation" if split[i] else "train"] if split is not None else []))
        written += 1
    paths.makedirs(folder)
    write_text(output, text.getvalue())
    actions = [action for action, _ in fixes.values()]
    return {"images": written, "relabelled": actions.count("relabel"), "dropped": actions.count("drop")}


def _normal(path: str) -> str:
    """`os.path.normpath` of a local path; a URL as it is (normpath would fold its `//`)."""
    return os.path.normpath(path) if paths.is_local(path) else path


def _relative(path: str, folder: str) -> str:
    """`path` relative to `folder`, as a labels CSV in `folder` names it: `os.path.relpath`
    for local paths; on a store, the part below `folder`, else the whole (absolute) path."""
    if paths.is_local(path) and paths.is_local(folder):
        return os.path.normpath(os.path.relpath(path, folder))
    inside = os.fspath(folder).rstrip("/") + "/"
    return path[len(inside) :] if path.startswith(inside) else paths.absolute(path)


def _existing(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not paths.isfile(path):
        raise FileNotFoundError(
            f"Label issues file not found: {path!r}. Pass the {ISSUES_FILE} the check wrote."
        )
    return path
