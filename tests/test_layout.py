"""The tests mirror the package: every module of tfresnet has a test file of its name."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The one module whose test file has another name: the command `python -m tfresnet.export`.
TEST_NAMES = {"tfresnet/export/__main__.py": "export_command"}


def test_every_module_has_a_test_file_of_its_name():
    modules = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tfresnet").rglob("*.py")
        if path.name != "__init__.py"
    )
    missing = [
        f"{module} (tests/test_{name}.py)"
        for module in modules
        for name in [TEST_NAMES.get(module, pathlib.PurePosixPath(module).stem)]
        if not (ROOT / "tests" / f"test_{name}.py").is_file()
    ]
    assert missing == [], "modules without a test file of their name: " + ", ".join(missing)
