"""A resume proves it continues the same run: what `run.json` records, what a change says."""

import hashlib
import os
import shutil

import pytest
from conftest import exit_code, write_image_folder

from tfresnet import paths
from tfresnet.files import read_json, write_text
from tfresnet.finetune import main
from tfresnet.training.run_identity import weights_identity

RUN = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32", "--batch-size", "8"]
RUN += ["--seed", "0", "--head-epochs", "1", "--epochs", "1", "--augmentation", "none", "--no-check"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run on a 3-class folder (the command in this process); each test resumes it
    from a copy. A run resumed by the command as a separate process, after a real kill, is
    tested in tests/test_fine_tuning.py."""
    root = tmp_path_factory.mktemp("identity")
    images, output_dir = str(root / "images"), str(root / "run")
    write_image_folder(images, num_classes=3, images_per_class=4, size=32)
    assert exit_code(main, ["--data-dir", images, "--output-dir", output_dir, *RUN]) == 0
    return images, output_dir


def _copy(finished, tmp_path):
    images, output_dir = finished
    copies = str(tmp_path / "images"), str(tmp_path / "run")
    shutil.copytree(images, copies[0])
    shutil.copytree(output_dir, copies[1])
    return copies


@pytest.mark.slow
def test_the_same_command_resumes_a_finished_run(finished, tmp_path):
    images, output_dir = _copy(finished, tmp_path)
    recorded = read_json(os.path.join(output_dir, "run.json"))
    assert recorded["class_names"] == ["blue", "green", "red"] and recorded["image_size"] == 32
    assert exit_code(main, ["--data-dir", images, "--output-dir", output_dir, *RUN, "--resume"]) == 0
    assert read_json(os.path.join(output_dir, "run.json")) == recorded


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, named",
    [
        (["--image-size", "48"], "image_size 32, now 48"),
        (["--backbone", "resnet50"], "backbone 'resnet-test', now 'resnet50'"),
        (["--head-units", "8"], "head_units none, now 8"),
        (["--ema"], "ema off, now on"),
        (
            "rename",
            "now ['blue', 'green', 'rouge'] (gone: ['red'], new: ['rouge'])",
        ),
    ],
)
def test_a_resume_with_another_setting_is_bad_input_naming_it(finished, tmp_path, change, named, capfd):
    """What the one line names, in this process (the command as a separate process, its one line
    and nothing else on a plain terminal, is tested in tests/test_finetune.py)."""
    images, output_dir = _copy(finished, tmp_path)
    before = sorted(os.listdir(output_dir))
    if change == "rename":
        os.rename(os.path.join(images, "red"), os.path.join(images, "rouge"))
        change = []
    code = exit_code(main, ["--data-dir", images, "--output-dir", output_dir, *RUN, *change, "--resume"])
    stderr = capfd.readouterr().err
    assert code == 2, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("python -m tfresnet.finetune: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert named in lines[0] and "--resume" in lines[0] and "--output-dir" in lines[0]
    assert sorted(os.listdir(output_dir)) == before


def test_a_weights_file_on_a_store_is_known_by_its_bytes(tmp_path, ram_dir):
    local = tmp_path / "mine.weights.h5"
    local.write_bytes(b"first")
    path = paths.join(ram_dir, "mine.weights.h5")
    paths.copy_file(str(local), path)
    assert weights_identity(path) == {"file": path, "sha256": weights_identity(str(local))["sha256"]}
    write_text(path, "other")  # the same size; ram:// keeps no modification time
    assert weights_identity(path)["sha256"] == hashlib.sha256(b"other").hexdigest()
    assert weights_identity("imagenet") == "imagenet"
