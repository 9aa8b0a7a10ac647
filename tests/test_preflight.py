"""Tests of tfresnet.cli.preflight: a run's backbone and folders checked before any training."""

import os
import re

import pytest

from tfresnet.cli import preflight


@pytest.mark.parametrize(
    "model, message",
    [
        ({"backbone": "resnet18"}, r"Unknown backbone\..* Received: backbone='resnet18'"),
        ({"image_size": 16}, r"--image-size must be at least 32 for a ResNet50\. Received: --image-size 16"),
        ({"freeze_until": 999}, r"--freeze-until 999: until=999 is out of range"),
    ],
    ids=["backbone", "image-size", "freeze-until"],
)
def test_a_bad_backbone_image_size_or_freeze_is_refused_naming_it(model, message):
    arguments = {"backbone": "resnet50", "weights": None, "image_size": 224, "freeze_until": 0, **model}
    with pytest.raises(ValueError, match=message):
        preflight.check_backbone(**arguments)


def test_only_what_the_backbone_table_cannot_answer_needs_a_build():
    table = {"backbone": "resnet50", "image_size": 224}
    assert preflight.check_backbone(**table, weights=None, freeze_until="conv5") is False
    assert preflight.check_backbone(**table, weights="imagenet", freeze_until=0) is False
    assert preflight.check_backbone(**table, weights=None, freeze_until="conv4_block2") is True  # not a stage
    assert preflight.check_backbone(**table, weights="/weights/mine.h5", freeze_until=0) is True  # must load
    hub = {"backbone": "hub:/models/resnet", "weights": None, "image_size": 224, "freeze_until": 0}
    assert preflight.check_backbone(**hub) is True  # a module to open


def test_an_unwritable_folder_is_named_and_the_folders_made_for_the_run_are_removed(tmp_path):
    (tmp_path / "a_file").write_text("")
    output, export = tmp_path / "new" / "out", tmp_path / "a_file" / "m"
    with pytest.raises(OSError, match=re.escape(f"--export-dir {str(export)!r} cannot be written")):
        preflight.check_writable([("--output-dir", str(output)), ("--export-dir", str(export))])
    assert os.listdir(tmp_path) == ["a_file"]
    preflight.check_writable([("--output-dir", str(output))])
    assert os.listdir(output) == []  # written to, and left empty


def test_a_folder_on_a_store_is_created_and_left_empty(ram_dir):
    from tfresnet import paths

    output = paths.join(ram_dir, "runs", "flowers")
    preflight.check_writable([("--output-dir", output)])
    assert paths.isdir(output) and paths.listdir(output) == []
