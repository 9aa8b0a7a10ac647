"""Tests of tfresnet.cli.quiet: unactionable warnings and native lines kept off the terminal."""

import logging
import os
import sys
import warnings

import pytest

from tfresnet.cli import quiet

DEPRECATED = "tf.lite.Interpreter is deprecated and will be removed in TF 2.20"  # a quieted warning
ACTIONABLE = "a warning the user can act on"


@pytest.mark.parametrize("verbose", [False, True])
def test_a_quieted_warning_is_swallowed_unless_verbose(verbose):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet.quiet_terminal(verbose=verbose):
            warnings.warn(DEPRECATED, UserWarning, stacklevel=1)
            warnings.warn(ACTIONABLE, UserWarning, stacklevel=1)
    assert [str(warning.message) for warning in caught] == [DEPRECATED] * verbose + [ACTIONABLE]


def test_native_lines_are_dropped_while_python_lines_show(capfd):
    before = logging.getLogger("tf2onnx").level
    with quiet.quiet_terminal():
        os.write(2, b"Created TensorFlow Lite XNNPACK delegate for CPU.\n")  # as the converters write
        print("the command's own line", file=sys.stderr)
        assert logging.getLogger("tf2onnx").level == logging.ERROR
    assert logging.getLogger("tf2onnx").level == before
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "the command's own line" in err
