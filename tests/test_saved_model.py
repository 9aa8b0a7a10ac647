"""The SavedModel export: what it serves, in a fresh process, and how it survives interruptions."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TRAINED_IMAGE_SIZE, assert_close_across_kernels, ram_files
from PIL import Image

import tfresnet
from tfresnet import export, paths
from tfresnet.data.transforms import CROP_FRACTION
from tfresnet.files import read_json

IMAGE_SIZE = TRAINED_IMAGE_SIZE
SERVE = """
import json, sys
import numpy as np, tensorflow as tf
for export_dir, files, output in zip(*[iter(sys.argv[1:])] * 3):
    served = tf.saved_model.load(export_dir)
    with open(files) as file:
        encoded = [open(path, "rb").read() for path in json.load(file)]
    outputs = served.signatures["serving_default"](image_bytes=tf.constant(encoded))
    outputs = {name: value.numpy() for name, value in outputs.items()}
    outputs["labels"] = outputs["labels"].astype(str)
    np.savez(output, **outputs)
"""


@pytest.fixture(scope="module")
def trained(trained, tmp_path_factory):
    """`(model, export_dir, held-out image files, class names)`: the session's tiny classifier
    trained on a learnable folder (conftest's `trained`), exported with top_k=2, and image files
    of the same classes that it never saw."""
    model, class_names, folders, _ = trained
    path = str(tmp_path_factory.mktemp("export") / "serving" / "1")
    export.export_saved_model(model, path, class_names=class_names, top_k=2)
    files = sorted(str(p) for p in Path(folders["held_out"]).rglob("*") if p.is_file())
    return model, path, files, class_names


@pytest.fixture
def encoded_images():
    rng = np.random.default_rng(1)
    encoded = []
    for index, size in enumerate([(40, 48), (32, 32), (64, 40)]):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "JPEG" if index != 1 else "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def _served_pixels(path, images):
    """The export at `path`, loaded afresh, on raw pixels: its probabilities."""
    served = tf.saved_model.load(path)
    return served.signatures["serve_images"](images=tf.constant(images))["probabilities"].numpy()


# === What it serves ===


@pytest.fixture(scope="module")
def served_in_a_fresh_process(trained, multi_label_export, tmp_path_factory):
    """What the exports of `trained` and `multi_label_export` serve for their image files, in one
    process that never built a model: `{"single_label": outputs, "multi_label": outputs}`."""
    root = tmp_path_factory.mktemp("served")
    arguments = []
    for name, path, files in [("single_label", *trained[1:3]), ("multi_label", *multi_label_export[1:])]:
        (root / f"{name}.json").write_text(json.dumps(files))
        arguments += [path, str(root / f"{name}.json"), str(root / f"{name}.npz")]
    completed = subprocess.run([sys.executable, "-c", SERVE, *arguments], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {name: np.load(root / f"{name}.npz") for name in ("single_label", "multi_label")}


def test_served_image_files_in_a_fresh_process_match_the_model_and_their_folders(
    trained, served_in_a_fresh_process
):
    model, _, files, class_names = trained
    served = served_in_a_fresh_process["single_label"]

    decoded = np.stack(
        [tfresnet.decode_for_eval(tf.constant(open(f, "rb").read()), IMAGE_SIZE).numpy() for f in files]
    )
    assert_close_across_kernels(served["probabilities"], model.predict(decoded, verbose=0))
    top_labels = served["labels"][:, 0]
    folders = np.array([os.path.basename(os.path.dirname(f)) for f in files])
    assert set(folders) == set(class_names)
    assert (top_labels == folders).mean() >= 0.8


def test_signatures_names_and_outputs(trained, encoded_images):
    model, path, _, class_names = trained
    served = tf.saved_model.load(path)
    assert {"serving_default", "serve_images"} <= set(served.signatures)
    by_bytes = served.signatures["serving_default"]
    assert list(by_bytes.structured_input_signature[1]) == ["image_bytes"]
    outputs = by_bytes(image_bytes=tf.constant(encoded_images))
    assert set(outputs) == {"probabilities", "classes", "labels", "scores"}
    assert outputs["probabilities"].shape == (3, 3)
    assert outputs["classes"].shape == (3, 2)
    expected_labels = np.array(class_names)[outputs["classes"].numpy()]
    assert (outputs["labels"].numpy().astype(str) == expected_labels).all()
    np.testing.assert_allclose(outputs["scores"][:, 0], outputs["probabilities"].numpy().max(axis=1))

    images = np.random.default_rng(0).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    by_pixels = served.signatures["serve_images"](images=tf.constant(images))
    assert_close_across_kernels(by_pixels["probabilities"], model.predict(images, verbose=0))
    with open(os.path.join(path, "labels.txt")) as file:
        assert file.read().split() == class_names
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        config = json.load(file)
    assert config["image_size"] == IMAGE_SIZE and config["class_names"] == class_names


# === Interruptions ===
# What is exported does not matter here: a small model exports in a second.


def _small_model(seed):
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(pooled))
    rng = np.random.default_rng(seed)
    dense.set_weights([rng.normal(0, 3, (3, 3)), rng.normal(0, 1, 3)])
    return model


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """`(model, export_dir)`: a small model's export, class names cat/dog/fox."""
    model = _small_model(0)
    path = str(tmp_path_factory.mktemp("small") / "1")
    export.export_saved_model(model, path, class_names=["cat", "dog", "fox"])
    return model, path


@pytest.fixture
def previous(small_export, tmp_path):
    """`(target, pixels, probabilities)`: a copy of `small_export` at `tmp_path/1`, and what it
    serves on `pixels` (the exported model's own probabilities)."""
    model, path = small_export
    target = str(tmp_path / "1")
    shutil.copytree(path, target)
    pixels = np.random.default_rng(3).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    return target, pixels, model.predict(pixels, verbose=0)


def test_an_export_interrupted_between_its_two_renames_keeps_the_previous_one(
    previous, tmp_path, monkeypatch
):
    target, pixels, before = previous
    aside = str(tmp_path / ".1.previous")
    rename, calls = os.rename, []

    def interrupted_rename(source, destination):
        if os.path.dirname(os.path.abspath(destination)) == str(tmp_path):
            calls.append((source, destination))
            if len(calls) == 2:  # the new export into place, after the previous one went aside
                raise KeyboardInterrupt
        rename(source, destination)

    monkeypatch.setattr(os, "rename", interrupted_rename)  # the renames of paths.replace_folder
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(_small_model(1), target, class_names=["x", "y", "z"])
    monkeypatch.undo()

    assert calls[0] == (target, aside) and calls[1][1] == target and calls[2] == (aside, target)
    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "labels.txt").read_text().split() == ["cat", "dog", "fox"]
    assert_close_across_kernels(_served_pixels(target, pixels), before)


def test_a_kill_between_the_renames_is_repaired_by_the_next_export_even_a_failed_one(
    previous, tmp_path, monkeypatch
):
    """A SIGKILL between the renames leaves the previous export aside and nothing at the path."""
    target, pixels, before = previous
    os.rename(target, str(tmp_path / ".1.previous"))

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(_small_model(1), target, class_names=["x", "y", "z"])

    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "labels.txt").read_text().split() == ["cat", "dog", "fox"]
    assert_close_across_kernels(_served_pixels(target, pixels), before)


def test_after_a_kill_the_next_export_takes_the_place_and_drops_the_leftover(previous, tmp_path):
    target, pixels, _ = previous
    os.rename(target, str(tmp_path / ".1.previous"))
    replacement = _small_model(1)
    export.export_saved_model(replacement, target, class_names=["x", "y", "z"])
    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "labels.txt").read_text().split() == ["x", "y", "z"]
    expected = replacement.predict(pixels, verbose=0)
    assert_close_across_kernels(_served_pixels(target, pixels), expected)


def test_export_replaces_an_existing_one(previous, tmp_path):
    target, pixels, before = previous
    replacement = _small_model(1)
    export.export_saved_model(replacement, target, class_names=["x", "y", "z"])
    assert (tmp_path / "1" / "labels.txt").read_text().split() == ["x", "y", "z"]
    assert os.listdir(tmp_path) == ["1"]
    served = _served_pixels(target, pixels)
    assert_close_across_kernels(served, replacement.predict(pixels, verbose=0))
    assert np.abs(served - before).max() > 0.01  # the replacement serves, not the previous model


# === On a store (TensorFlow's in-memory file system, through tf.io.gfile) ===


def test_an_export_on_a_store_serves_what_the_local_one_serves_and_the_next_replaces_it(
    trained, small_export, ram_dir, encoded_images
):
    model, local, _, class_names = trained
    target = paths.join(ram_dir, "serving", "1")
    assert export.export_saved_model(model, target, class_names=class_names, top_k=2) == target
    assert ram_files(target) == ram_files(local)
    assert read_json(paths.join(target, "tfresnet_config.json")) == read_json(
        os.path.join(local, "tfresnet_config.json")
    )
    request = {"image_bytes": tf.constant(encoded_images)}
    served = tf.saved_model.load(target).signatures["serving_default"](**request)
    expected = tf.saved_model.load(local).signatures["serving_default"](**request)
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-6)
    assert (served["labels"].numpy() == expected["labels"].numpy()).all()

    replacement, replacement_dir = small_export
    assert export.export_saved_model(replacement, target, class_names=["cat", "dog", "fox"]) == target
    assert paths.listdir(paths.join(ram_dir, "serving")) == ["1"]  # no staging folder left beside it
    assert ram_files(target) == ram_files(replacement_dir)  # none of the previous export's files
    with paths.open_file(paths.join(target, "labels.txt")) as file:
        assert file.read().split() == ["cat", "dog", "fox"]
    pixels = np.random.default_rng(3).uniform(0, 255, (4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    assert_close_across_kernels(_served_pixels(target, pixels), replacement.predict(pixels, verbose=0))


def test_class_names_must_match_the_model(tmp_path):
    with pytest.raises(ValueError, match="class_names has 2 names but the model predicts 3"):
        export.export_saved_model(_small_model(0), str(tmp_path / "1"), class_names=["a", "b"])
    assert not os.path.exists(tmp_path / "1")


def test_served_image_bomb_fails_its_request_before_decoding(small_export, png_bomb):
    served = tf.saved_model.load(small_export[1])
    with open(png_bomb, "rb") as file:
        bomb = file.read()
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit of.*400000000"):
        served.signatures["serving_default"](image_bytes=tf.constant([bomb]))


def test_the_served_cap_is_an_argument_and_is_recorded(tmp_path):
    path = export.export_saved_model(
        _small_model(0), str(tmp_path / "1"), class_names=["cat", "dog", "fox"], max_image_pixels=899
    )
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        assert json.load(file)["max_image_pixels"] == 899
    served = tf.saved_model.load(path)
    image = tf.image.encode_png(tf.zeros((30, 30, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image over the limit of.*899.*900"):
        served.signatures["serving_default"](image_bytes=tf.stack([image]))
    small = tf.image.encode_png(tf.zeros((29, 31, 3), tf.uint8))
    served.signatures["serving_default"](image_bytes=tf.stack([small]))


def test_the_served_crop_is_the_runs_and_the_predictor_reads_it(tmp_path):
    """`serving_default` crops at the `crop_fraction` that `fine_tune` records in its config
    (here half the shorter side, where the default keeps 87.5%), says so in
    `tfresnet_config.json`, and `load_predictor` decodes with it, as its override does."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    pixels[16:48, 32:64] = 255 - pixels[16:48, 32:64]  # the centre differs from the rest
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    encoded = buffer.getvalue()
    model = _small_model(0)
    path = export.export_saved_model(
        model, str(tmp_path / "1"), class_names=["cat", "dog", "fox"], config={"crop_fraction": 0.5}
    )
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        assert json.load(file)["crop_fraction"] == 0.5

    served = tf.saved_model.load(path).signatures["serving_default"](image_bytes=tf.constant([encoded]))
    centre = tfresnet.decode_for_eval(encoded, IMAGE_SIZE, crop_fraction=0.5).numpy()[None]
    default = tfresnet.decode_for_eval(encoded, IMAGE_SIZE).numpy()[None]
    assert not np.allclose(model.predict(centre, verbose=0), model.predict(default, verbose=0), atol=1e-3)
    assert_close_across_kernels(served["probabilities"].numpy(), model.predict(centre, verbose=0))

    rows = tfresnet.load_predictor(path).predict([encoded], top_k=3)
    expected = dict(zip(served["labels"].numpy()[0].astype(str), served["scores"].numpy()[0]))
    assert rows[0]["label"] == max(expected, key=expected.get)
    assert rows[0]["score"] == pytest.approx(expected[rows[0]["label"]], rel=1e-4)
    overridden = tfresnet.load_predictor(path, crop_fraction=CROP_FRACTION).predict([encoded], top_k=3)[0]
    assert overridden["score"] == pytest.approx(float(model.predict(default, verbose=0).max()), rel=1e-4)


# === Multi-label: the thresholds in the graph ===

MULTI_LABEL_THRESHOLDS = [0.3, 0.6, 0.9]


@pytest.fixture(scope="module")
def multi_label_export(multi_label_model, tmp_path_factory):
    """`(model, export_dir, PNG files)`: the multi-label classifier exported with the thresholds
    of its run's config, and its images as PNG files."""
    model, data = multi_label_model
    root = tmp_path_factory.mktemp("multi_label_export")
    config = {"multi_label": True, "thresholds": MULTI_LABEL_THRESHOLDS, "seed": 0}
    path = export.export_saved_model(
        model, str(root / "serving" / "1"), class_names=data.class_names, top_k=2, config=config
    )
    images = np.concatenate([batch for batch, _ in data.train_evaluation.as_numpy_iterator()])
    files = []
    for index, image in enumerate(images[:16]):
        files.append(str(root / f"{index}.png"))
        Image.fromarray(image.astype(np.uint8)).save(files[-1])
    return model, path, files


def test_multi_label_served_predicted_in_a_fresh_process_are_the_probabilities_over_the_stored_thresholds(
    multi_label_export, served_in_a_fresh_process
):
    model, path, files = multi_label_export
    served = served_in_a_fresh_process["multi_label"]
    assert set(served.files) == {"probabilities", "predicted", "classes", "labels", "scores"}

    with open(os.path.join(path, "tfresnet_config.json")) as file:
        config = json.load(file)
    assert config["multi_label"] is True and config["thresholds"] == MULTI_LABEL_THRESHOLDS
    assert config["class_names"] == ["blue", "green", "red"] and config["seed"] == 0
    probabilities, predicted = served["probabilities"], served["predicted"]
    assert predicted.dtype == np.int32 and predicted.shape == (len(files), 3)
    np.testing.assert_array_equal(
        predicted, (probabilities >= np.float32(MULTI_LABEL_THRESHOLDS)).astype(int)
    )
    label_counts = predicted.sum(axis=1)
    assert label_counts.max() >= 2 and label_counts.min() <= 1  # images with several labels, and fewer

    decoded = np.stack([tfresnet.decode_for_eval(open(f, "rb").read(), 32).numpy() for f in files])
    assert_close_across_kernels(probabilities, model.predict(decoded, verbose=0))
    assert served["labels"].shape == (len(files), 2)  # the top-k, as a single-label export's
    np.testing.assert_array_equal(served["labels"], np.array(config["class_names"])[served["classes"]])
    np.testing.assert_allclose(served["scores"][:, 0], probabilities.max(axis=1))


def test_multi_label_serve_images_takes_the_thresholds_argument_over_the_config(multi_label_model, tmp_path):
    model, data = multi_label_model
    images = next(data.validation.as_numpy_iterator())[0]
    config = {"thresholds": MULTI_LABEL_THRESHOLDS}
    path = export.export_saved_model(
        model, str(tmp_path / "1"), class_names=data.class_names, config=config, thresholds=[0.0, 1.0, 0.5]
    )
    outputs = tf.saved_model.load(path).signatures["serve_images"](images=tf.constant(images))
    probabilities, predicted = outputs["probabilities"].numpy(), outputs["predicted"].numpy()
    assert (probabilities[:, 0] < 0.5).any()  # a threshold of 0 predicts the label all the same
    np.testing.assert_array_equal(predicted[:, 0], 1)
    np.testing.assert_array_equal(predicted[:, 1], (probabilities[:, 1] >= 1.0).astype(int))
    np.testing.assert_array_equal(predicted[:, 2], (probabilities[:, 2] >= 0.5).astype(int))
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        assert json.load(file)["thresholds"] == [0.0, 1.0, 0.5]

    default = export.export_saved_model(model, str(tmp_path / "2"), class_names=data.class_names)
    with open(os.path.join(default, "tfresnet_config.json")) as file:
        assert json.load(file)["thresholds"] == [0.5, 0.5, 0.5]
    outputs = tf.saved_model.load(default).signatures["serve_images"](images=tf.constant(images))
    expected = (outputs["probabilities"].numpy() >= 0.5).astype(int)
    np.testing.assert_array_equal(outputs["predicted"].numpy(), expected)


def test_multi_label_thresholds_are_checked_before_anything_is_written(multi_label_model, tmp_path):
    model, data = multi_label_model
    with pytest.raises(ValueError, match=r"thresholds must be 3 numbers in \[0, 1\]"):
        export.export_saved_model(
            model, str(tmp_path / "1"), class_names=data.class_names, thresholds=[0.5, 2, 0.5]
        )
    with pytest.raises(ValueError, match=r"thresholds must be 3 numbers in \[0, 1\]"):
        export.export_saved_model(
            model, str(tmp_path / "1"), class_names=data.class_names, config={"thresholds": [0.5]}
        )
    assert os.listdir(tmp_path) == []


def test_a_single_label_export_says_so_and_refuses_thresholds(small_export, tmp_path):
    _, path = small_export
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        config = json.load(file)
    assert config["multi_label"] is False and config["thresholds"] is None
    served = tf.saved_model.load(path).signatures["serve_images"]
    assert "predicted" not in served.structured_outputs
    with pytest.raises(ValueError, match="thresholds apply to a multi-label classifier") as raised:
        export.export_saved_model(
            _small_model(0), str(tmp_path / "1"), class_names=["cat", "dog", "fox"], thresholds=[0.5] * 3
        )
    assert "\n" not in str(raised.value)
    assert os.listdir(tmp_path) == []
