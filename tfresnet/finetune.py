"""`python -m tfresnet.finetune`: from images (a class folder, a CSV of labels or a TFDS dataset)
to a SavedModel.

A thin command over the library (its flags: `tfresnet.cli.finetune_flags`; what it does with
them: `tfresnet.cli.finetune_run`): load the data, draw the first training batch (`batch.png`),
(optionally search hyper-parameters,) fine-tune with the two-phase recipe, write the evaluation
report and export for serving. Images in a folder or a CSV are checked first
(`tfresnet.check_dataset`: duplicates, leakage across the split, bad files), unless
`--no-check`; the findings go into the report.

Errors. Everything a run needs is checked before any training (or search) starts: the flags,
the data, the backbone, its weights file and the optional packages that file needs, where
the backbone starts to train, and that the output folders can be written. Bad input stops
the command there, with one line on stderr and exit code 2. What fails later, while training,
is not bad input: it keeps its traceback (exit code 1), and the run's files stay where they
are (`--resume` continues it).

Output: Keras's progress bars, the command's own lines and its JSON summary; TensorFlow's own
log lines only with `--verbose`. Several machines: with `--tune` and keras-tuner's variables,
every process takes part in one search, then only its chief trains, reports and exports.

Example:
    python -m tfresnet.finetune --data-dir flowers/ --image-size 224 --epochs 5 \\
        --output-dir runs/flowers --export-dir models/flowers/1
"""

from __future__ import annotations

import contextlib
import sys

from tfresnet.cli import console
from tfresnet.cli.finetune_flags import build_parser
from tfresnet.cli.finetune_run import run

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done, 2 bad usage or bad input).

    A failure during training or the search is raised, with its traceback (exit code 1 from
    `python -m`); the files written so far stay, so that `--resume` continues the run.

    Example:
        main(["--data-dir", "flowers/", "--epochs", "2", "--output-dir", "runs/flowers"])
        # 0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with console.quiet_output(verbose=console.wants_verbose(argv)):
        args = build_parser().parse_args(argv)
        with contextlib.ExitStack() as held:  # the output folder's lock, for the whole command
            return run(args, held)


if __name__ == "__main__":
    sys.exit(main())
