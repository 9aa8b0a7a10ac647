"""A health check of a dataset: `check_dataset(folder)` and `check_csv(csv_file)` (the
command: `python -m tfresnet.check DATA_DIR` or `--csv FILE`).

It lists the images exactly as `tfresnet.from_folder` or `tfresnet.from_csv` does (the same
files, the same unreadable ones with the same reasons, the same train/validation split for a
`val_split` and `seed`, or a CSV's split column), then reads every readable image once with
PIL, at reduced size (JPEGs are scaled down by libjpeg while they decode), and reports: the
class counts and their imbalance, exact and near duplicates, duplicates filed under different
classes, duplicates on both sides of the split (validation images the model has seen in
training), the image sizes and colour modes. How images are read and duplicates found:
`tfresnet.insight.check_images`. A CSV of several labels per image (`multi_label`) gets its
label counts, pairs and unlabelled images instead: `tfresnet.insight.multi_label_check`.

Example:
    report = check_dataset("flowers/", val_split=0.2, seed=0)
    print(summary_table(report))
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import TYPE_CHECKING, Callable

import numpy as np

from tfresnet import paths as fs
from tfresnet.data.image_size import MAX_IMAGE_PIXELS
from tfresnet.data.label_sets import LABEL_DELIMITER
from tfresnet.insight.check_images import HASH_SIDE, describe_images, mode_counts, size_summary
from tfresnet.insight.duplicates import HAMMING_THRESHOLD, find_duplicates
from tfresnet.insight.label_issues import LabelIssueOptions
from tfresnet.insight.multi_label_check import label_set_findings, summary_rows

if TYPE_CHECKING:
    from tfresnet.data.csv_labels import CsvListing
    from tfresnet.data.folder import FolderListing

REPORT_FILE = "dataset_report.json"


def check_dataset(
    directory: str | os.PathLike,
    *,
    val_split: float = 0.2,
    seed: int | None = None,
    hamming_threshold: int = HAMMING_THRESHOLD,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    label_issues: bool | LabelIssueOptions = False,
) -> dict:
    """Checks a folder of class sub-folders for duplicates, leakage, bad files and odd images.

    Args:
        directory: The folder `tfresnet.from_folder` would load.
        val_split: The validation fraction training uses (0: no split, no leakage to find).
        seed: The seed training uses: with `val_split`, it decides the split checked for leakage.
        hamming_threshold: Most bits (of 64) two near-duplicates' perceptual hashes differ in.
        max_image_pixels: The largest image checked, in pixels (see `tfresnet.from_folder`).
        label_issues: Also look for images whose label looks wrong (needs cleanlab, see
            `tfresnet.insight.label_issues`): True with the defaults of `LabelIssueOptions`
            (ResNet50 with ImageNet weights at 224 px, 5 folds), or the options to use.

    Returns:
        A dict: `directory`, `num_images` (readable), `class_counts`, `imbalance_ratio`
        (largest class / smallest), `exact_duplicates` and `near_duplicates` (lists of groups
        of paths relative to `directory`), `conflicting_labels` and `cross_split` (the groups,
        exact or near, spanning several classes or both sides of the split), `unreadable`
        (path: reason), `image_sizes` (min, median, max of width and height), `modes`
        (counts of grayscale, rgba, cmyk, palette, rgb and other images) and the settings;
        with `label_issues`, `label_issues` (`find_label_issues`'s dict, paths relative to
        `directory`).

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: A folder `from_folder` refuses (no class folders, a single class, a class
            without readable images, a `val_split` that holds out nothing).
        ImportError: `label_issues` without cleanlab installed.

    Example:
        report = check_dataset("flowers/", val_split=0.2, seed=0)
        report["num_images"], report["cross_split"]
        # (300, [])
    """
    from tfresnet.data.folder import from_folder, read_folder
    from tfresnet.data.pipeline import stratified_split

    _check_arguments(val_split, hamming_threshold, label_issues)
    directory = os.fspath(directory)
    with warnings.catch_warnings():  # the bad files are reported below, not warned about
        warnings.simplefilter("ignore")
        listing = read_folder(directory, strict=False, max_image_pixels=max_image_pixels)
    in_validation = np.zeros(len(listing.paths), bool)
    if val_split:
        in_validation[stratified_split(listing.labels, val_split, seed)[1]] = True
    findings = _findings(listing, in_validation, directory, directory, hamming_threshold)
    report = {
        "directory": fs.absolute(directory),
        **findings,
        "val_split": val_split,
        "seed": seed,
        "hamming_threshold": hamming_threshold,
    }
    if label_issues:
        load = functools.partial(
            from_folder, directory, val_split=val_split, max_image_pixels=max_image_pixels
        )
        report["label_issues"] = _label_issues(load, directory, label_issues, seed)
    return report


def check_csv(
    csv_path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "label",
    val_split: float = 0.2,
    seed: int | None = None,
    hamming_threshold: int = HAMMING_THRESHOLD,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    label_issues: bool | LabelIssueOptions = False,
    multi_label: bool = False,
    label_delimiter: str = LABEL_DELIMITER,
) -> dict:
    """Checks the images a CSV file lists, as `check_dataset` checks a folder.

    The images, labels and split are those of `tfresnet.from_csv` with the same arguments:
    a `split` column in the CSV decides the split, else `val_split` and `seed` do.

    Args:
        csv_path: The CSV file `tfresnet.from_csv` would load.
        image_dir: The folder the CSV's relative paths start from (default: the CSV's folder).
        path_column: The column holding the image paths.
        label_column: The column holding the labels.
        val_split: The validation fraction training uses (ignored with a `split` column).
        seed: The seed training uses: with `val_split`, it decides the split checked for leakage.
        hamming_threshold: Most bits (of 64) two near-duplicates' perceptual hashes differ in.
        max_image_pixels: The largest image checked, in pixels (see `tfresnet.from_folder`).
        label_issues: Also look for images whose label looks wrong, as `check_dataset` does
            (single-label only).
        multi_label: Each label cell lists an image's labels (see `tfresnet.from_csv`).
        label_delimiter: What separates an image's labels with `multi_label`.

    Returns:
        `check_dataset`'s dict, its paths relative to `directory` (the folder the CSV's
        paths start from), plus `csv` (the CSV's path) and `split_column` (whether the CSV's
        split column decided the split). With `multi_label`, `label_delimiter` too, and the keys
        of `multi_label_check.label_set_findings` in place of `class_counts` and `conflicting_labels`.

    Raises:
        FileNotFoundError: `csv_path` or `image_dir` does not exist.
        ValueError: A CSV `from_csv` refuses.
        ImportError: `label_issues` without cleanlab installed.

    Example:
        report = check_csv("labels.csv", image_dir="photos/", seed=0)
        report["class_counts"], report["cross_split"]
        # ({'cat': 120, 'dog': 100}, [])
    """
    from tfresnet.data.csv_labels import from_csv, list_csv

    if multi_label and label_issues:
        raise ValueError(
            "The search for label issues (--label-issues) is single-label only: it ranks each "
            "image's one label. Leave it out for a multi-label CSV."
        )
    _check_arguments(val_split, hamming_threshold, label_issues)
    with warnings.catch_warnings():  # the bad files are reported below, not warned about
        warnings.simplefilter("ignore")
        listing = list_csv(
            csv_path,
            image_dir=image_dir,
            path_column=path_column,
            label_column=label_column,
            val_split=val_split,
            seed=seed,
            max_image_pixels=max_image_pixels,
            multi_label=multi_label,
            label_delimiter=label_delimiter,
        )
    findings = _findings(listing, listing.in_validation, listing.image_dir, csv_path, hamming_threshold)
    report = {
        "directory": fs.absolute(listing.image_dir),
        "csv": fs.absolute(csv_path),
        "path_column": path_column,
        "label_column": label_column,
        **({"label_delimiter": label_delimiter} if multi_label else {}),
        **findings,
        "val_split": val_split,
        "split_column": listing.split_column,
        "seed": seed,
        "hamming_threshold": hamming_threshold,
    }
    if label_issues:
        load = functools.partial(
            from_csv,
            csv_path,
            image_dir=image_dir,
            path_column=path_column,
            label_column=label_column,
            val_split=val_split,
            max_image_pixels=max_image_pixels,
        )
        report["label_issues"] = _label_issues(load, listing.image_dir, label_issues, seed)
    return report


def _label_issues(
    load: Callable[..., object], directory: str, options: bool | LabelIssueOptions, seed: int | None
) -> dict:
    """`find_label_issues` on the evaluation batches of the data `load` reads (at the crop
    the weights were evaluated at), its paths relative to `directory`."""
    from tfresnet.insight.label_issues import find_label_issues
    from tfresnet.models.backbones import eval_crop_fraction

    options = LabelIssueOptions() if options is True else options
    seed = 0 if seed is None else seed  # the split of seed None is that of seed 0
    size = {} if options.image_size is None else {"image_size": options.image_size}
    crop = eval_crop_fraction(options.backbone, options.weights)
    data = load(**size, crop_fraction=crop, seed=seed, augmentation="none")
    found = find_label_issues(
        data,
        backbone=options.backbone,
        weights=options.weights,
        folds=options.folds,
        seed=seed,
        cache_dir=options.cache_dir,
    )
    for issue in found["issues"]:
        issue["path"] = relative_path(issue["path"], directory)
    return found


def _check_arguments(
    val_split: float, hamming_threshold: int, label_issues: bool | LabelIssueOptions
) -> None:
    if not isinstance(label_issues, (bool, LabelIssueOptions)):
        raise ValueError(f"label_issues must be a bool or a LabelIssueOptions. Received: {label_issues!r}")
    if label_issues:
        from tfresnet.insight.label_issues import require_cleanlab

        require_cleanlab()  # before any work
    if not (isinstance(val_split, (int, float)) and 0 <= val_split < 1):
        raise ValueError(f"val_split must be in [0, 1). Received: val_split={val_split!r}")
    if isinstance(hamming_threshold, bool) or not isinstance(hamming_threshold, int):
        raise ValueError(f"hamming_threshold must be an integer. Received: {hamming_threshold!r}")
    if not 0 <= hamming_threshold < HASH_SIDE**2:
        raise ValueError(f"hamming_threshold must be in [0, {HASH_SIDE**2}). Received: {hamming_threshold}")


def _findings(
    listing: FolderListing | CsvListing,
    in_validation: np.ndarray,
    directory: str,
    source: str,
    hamming_threshold: int,
) -> dict:
    """The report's findings on the listed images (paths relative to `directory`); what is read
    of each image is kept between runs with the results of `source` (the folder or CSV)."""
    class_names, paths, labels = listing.class_names, listing.paths, listing.labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = describe_images(list(paths), source=source, stats=listing.stats)
    unreadable = dict(listing.skipped)
    unreadable.update({path: found for path, found in zip(paths, images) if isinstance(found, str)})
    kept = [i for i, found in enumerate(images) if not isinstance(found, str)]
    described = [images[i] for i in kept]
    exact, near = find_duplicates([paths[i] for i in kept], described, hamming_threshold)

    multi_label = labels.ndim == 2

    def member(j: int) -> tuple[str, str | None, bool]:
        """The relative path, class (None: multi-label) and split side of readable image `j`."""
        i = kept[j]
        name = None if multi_label else class_names[labels[i]]
        return relative_path(paths[i], directory), name, bool(in_validation[i])

    # (kind, members) of each duplicate group; the groups of a kind sorted by their paths.
    groups = [
        (kind, members)
        for kind, found in (("exact", exact), ("near", near))
        for members in sorted([member(j) for j in group] for group in found)
    ]
    if multi_label:
        named = [relative_path(paths[i], directory) for i in kept]
        labelled = label_set_findings(class_names, labels[kept], named)
    else:
        counts = np.bincount(labels[kept], minlength=len(class_names))
        labelled = {
            "class_counts": {name: int(count) for name, count in zip(class_names, counts)},
            "imbalance_ratio": float(counts.max() / counts.min()) if counts.min() else None,
        }
    return {
        "num_images": len(kept),
        **labelled,
        **_duplicate_findings(groups, conflicts=not multi_label),
        "unreadable": {relative_path(path, directory): reason for path, reason in sorted(unreadable.items())},
        "image_sizes": size_summary(described),
        "modes": mode_counts(described),
    }


def relative_path(path: str, directory: str) -> str:
    """`path` as the report names it: relative to `directory` (a URL on another store as it is).

    Example:
    >>> relative_path("gs://bucket/photos/cats/1.jpg", "gs://bucket/photos")
    'cats/1.jpg'
    """
    if fs.is_local(path) != fs.is_local(directory or "."):
        return path
    return os.path.relpath(path, directory or ".")


def _duplicate_findings(groups: list[tuple[str, list[tuple]]], conflicts: bool) -> dict:
    """The duplicate groups of each kind, those spanning several classes (with `conflicts`) and
    those spanning both sides of the split; `groups` holds `(kind, [(path, class, held out)])`."""
    found = {
        "exact_duplicates": [[path for path, _, _ in group] for kind, group in groups if kind == "exact"],
        "near_duplicates": [[path for path, _, _ in group] for kind, group in groups if kind == "near"],
    }
    if conflicts:
        found["conflicting_labels"] = [
            {
                "kind": kind,
                "paths": [path for path, _, _ in group],
                "classes": sorted({name for _, name, _ in group}),
            }
            for kind, group in groups
            if len({name for _, name, _ in group}) > 1
        ]
    found["cross_split"] = [
        {
            "kind": kind,
            "train": [path for path, _, held_out in group if not held_out],
            "validation": [path for path, _, held_out in group if held_out],
        }
        for kind, group in groups
        if len({held_out for _, _, held_out in group}) > 1
    ]
    return found


# === Summaries ===


def summary_table(report: dict) -> str:
    """The check's findings as a few aligned lines for a terminal.

    Example:
        print(summary_table(check_dataset("flowers/")))
        # images              300 in 3 classes (largest / smallest: 1.2)

    """
    sizes = report["image_sizes"]
    modes = ", ".join(f"{name} {count}" for name, count in report["modes"].items() if count) or "none"
    split = report.get("split_column") or report["val_split"]

    def groups(key: str) -> str:
        found = report[key]
        files = f" ({sum(map(len, found))} files)" if key.endswith("duplicates") and found else ""
        return f"{len(found)} groups{files}"

    if report.get("multi_label"):
        head, conflicts = summary_rows(report), "not checked (single-label only)"
    else:
        ratio = report["imbalance_ratio"]
        spread = f"{ratio:.1f})" if ratio is not None else "n/a)"
        counts = f"{report['num_images']} in {len(report['class_counts'])} classes (largest / smallest: "
        head, conflicts = [("images", counts + spread)], groups("conflicting_labels")
    rows = [
        *head,
        ("exact duplicates", groups("exact_duplicates")),
        ("near duplicates", groups("near_duplicates")),
        ("conflicting labels", conflicts),
        ("cross-split leaks", groups("cross_split") + ("" if split else " (no split)")),
        ("unreadable", f"{len(report['unreadable'])} files"),
        (
            "sizes",
            f"width {sizes['width']['min']}-{sizes['width']['max']}, "
            f"height {sizes['height']['min']}-{sizes['height']['max']}",
        ),
        ("modes", modes),
    ]
    if "label_issues" in report:
        found = report["label_issues"]
        rows.append(
            (
                "label issues",
                f"{len(found['issues'])} suspected of {found['num_images']} "
                f"(out-of-fold accuracy {found['out_of_fold_accuracy']:.2f})",
            )
        )
    return "\n".join(f"{name:<20}{value}" for name, value in rows)


def has_problems(report: dict) -> bool:
    """Whether the check found leakage across the split or a label conflict (`--strict`)."""
    return bool(report["cross_split"] or report.get("conflicting_labels"))
