"""`python -m tfresnet.check DATA_DIR` (or `--csv FILE`): the dataset check of
`tfresnet.check_dataset` and `tfresnet.check_csv` as a command, with a summary table.

Example:
    python -m tfresnet.check flowers/ --val-split 0.2 --seed 0 --strict
    python -m tfresnet.check --csv labels.csv --image-dir photos/ --seed 0
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Callable

from tfresnet.cli import console
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
    parser.add_argument("--output", default=REPORT_FILE, help="the JSON report to write")
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
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own logs")
    return parser


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
            run_check = _chosen_check(args)
            if os.path.isdir(args.output):
                raise ValueError(f"--output {args.output!r} is a folder. Pass the path of a JSON file.")
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            with console.native_stderr_captured(enabled=not args.verbose):
                report = run_check()
            write_json(args.output, report)
        except (ValueError, OSError) as error:
            return console.print_bad_input(parser.prog, error)
    print(summary_table(report))
    print(f"{'report':<20}{os.path.abspath(args.output)}")
    return 1 if args.strict and has_problems(report) else 0


def _chosen_check(args: argparse.Namespace) -> Callable[[], dict]:
    """`check_dataset` on DATA_DIR or `check_csv` on `--csv`, as the flags ask, to call."""
    if (args.data_dir is None) == (args.csv is None):
        raise ValueError("Pass either DATA_DIR or --csv FILE, not both or neither.")
    settings = {
        "val_split": args.val_split,
        "seed": args.seed,
        "hamming_threshold": args.hamming_threshold,
        "max_image_pixels": args.max_image_pixels,
    }
    if args.csv is None:
        if args.image_dir is not None:
            raise ValueError("--image-dir goes with --csv FILE. Pass --csv, or leave --image-dir out.")
        return functools.partial(check_dataset, args.data_dir, **settings)
    return functools.partial(
        check_csv,
        args.csv,
        image_dir=args.image_dir,
        path_column=args.path_column,
        label_column=args.label_column,
        **settings,
    )


if __name__ == "__main__":
    sys.exit(main())
