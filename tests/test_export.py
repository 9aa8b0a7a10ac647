import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfresnet
from tfresnet import export

CLASS_NAMES = ["cat", "dog", "fox"]


@pytest.fixture
def model():
    return tfresnet.build_classifier(3, weights=None, image_size=32, head_units=8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`(model, export_dir)`: one export (top_k=2) shared by the tests that only read it."""
    keras_model = tfresnet.build_classifier(3, weights=None, image_size=32, head_units=8)
    # Trained-looking weights, so that comparisons are not between near-constants.
    for variable in keras_model.get_layer("predictions").weights:
        variable.assign(np.random.default_rng(2).normal(0, 0.5, variable.shape))
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_saved_model(keras_model, path, class_names=CLASS_NAMES, top_k=2)
    return keras_model, path


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


def test_signatures_names_and_outputs(exported, encoded_images):
    model, path = exported
    served = tf.saved_model.load(path)
    assert {"serving_default", "serve_images"} <= set(served.signatures)
    by_bytes = served.signatures["serving_default"]
    assert list(by_bytes.structured_input_signature[1]) == ["image_bytes"]
    outputs = by_bytes(image_bytes=tf.constant(encoded_images))
    assert set(outputs) == {"probabilities", "classes", "labels", "scores"}
    assert outputs["probabilities"].shape == (3, 3)
    assert outputs["classes"].shape == (3, 2)
    expected_labels = np.array(CLASS_NAMES)[outputs["classes"].numpy()]
    assert (outputs["labels"].numpy().astype(str) == expected_labels).all()
    np.testing.assert_allclose(outputs["scores"][:, 0], outputs["probabilities"].numpy().max(axis=1))

    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    by_tensor = served.signatures["serve_images"](images=tf.constant(images))
    np.testing.assert_allclose(by_tensor["probabilities"], model.predict(images, verbose=0), atol=1e-5)
    with open(os.path.join(path, "labels.txt")) as file:
        assert file.read().split() == CLASS_NAMES
    with open(os.path.join(path, "tfresnet_config.json")) as file:
        config = json.load(file)
    assert config["image_size"] == 32 and config["class_names"] == CLASS_NAMES


def test_bytes_predictions_in_a_fresh_process_equal_the_model(exported, encoded_images, tmp_path):
    model, path = exported
    for index, encoded in enumerate(encoded_images):
        (tmp_path / f"{index}.bin").write_bytes(encoded)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "served = tf.saved_model.load(sys.argv[1])\n"
        "files = [open(f'{sys.argv[2]}/{i}.bin', 'rb').read() for i in range(3)]\n"
        "out = served.signatures['serving_default'](image_bytes=tf.constant(files))\n"
        "np.save(sys.argv[3], out['probabilities'].numpy())\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, path, str(tmp_path), str(tmp_path / "served.npy")],
        check=True,
        capture_output=True,
    )
    decoded = np.stack([tfresnet.decode_for_eval(tf.constant(e), 32).numpy() for e in encoded_images])
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), model.predict(decoded, verbose=0), atol=1e-5)


def test_interrupted_export_keeps_the_previous_one(exported, tmp_path, monkeypatch):
    model, path = exported
    target = str(tmp_path / "1")
    shutil.copytree(path, target)
    images = np.zeros((1, 32, 32, 3), "float32")
    before = tf.saved_model.load(target).signatures["serve_images"](images=images)["probabilities"]

    def interrupted(obj, path, *args, **kwargs):
        os.makedirs(os.path.join(path, "variables"))
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(model, target, class_names=["a", "b", "c"])

    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "labels.txt").read_text().split() == CLASS_NAMES
    after = tf.saved_model.load(target).signatures["serve_images"](images=images)["probabilities"]
    np.testing.assert_array_equal(before, after)


def test_export_replaces_an_existing_one(exported, tmp_path):
    model, path = exported
    target = str(tmp_path / "1")
    shutil.copytree(path, target)
    export.export_saved_model(model, target, class_names=["x", "y", "z"])
    assert (tmp_path / "1" / "labels.txt").read_text().split() == ["x", "y", "z"]
    assert os.listdir(tmp_path) == ["1"]


def test_class_names_must_match_the_model(model, tmp_path):
    with pytest.raises(ValueError, match="class_names has 2 names but the model predicts 3"):
        export.export_saved_model(model, str(tmp_path / "1"), class_names=["a", "b"])


def test_classification_report_counts():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[predicted]
    report = export.classification_report(labels, probabilities, CLASS_NAMES)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["per_class"]["cat"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "support": 3}
    assert report["per_class"]["dog"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["fox"]["precision"] == pytest.approx(0.5)
    assert {"true": "cat", "predicted": "dog", "count": 1} in report["most_confused"]


def test_write_report_files(model, tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.array([0, 1, 2, 0, 1, 2]))).batch(4)
    history = {
        "loss": [1.0, 0.5, 0.4],
        "val_loss": [1.1, 0.7, 0.6],
        "accuracy": [0.3, 0.6, 0.7],
        "val_accuracy": [0.3, 0.5, 0.6],
        "phase": [1, 2, 2],
    }
    report = export.write_report(model, dataset, CLASS_NAMES, str(tmp_path), history=history)
    assert report["num_images"] == 6
    assert (
        json.loads((tmp_path / "report.json").read_text())["confusion_matrix"] == report["confusion_matrix"]
    )
    for name in ("confusion_matrix.png", "training_curves.png", "top_losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
