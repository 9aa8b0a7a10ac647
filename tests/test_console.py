"""Tests of tfresnet.cli.console: one-line errors with exit code 2, and the flags' value checks."""

import argparse

import pytest

from tfresnet.cli import console


def test_bad_input_is_one_line_on_stderr_with_exit_code_2(capsys):
    error = ValueError("No images found in 'photos/'.\n  Pass a folder.")
    assert console.print_bad_input("python -m tfresnet.check", error) == console.EXIT_BAD_INPUT == 2
    assert console.print_bad_input("prog", KeyError()) == 2  # no message: its type
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "python -m tfresnet.check: error: No images found in 'photos/'. Pass a folder.",
        "prog: error: KeyError",
    ]


def test_a_bad_flag_exits_2_with_one_line(capsys):
    parser = console.Parser(prog="python -m tfresnet.x")
    parser.add_argument("--seed", type=console.seed)
    assert parser.parse_args(["--seed", str(console.MAX_SEED)]).seed == 2**32 - 1
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--seed", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "python -m tfresnet.x: error: argument --seed: must be an integer from 0 to 4294967295 "
        "(2**32 - 1), received -1 (see --help)"
    ]


@pytest.mark.parametrize(
    "check, text, message",
    [
        (console.positive_int, "0", "must be a positive integer, received 0"),
        (console.non_negative_int, "1.5", "must be an integer, received '1.5'"),
        (console.fraction, "1", "must be in [0, 1), received 1"),
        (console.positive_float, "0", "must be > 0, received 0"),
        (console.non_negative_float, "x", "must be a number, received 'x'"),
    ],
    ids=["positive_int", "non_negative_int", "fraction", "positive_float", "non_negative_float"],
)
def test_flag_values_are_checked_saying_what_was_received(check, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        check(text)
    assert str(error.value) == message


def test_verbose_is_read_before_the_full_parser():
    assert console.wants_verbose(["--data-dir", "photos/", "--verbose", "--epochs", "x"]) is True
    assert console.wants_verbose(["--data-dir", "photos/"]) is False
