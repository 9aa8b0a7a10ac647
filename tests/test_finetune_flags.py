"""Tests of tfresnet.cli.finetune_flags: the command's flags, their checks and the settings they make."""

import pytest

from tfresnet.cli.finetune_flags import build_parser, run_settings


def test_the_flags_make_the_settings_fine_tune_takes():
    flags = ["--data-dir", "photos/", "--weights", "none", "--head-units", "0", "--patience", "0"]
    flags += ["--jit-compile", "off", "--freeze-until", "143"]
    settings = run_settings(build_parser().parse_args(flags))
    assert (settings.weights, settings.head_units, settings.patience) == (None, None, None)
    assert (settings.jit_compile, settings.freeze_until) == (False, 143)
    named = ["--data-dir", "photos/", "--jit-compile", "on", "--freeze-until", "conv4"]
    settings = run_settings(build_parser().parse_args(named))
    assert (settings.weights, settings.jit_compile, settings.freeze_until) == ("imagenet", True, "conv4")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--backbone", "resnet18"], "Unknown backbone"),
        (["--export-formats", "saved_model,tflite"], "comma-separated list of saved_model, litert, onnx"),
        (["--dropout", "1"], "must be in [0, 1), received 1"),
    ],
    ids=["backbone", "export-formats", "dropout"],
)
def test_a_bad_flag_value_exits_2_with_one_line_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--data-dir", "photos/", *flags])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"python -m tfresnet.finetune: error: argument {flags[0]}: ") and message in line
