"""The examples in the package's docstrings: those written with `>>>` run here and give what
they show; the others are plain code blocks (they need files, weights or a trained model)."""

import doctest
import importlib
import pkgutil

import pytest

import tfresnet

MODULES = [
    "tfresnet",
    *sorted(
        info.name
        for info in pkgutil.walk_packages(tfresnet.__path__, "tfresnet.")
        if not info.name.endswith("__main__")
    ),
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_give_what_they_show(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (see stdout)"
