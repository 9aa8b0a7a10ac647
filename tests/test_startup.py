"""Tests of tfresnet.startup: TensorFlow imported with its load-time lines kept, and the capture of
descriptor 2 the commands run in."""

import os
import subprocess
import sys

import pytest

from tfresnet import startup
from tfresnet.cli import console


def _python(*args: str, cwd=None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=environment, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def tool(tmp_path_factory) -> subprocess.CompletedProcess:
    """`python -m tool`, a program whose package imports tfresnet while `sys.argv[0]` is still
    "-m"; it prints the custom layer Keras found registered, then the lines tfresnet kept."""
    root = tmp_path_factory.mktemp("program")
    (root / "tool").mkdir()
    (root / "tool" / "__init__.py").write_text(
        "import tfresnet, keras\n"
        "REGISTERED = keras.saving.get_registered_object('tfresnet>ImageNormalization')\n"
    )
    main = "import sys, tfresnet\nfrom tool import REGISTERED\n"
    main += "print(REGISTERED.__name__)\nsys.stdout.write(tfresnet.startup.tensorflow_load_log())\n"
    (root / "tool" / "__main__.py").write_text(main)
    return _python("-m", "tool", cwd=root)


def test_import_tfresnet_keeps_the_lines_tensorflow_prints_while_it_loads(tool):
    plain = _python("-c", "import tensorflow")
    assert plain.returncode == tool.returncode == 0, tool.stderr[-2000:]
    assert tool.stderr == ""
    # The same lines, kept (their time stamps differ).
    assert len(tool.stdout.splitlines()[1:]) == len(plain.stderr.splitlines())


def test_a_program_run_with_dash_m_that_imports_tfresnet_gets_its_layers_registered(tool):
    assert tool.returncode == 0, tool.stderr[-2000:]
    assert tool.stdout.splitlines()[0] == "ImageNormalization"


def test_native_lines_are_captured_while_pythons_stderr_still_shows(capfd):
    with startup.native_stderr_captured() as captured:
        os.write(2, b"native line\n")
        print("python line", file=sys.stderr)
        assert captured() == "native line\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "python line\nafter\n"


def test_native_lines_are_written_out_before_a_failure_propagates(capfd):
    with pytest.raises(RuntimeError, match="broken"):
        with startup.native_stderr_captured():
            os.write(2, b"what went wrong natively\n")
            raise RuntimeError("broken")
    assert capfd.readouterr().err == "what went wrong natively\n"


def test_a_verbose_command_prints_the_kept_lines_first(monkeypatch, capsys):
    monkeypatch.setattr(startup, "_load_log", "I0000 port.cc] oneDNN custom operations are on.\n")
    with console.quiet_output(verbose=True):
        print("the command's line", file=sys.stderr)
    assert capsys.readouterr().err == "I0000 port.cc] oneDNN custom operations are on.\nthe command's line\n"


def test_a_quiet_command_drops_native_lines_and_keeps_its_own(capfd):
    with console.quiet_output(verbose=False):
        os.write(2, b"E0000 cuda_platform.cc] failed call to cuInit\n")
        print("python -m tfresnet.x: error: bad input", file=sys.stderr)
    assert capfd.readouterr().err == "python -m tfresnet.x: error: bad input\n"
