"""A clean terminal for the export and predict commands, on top of `tfresnet.cli.console.quiet_output`.

`console.quiet_output` keeps what native code writes to descriptor 2 off the terminal: the TFLite
converter, LiteRT and tf2onnx write lines of their own from C++ while they work ("Ignored
output_format.", "Created TensorFlow Lite XNNPACK delegate", the quantizer's settings), which no
setting silences. `quiet_terminal()` also quiets the converters' Python loggers and the warnings
a user of the commands cannot act on; the commands' own lines, other warnings and progress bars
show. If the block fails, the captured lines are written out after all, before the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

# Python warnings of the libraries underneath that a user of the commands cannot act on.
QUIET_WARNINGS = (
    r".*np\.object",  # Keras's numpy-2 patch of tf2onnx
    r".*tf\.lite\.Interpreter is deprecated",
)
QUIET_LOGGERS = ("tf2onnx", "absl")


@contextlib.contextmanager
def quiet_terminal(*, verbose: bool = False):
    """Keeps the libraries' native log lines and unactionable warnings off the terminal.

    Example:
        with quiet_terminal():
            export_litert(model, "model.tflite", class_names=names)
    """
    from tfresnet.cli import console

    if verbose:
        yield
        return
    with console.quiet_output(verbose=False), warnings.catch_warnings(), _quiet_loggers():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@contextlib.contextmanager
def _quiet_loggers():
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
