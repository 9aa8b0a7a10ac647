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
