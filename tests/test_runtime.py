"""Tests of tfresnet.export.runtime: a missing runtime package is named with the extra that installs it."""

import pytest

from tfresnet.export import runtime as runtime_module
from tfresnet.export.formats import check_export_request


def test_a_missing_runtime_names_the_extra_to_install(monkeypatch):
    assert check_export_request(["saved_model", "litert", "litert"], "int8") == ["saved_model", "litert"]
    monkeypatch.setitem(
        runtime_module.RUNTIME_PACKAGES, "litert", ("no_such_litert", "pip install 'tfresnet[litert]'")
    )
    with pytest.raises(
        ImportError, match=r"Running litert models needs no_such_litert: pip install 'tfresnet\[litert\]'"
    ):
        check_export_request(["litert"])


def test_a_runtime_reads_a_multi_label_models_thresholds_from_its_settings():
    runtime = runtime_module.Runtime("tags.onnx", ["sea", "sky", "sun"], 32, 3)
    assert not runtime.multi_label and runtime.thresholds is None
    runtime._use_settings({"crop_fraction": 0.9, "multi_label": True, "thresholds": [0.25, 0.5, 0.75]})
    assert runtime.multi_label and runtime.thresholds == [0.25, 0.5, 0.75] and runtime.crop_fraction == 0.9
    runtime._use_settings({"multi_label": True})
    assert runtime.thresholds == [0.5, 0.5, 0.5] and runtime.crop_fraction == 0.875
    runtime._use_settings({})  # an export from before multi-label models
    assert not runtime.multi_label
    with pytest.raises(ValueError, match=r"of 'tags.onnx' record bad thresholds: thresholds must be 3"):
        runtime._use_settings({"multi_label": True, "thresholds": [0.5, 0.5]})
