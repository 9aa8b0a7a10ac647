"""How the commands talk to a terminal: one-line errors, exit codes, quiet output.

Every command (`python -m tfresnet.finetune`, ...) parses its flags with `Parser`, which
reports a bad flag in one line with exit code 2; prints bad input with `print_bad_input`, in
one line, exit code 2; and runs inside `quiet_output`, which keeps TensorFlow's own log lines
and library warnings that a user cannot act on off the terminal (unless `--verbose`).
TensorFlow itself is already imported by then, its start-up lines kept (`tfresnet.startup`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from tfresnet import startup

EXIT_BAD_INPUT = 2
# The largest seed NumPy's and Keras's generators take.
MAX_SEED = 2**32 - 1
# Without --verbose: warnings of the libraries underneath that a user of the command cannot act on.
QUIET_WARNINGS = (
    r"`shuffle=True` was passed, but will be ignored",  # keras-tuner's default; the loaders shuffle
    r"Skipping variable loading for optimizer",  # best weights reloaded into a recompiled model
)


# === Flags ===


class Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line (not the whole usage) and exits with code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, unless its help says it already or there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_max_image_pixels(parser, *, larger: str) -> None:
    """Adds `--max-image-pixels N` (default PIL's cap) to `parser`; `larger` says what happens to
    a larger image."""
    from tfresnet.data.image_size import MAX_IMAGE_PIXELS

    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help=f"largest image read, in pixels, measured from its header before decoding; {larger}",
    )


def add_label_delimiter(parser, *, separates: str) -> None:
    """Adds `--label-delimiter TEXT` (default a space, as in a training CSV) to `parser`;
    `separates` says what it separates."""
    from tfresnet.data.label_sets import LABEL_DELIMITER

    parser.add_argument(
        "--label-delimiter",
        default=LABEL_DELIMITER,
        metavar="TEXT",
        help=f"what separates {separates} (default: a space)",
    )


def add_multi_label_flags(parser) -> None:
    """Adds `--multi-label` and its `--label-delimiter` (a CSV's label column listing each
    image's labels) to `parser`."""
    parser.add_argument(
        "--multi-label",
        action="store_true",
        help="several labels per image: the --csv label column lists them (an empty cell: no label)",
    )
    add_label_delimiter(parser, separates="an image's labels in the --csv label column, with --multi-label")


def positive_int(text: str) -> int:
    value = int_type(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int_type(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, received {text}")
    return value


def seed(text: str) -> int:
    """A seed as NumPy and TensorFlow take it: an integer in [0, 2**32 - 1]."""
    value = int_type(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 0 to {MAX_SEED} (2**32 - 1), received {text}"
        )
    return value


def int_type(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, received {text!r}") from None


def fraction(text: str) -> float:
    value = float_type(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), received {text}")
    return value


def positive_float(text: str) -> float:
    value = float_type(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, received {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float_type(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, received {text}")
    return value


def float_type(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, received {text!r}") from None


# === Bad input ===


def print_bad_input(prog: str, error: BaseException) -> int:
    """Prints `error` in one line on stderr; returns the exit code of bad input.

    Example:
    >>> print_bad_input("python -m tfresnet.finetune", ValueError("no images in 'x/'"))
    2
    """
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# === Quiet output ===


def wants_verbose(argv: list[str]) -> bool:
    """Whether `--verbose` is among `argv`, read before the full parser imports TensorFlow."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_known_args(argv)[0].verbose


@contextlib.contextmanager
def quiet_output(*, verbose: bool):
    """Keeps TensorFlow's logs and unactionable warnings off the terminal inside the block.

    What native code writes to descriptor 2 is dropped (written out before a traceback if the
    block fails), TensorFlow's Python logger shows errors only. With `verbose`, the block runs
    as it is, after the lines TensorFlow printed while it loaded.
    """
    if verbose:
        sys.stderr.write(startup.tensorflow_load_log())
        yield
        return
    import tensorflow as tf

    with warnings.catch_warnings(), startup.native_stderr_captured():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            yield
        finally:
            logger.setLevel(level)
