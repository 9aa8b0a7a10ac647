"""Tests of tfresnet.export.kinds: the one table of formats and quantizations that everything reads."""

import itertools

import pytest

from tfresnet.export import __main__ as command
from tfresnet.export import litert
from tfresnet.export import runtime as runtime_module
from tfresnet.export.kinds import FILE_FORMATS, QUANTIZATIONS


def test_the_commands_choices_are_the_librarys():
    """Both commands take their formats and quantizations from the one table the exporters
    and the runtimes read."""
    from tfresnet.cli.finetune_flags import build_parser as finetune_parser

    def export_flags(format, quantize):
        return ["models/1", "--format", format, "--quantize", quantize, "--output", "x"]

    for format, quantize in itertools.product(FILE_FORMATS, QUANTIZATIONS):
        assert command.build_parser().parse_args(export_flags(format, quantize)).quantize == quantize
        assert finetune_parser().parse_args(["--data-dir", "d", "--quantize", quantize]).quantize == quantize
    for flags in (export_flags("tflite", "none"), export_flags("onnx", "int4")):
        with pytest.raises(SystemExit):
            command.build_parser().parse_args(flags)
    assert list(FILE_FORMATS) == ["litert", "onnx"]
    assert runtime_module.SUFFIXES == {".tflite": "litert", ".onnx": "onnx"}
    with pytest.raises(ValueError, match="quantization must be one of"):
        litert.export_litert("unused", "unused.tflite", quantization="int4")
