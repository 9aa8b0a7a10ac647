"""TensorFlow imported without the lines its native libraries print while they load.

While its shared libraries load, TensorFlow logs from C++ straight to file descriptor 2, before
any setting of the running program can apply: oneDNN's notice, the CUDA stubs of a machine
without a GPU, the CPU features it was not built for, factories registered twice.
`import tfresnet` imports TensorFlow through `import_tensorflow`, which keeps those lines
(`tensorflow_load_log()`) instead of printing them, and writes them out if the import fails.
Where TensorFlow was imported first, it does nothing. The commands' `--verbose` prints the
kept lines; later log lines are TensorFlow's as usual (`TF_CPP_MIN_LOG_LEVEL`).

`native_stderr_captured` is the same capture for any block: the commands run inside it, so
that what native code writes to descriptor 2 (TensorFlow's C++ logs, converters, libjpeg)
stays off the terminal while Python's `sys.stderr` still reaches it. The standard library
only: `tfresnet/__init__.py` imports this module first.

Example:
>>> import_tensorflow()
>>> "tensorflow" in sys.modules
True
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

_load_log = ""


def import_tensorflow() -> None:
    """Imports TensorFlow, keeping the lines its native libraries print while they load."""
    global _load_log
    if "tensorflow" in sys.modules:
        return
    with native_stderr_captured() as captured:
        import tensorflow  # noqa: F401

        _load_log = captured()


def tensorflow_load_log() -> str:
    """The lines TensorFlow's native libraries printed while `import_tensorflow` loaded them
    ("" where TensorFlow was imported before tfresnet).

    Example:
    >>> isinstance(tensorflow_load_log(), str)
    True
    """
    return _load_log


@contextlib.contextmanager
def native_stderr_captured():
    """Sends file descriptor 2 to a temporary file inside the block; `sys.stderr` keeps writing
    to the terminal.

    What native code writes straight to descriptor 2 is dropped, unless the block fails: then
    it is written out, before the traceback. The block gets a function returning what was
    captured so far.

    Example:
    >>> with native_stderr_captured() as captured:
    ...     _ = os.write(2, b"from native code\\n")
    ...     captured()
    'from native code\\n'
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to protect
        saved = None
    if saved is None:
        yield lambda: ""
        return
    python_stderr = sys.stderr
    # Python's stderr keeps reaching the terminal (where it wrote to descriptor 2 at all: not
    # in a notebook, nor under pytest's capsys).
    terminal = None
    if _writes_to_descriptor_2(python_stderr):
        encoding = getattr(python_stderr, "encoding", None)
        terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=encoding)
    with tempfile.TemporaryFile() as file:

        def captured() -> str:
            file.seek(0)
            return file.read().decode(errors="replace")

        os.dup2(file.fileno(), 2)
        sys.stderr = terminal or python_stderr
        try:
            yield captured
        except BaseException as error:
            if not isinstance(error, (SystemExit, KeyboardInterrupt)):
                file.seek(0)
                sys.stderr.flush()
                os.write(saved, file.read())
            raise
        finally:
            sys.stderr = python_stderr
            if terminal is not None:
                terminal.close()
            os.dup2(saved, 2)
            os.close(saved)


def _writes_to_descriptor_2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # no descriptor: a notebook's or pytest's stream
        return False
