"""`python -m tfresnet.check DATA_DIR` (or `--csv FILE`): the dataset check of
`tfresnet.check_dataset` and `tfresnet.check_csv` as a command, with a summary table.

With `--label-issues`, it also looks for images whose label looks wrong (see
`tfresnet.insight.label_issues`) and writes them to `label_issues.csv` beside the report, with
an `action` column to fill in; `--apply-fixes` then writes a labels CSV with those fixes that
`python -m tfresnet.finetune --csv` trains on. With `--multi-label`, the CSV's label column lists
each image's labels (separated by `--label-delimiter`): the check then counts the images per
label, the most frequent pairs and the images without labels.

Example:
    python -m tfresnet.check flowers/ --val-split 0.2 --seed 0 --strict
    python -m tfresnet.check --csv labels.csv --image-dir photos/ --seed 0
    python -m tfresnet.check --csv tags.csv --multi-label --label-delimiter ";"
    python -m tfresnet.check flowers/ --label-issues --output runs/check/dataset_report.json
    python -m tfresnet.check --apply-fixes runs/check/label_issues.csv --output labels.csv
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from tfresnet import paths
from tfresnet.cli import console, finetune_flags
from tfresnet.insight.dataset_check import (
    HAMMING_THRESHOLD,
    REPORT_FILE,
    check_csv,
    check_dataset,
    has_problems,
    summary_table,
)


def build_parser() -> argparse.ArgumentParser:
    """The command's flags; `--help` documents each."""
    parser = console.Parser(
        prog="python -m tfresnet.check",
        description="Check an image folder or the images a CSV file lists: duplicates, leakage "
        "across the split, bad files, sizes, modes.",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument(
        "data_dir",
        metavar="DATA_DIR",
        nargs="?",
        help="folder with one sub-folder of images per class (or pass --csv)",
    )
    data = parser.add_argument_group("images listed in a CSV file (instead of DATA_DIR)")
    data.add_argument("--csv", metavar="FILE", help="CSV file with a header line and a line per image")
    data.add_argument(
        "--image-dir",
        metavar="DIR",
        help="folder the CSV's relative paths start from (default: the CSV's folder)",
    )
    data.add_argument("--path-column", default="path", metavar="NAME", help="the CSV's column of image paths")
    data.add_argument("--label-column", default="label", metavar="NAME", help="the CSV's column of labels")
    console.add_multi_label_flags(data)
    parser.add_argument(
        "--output",
        default=None,
        help=f"the JSON report to write (default: {REPORT_FILE}); with --apply-fixes, the labels CSV",
    )
    parser.add_argument(
        "--val-split",
        type=console.fraction,
        default=0.2,
        help="the validation fraction training uses (ignored for a CSV with a 'split' column)",
    )
    parser.add_argument(
        "--seed", type=console.seed, default=None, help="the seed training uses (it decides the split)"
    )
    parser.add_argument(
        "--hamming-threshold",
        type=console.non_negative_int,
        default=HAMMING_THRESHOLD,
        help="most differing bits (of 64) of near-duplicates' perceptual hashes",
    )
    console.add_max_image_pixels(parser, larger="a larger one is listed as unreadable")
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 on leakage across the split or a label conflict"
    )
    _label_issue_flags(
        parser.add_argument_group("label issues (needs cleanlab: pip install 'tfresnet[cleanlab]')")
    )
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own logs")
    return parser


def _label_issue_flags(group: argparse._ArgumentGroup) -> None:
    from tfresnet.data.pipeline import IMAGE_SIZE
    from tfresnet.insight.label_fixes import ISSUES_FILE
    from tfresnet.insight.label_issues import FOLDS

    group.add_argument(
        "--label-issues",
        action="store_true",
        help=f"also find images whose label looks wrong, from out-of-fold predictions on backbone "
        f"features; writes {ISSUES_FILE} beside the report",
    )
    finetune_flags.add_backbone_flags(group)
    group.add_argument(
        "--image-size", type=console.positive_int, default=IMAGE_SIZE, help="side the images are read at"
    )
    group.add_argument("--folds", type=_folds, default=FOLDS, help="heads trained, each predicting one fold")
    group.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="folder to keep the backbone features in; a search's --tune-dir reads them "
        "(default: the report's folder)",
    )
    group.add_argument(
        "--apply-fixes",
        metavar="FILE",
        help=f"write the labels CSV (--output) of the dataset with the actions filled in {ISSUES_FILE} "
        "applied (relabel, drop, keep); the dataset is DATA_DIR or --csv, by default the one the "
        "check ran on",
    )


def _folds(text: str) -> int:
    value = console.int_type(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, received {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done, 1 problems with `--strict`, 2 bad input).

    Example:
        main(["flowers/", "--output", "flowers_report.json", "--strict"])
        # 0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with console.quiet_output(verbose=console.wants_verbose(argv)):
        from tfresnet.files import write_json

        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            if args.apply_fixes is not None:
                fixed = _apply_fixes(args)
            else:
                output = _writable(args.output or REPORT_FILE, "a JSON file")
                run_check = _chosen_check(args)
                report = run_check()
                if "label_issues" in report:
                    report["label_issues"]["file"] = _write_issues(report, output)
                write_json(output, report)
        except _bad_input_errors() as error:
            return console.print_bad_input(parser.prog, error)
    if args.apply_fixes is not None:
        print(
            f"{'labels':<20}{paths.absolute(args.output)} ({fixed['images']} images: "
            f"{fixed['relabelled']} relabelled, {fixed['dropped']} dropped)"
        )
        return 0
    print(summary_table(report))
    print(f"{'report':<20}{paths.absolute(output)}")
    if "label_issues" in report:
        print(
            f"{'label issues':<20}{report['label_issues']['file']} "
            "(fill its 'action' column, then --apply-fixes)"
        )
    return 1 if args.strict and has_problems(report) else 0


def _bad_input_errors() -> tuple[type[BaseException], ...]:
    """What the command reports in one line: bad flags or data, and a store's own errors."""
    import tensorflow as tf

    return ValueError, OSError, ImportError, tf.errors.OpError


def _writable(path: str, kind: str) -> str:
    """`path` (local or on a store, `gs://...`), its folder created; a ValueError if it is a folder."""
    if paths.isdir(path):
        raise ValueError(f"--output {path!r} is a folder. Pass the path of {kind}.")
    paths.makedirs(os.path.dirname(paths.absolute(path)))
    return path


def _write_issues(report: dict, output: str) -> str:
    """Writes the report's label issues as the CSV beside `output`; returns its absolute path."""
    from tfresnet.insight.label_fixes import ISSUES_FILE, write_issues_csv

    path = paths.join(os.path.dirname(paths.absolute(output)), ISSUES_FILE)
    write_issues_csv(path, report["label_issues"]["issues"])
    return path


def _apply_fixes(args: argparse.Namespace) -> dict:
    """`apply_label_fixes` on DATA_DIR or `--csv`, else on the dataset the check recorded."""
    from tfresnet.insight.label_fixes import apply_label_fixes, checked_dataset

    if args.output is None:
        raise ValueError(
            "--apply-fixes writes a labels CSV: pass its path as --output, e.g. --output labels.csv."
        )
    if args.multi_label:
        raise ValueError("--apply-fixes is single-label only (as --label-issues): leave --multi-label out.")
    if args.data_dir is not None and args.csv is not None:
        raise ValueError("Pass either DATA_DIR or --csv FILE, not both.")
    if args.data_dir is None and args.csv is None:
        dataset = checked_dataset(args.apply_fixes)
    else:
        dataset = {
            "directory": args.data_dir,
            "csv_path": args.csv,
            "image_dir": args.image_dir,
            "path_column": args.path_column,
            "label_column": args.label_column,
        }
    return apply_label_fixes(args.apply_fixes, _writable(args.output, "a CSV file"), **dataset)


def _chosen_check(args: argparse.Namespace) -> Callable[[], dict]:
    """`check_dataset` on DATA_DIR or `check_csv` on `--csv`, as the flags ask, to call."""
    if (args.data_dir is None) == (args.csv is None):
        raise ValueError("Pass either DATA_DIR or --csv FILE, not both or neither.")
    _check_multi_label_flags(args)
    settings = {
        "val_split": args.val_split,
        "seed": args.seed,
        "hamming_threshold": args.hamming_threshold,
        "max_image_pixels": args.max_image_pixels,
    }
    if args.label_issues:
        settings.update(_label_issue_settings(args))
    if args.csv is None:
        if args.image_dir is not None:
            raise ValueError("--image-dir goes with --csv FILE. Pass --csv, or leave --image-dir out.")
        return functools.partial(check_dataset, args.data_dir, **settings)
    if args.multi_label:
        settings.update(multi_label=True, label_delimiter=args.label_delimiter)
    return functools.partial(
        check_csv,
        args.csv,
        image_dir=args.image_dir,
        path_column=args.path_column,
        label_column=args.label_column,
        **settings,
    )


def _check_multi_label_flags(args: argparse.Namespace) -> None:
    """`--multi-label` goes with `--csv` (`preflight.check_multi_label`), not with `--label-issues`."""
    from tfresnet.cli import preflight

    source = "--csv" if args.csv is not None else "a folder of class folders"
    preflight.check_multi_label(
        multi_label=args.multi_label, label_delimiter=args.label_delimiter, source=source, calibrate=False
    )
    if args.multi_label and args.label_issues:
        raise ValueError(
            "--label-issues is single-label only: it ranks each image's one label. Leave it out "
            "with --multi-label."
        )


def _label_issue_settings(args: argparse.Namespace) -> dict:
    """The check's label-issue arguments, the backbone and its weights checked first."""
    from tfresnet.cli import preflight
    from tfresnet.insight.label_issues import LabelIssueOptions, require_cleanlab

    require_cleanlab()
    model = {
        "backbone": args.backbone,
        "weights": finetune_flags.weights(args),
        "image_size": args.image_size,
        "freeze_until": 0,
    }
    preflight.check_weights(**model, build=preflight.check_backbone(**model))
    model.pop("freeze_until")
    output = args.output or REPORT_FILE
    cache_dir = args.cache_dir or os.path.dirname(paths.absolute(output))
    return {"label_issues": LabelIssueOptions(**model, folds=args.folds, cache_dir=cache_dir)}


if __name__ == "__main__":
    sys.exit(main())
