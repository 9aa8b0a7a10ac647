"""Public names that import their module on first use (PEP 562), for the packages whose
modules are costly to import and often not needed (`tfresnet`, `tfresnet.data`,
`tfresnet.export`: TFDS, TF Hub, the converters load only when a name asks for them).

Example:
>>> __getattr__, __dir__ = attach("tfresnet.data", {"from_folder": "tfresnet.data.folder"})
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Callable


def attach(
    package: str, exports: dict[str, str], *, submodules: bool = False
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose names `exports` maps to their modules.

    A name is imported from its module on first use and kept in the package. With
    `submodules`, any other public name that is a submodule of `package` is imported too.
    """

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
        elif submodules and not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
