"""Tests of tfresnet.lazy: a package's public names imported from their modules on first use."""

import json
import sys
import types

import pytest

from tfresnet import lazy


def test_a_name_is_imported_on_first_use_and_kept_in_the_package(monkeypatch):
    package = types.ModuleType("lazy_package")
    monkeypatch.setitem(sys.modules, "lazy_package", package)
    getattr_, dir_ = lazy.attach("lazy_package", {"dumps": "json"})
    assert "dumps" not in vars(package) and "dumps" in dir_()
    assert getattr_("dumps") is json.dumps
    assert vars(package)["dumps"] is json.dumps  # later look-ups find it in the package
    with pytest.raises(AttributeError, match="module 'lazy_package' has no attribute 'loads'"):
        getattr_("loads")
