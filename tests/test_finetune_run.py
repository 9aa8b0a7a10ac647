"""Tests of tfresnet.cli.finetune_run: bad input found before any training, in one line, exit code 2."""

import contextlib

import pytest

from tfresnet import training
from tfresnet.cli import finetune_run
from tfresnet.cli.finetune_flags import build_parser


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "Image folder not found: '{missing}'"),
        (["--calibrate", "--val-split", "0"], "--calibrate fits a temperature on the validation set"),
    ],
    ids=["missing-folder", "calibrate-without-validation"],
)
def test_bad_input_returns_exit_code_2_with_one_line_before_any_training(
    flags, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(training, "fine_tune", lambda *args, **kwargs: pytest.fail("trained"))
    missing, output = tmp_path / "missing", tmp_path / "out"
    tiny = ["--backbone", "resnet-tiny", "--weights", "none", "--image-size", "32"]
    args = build_parser().parse_args(["--data-dir", str(missing), *tiny, "--output-dir", str(output), *flags])
    with contextlib.ExitStack() as held:
        code = finetune_run.run(args, held)
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2
    assert line.startswith("python -m tfresnet.finetune: error: ")
    assert message.format(missing=missing) in line
    assert not output.exists()
