"""Tests of tfresnet.export.predictor: the same rows from each format, from files or encoded bytes."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import EXPORTED_CLASS_NAMES as CLASS_NAMES
from conftest import EXPORTED_IMAGE_SIZE as IMAGE_SIZE
from conftest import EXPORTED_KINDS as KINDS
from conftest import assert_close_across_kernels
from PIL import Image

import tfresnet
from tfresnet.export import export_saved_model
from tfresnet.export import predictor as predictor_module
from tfresnet.export.formats import export_formats
from tfresnet.paths import copy_file, join, makedirs, read_bytes

# === The three formats and the evaluation transform ===


def test_every_format_gives_the_keras_models_probabilities_on_the_evaluation_transform(exported):
    paths, model, images, _ = exported
    files = [path for path in predictor_module.list_images([images]) if os.path.basename(path)[0].isdigit()]
    assert len(files) == 12
    decoded = np.stack(
        [tfresnet.decode_for_eval(tf.io.read_file(path), IMAGE_SIZE).numpy() for path in files]
    )
    expected = model.predict(decoded, verbose=0)
    for kind in KINDS:
        rows = predictor_module.load_predictor(paths[kind]).predict(files, top_k=3)
        scores = np.array([[row["score"], row["score_2"], row["score_3"]] for row in rows])
        assert_close_across_kernels(scores, -np.sort(-expected, axis=1))
        assert [row["label"] for row in rows] == [CLASS_NAMES[i] for i in expected.argmax(1)]


def test_encoded_bytes_give_the_rows_of_their_files(exported):
    paths, _, images, bad = exported
    files = [
        os.path.join(images, "green", name) for name in sorted(os.listdir(os.path.join(images, "green")))
    ]
    predictor = predictor_module.load_predictor(paths["saved_model"], batch_size=2)
    by_path = predictor.predict(files + [bad[2]], top_k=2)
    by_bytes = predictor.predict([open(path, "rb").read() for path in files + [bad[2]]], top_k=2)
    assert all(row["path"] is None for row in by_bytes)
    for row, wanted in zip(by_bytes[:-1], by_path[:-1]):
        assert (row["label"], row["label_2"], row["error"]) == (wanted["label"], wanted["label_2"], None)
        assert row["score"] == pytest.approx(wanted["score"], abs=1e-6)
    assert by_bytes[-1]["label"] is None and by_bytes[-1]["error"].startswith("Unknown image file format")
    assert predictor.predict(open(files[0], "rb").read())[0]["label"] == "green"


# === Bad input ===


def test_predictor_checks_top_k(exported):
    predictor = predictor_module.load_predictor(exported[0]["litert"])
    with pytest.raises(
        ValueError, match="top_k must be an integer from 1 to 3, the model.s classes. Received: top_k=0"
    ):
        predictor.predict(exported[2], top_k=0)


def test_load_predictor_is_public():
    assert tfresnet.load_predictor is predictor_module.load_predictor


def test_predictors_of_one_setting_share_one_traced_transform(exported):
    """A new `tf.function` each predictor made costs a trace and its first run (about 1 s): the
    decoders of one setting in a process call one function, traced once, from their threads."""
    from tfresnet.data import transforms

    paths, _, images, _ = exported
    files = predictor_module.list_images([images])
    assert len(files) > predictor_module.DECODE_THREADS
    crop_fraction = 0.8125  # a setting no other test of this process decodes at
    first, second = (predictor_module.ImageDecoder(IMAGE_SIZE, crop_fraction=crop_fraction) for _ in range(2))
    decoded = first.decode(files)
    assert first._decode is second._decode
    assert first._decode.experimental_get_tracing_count() == 1
    for image, again, path in zip(decoded, second.decode(files), files):
        if isinstance(image, str):
            assert again == image
        else:
            expected = transforms.decode_for_eval(
                tf.io.read_file(path), IMAGE_SIZE, crop_fraction=crop_fraction
            )
            np.testing.assert_array_equal(image, expected.numpy())
            np.testing.assert_array_equal(again, image)
    predictor = predictor_module.load_predictor(paths["litert"], crop_fraction=crop_fraction)
    assert predictor._decoder._decode is first._decode


# === Exports and images on a store (TensorFlow's in-memory file system) ===


def test_exports_written_to_a_store_give_the_rows_of_the_local_ones(exported, ram_dir):
    """Each format written to TensorFlow's in-memory file system and loaded from there."""
    local, model, images, _ = exported
    stored = {"saved_model": export_saved_model(model, join(ram_dir, "1"), class_names=CLASS_NAMES)}
    figures = export_formats(model, ram_dir, ["saved_model", "litert", "onnx"], class_names=CLASS_NAMES)
    stored.update({kind: entry["path"] for kind, entry in figures.items()})
    assert stored["litert"] == join(ram_dir, "model.tflite")
    assert figures["onnx"]["size_bytes"] == len(read_bytes(stored["onnx"]))

    files = predictor_module.list_images([images])
    makedirs(join(ram_dir, "images"))
    stored_files = [join(ram_dir, "images", f"{index}.jpg") for index in range(3)]
    for path, stored_file in zip(files, stored_files):
        copy_file(path, stored_file)
    missing = join(ram_dir, "images", "missing.jpg")
    for kind in KINDS:
        predictor = predictor_module.load_predictor(stored[kind])
        assert predictor.class_names == CLASS_NAMES, kind
        rows = predictor.predict(files, top_k=3)
        expected = predictor_module.load_predictor(local[kind]).predict(files, top_k=3)
        assert [(row["label"], row["error"]) for row in rows] == [
            (row["label"], row["error"]) for row in expected
        ], kind
        good = [index for index, row in enumerate(expected) if row["error"] is None]
        assert len(good) == 12
        scores = _scores([rows[i] for i in good])
        np.testing.assert_allclose(scores, _scores([expected[i] for i in good]), atol=1e-6, err_msg=kind)
        from_store = predictor.predict([*stored_files, missing], top_k=3)
        assert [row["path"] for row in from_store] == [*stored_files, missing]
        assert [row["label"] for row in from_store[:3]] == [row["label"] for row in rows[:3]]
        np.testing.assert_allclose(_scores(from_store[:3]), scores[:3], atol=1e-6, err_msg=kind)
        assert from_store[3]["label"] is None and from_store[3]["error"].startswith("unreadable: ")
    with pytest.raises(FileNotFoundError, match="Model not found"):
        predictor_module.load_predictor(join(ram_dir, "absent.onnx"))


def _scores(rows: list[dict]) -> list[list[float]]:
    return [[row["score"], row["score_2"], row["score_3"]] for row in rows]


# === Multi-label: the labels over their thresholds ===

THRESHOLDS = [0.7, 0.3, 0.4]  # the probabilities of 0.3 to 0.5 some images get count here


@pytest.fixture(scope="module")
def multi_label_exports(multi_label_model, tmp_path_factory):
    """`(model, {kind: path}, PNG files + one broken file)`: the multi-label classifier as a
    SavedModel (thresholds from its config), a LiteRT file converted from that SavedModel, and
    an ONNX file from the Keras model (thresholds passed)."""
    from tfresnet.export import export_litert, export_onnx, export_saved_model

    model, data = multi_label_model
    root = tmp_path_factory.mktemp("multi_label_predictor")
    saved = export_saved_model(
        model, str(root / "saved" / "1"), class_names=data.class_names, config={"thresholds": THRESHOLDS}
    )
    paths = {
        "saved_model": saved,
        "litert": export_litert(saved, str(root / "tags.tflite")),
        "onnx": export_onnx(
            model, str(root / "tags.onnx"), class_names=data.class_names, thresholds=THRESHOLDS
        ),
    }
    images = np.concatenate([batch for batch, _ in data.train_evaluation.as_numpy_iterator()])[:16]
    files = []
    for index, image in enumerate(images):
        files.append(str(root / "images" / f"{index:02d}.png"))
        os.makedirs(os.path.dirname(files[-1]), exist_ok=True)
        Image.fromarray(image.astype(np.uint8)).save(files[-1])
    files.append(str(root / "images" / "broken.png"))
    with open(files[-1], "wb") as file:
        file.write(b"not an image")
    return model, paths, files


def test_every_format_gives_the_same_label_sets_over_the_thresholds(multi_label_exports):
    model, paths, files = multi_label_exports
    decoded = np.stack([tfresnet.decode_for_eval(tf.io.read_file(path), 32).numpy() for path in files[:-1]])
    probabilities = model.predict(decoded, verbose=0)
    expected = [[name for name, p, t in zip(CLASS_NAMES, row, THRESHOLDS) if p >= t] for row in probabilities]
    assert max(map(len, expected)) >= 2 and min(map(len, expected)) <= 1
    assert expected != [[name for name, p in zip(CLASS_NAMES, row) if p >= 0.5] for row in probabilities]
    for kind, path in paths.items():
        predictor = predictor_module.load_predictor(path)
        assert predictor.multi_label and predictor.thresholds == THRESHOLDS, kind
        assert predictor.columns(3) == ["path", "labels", "scores", "error"]
        rows = predictor.predict(files, top_k=3)  # top_k does not cut a multi-label row
        assert [list(row) for row in rows] == [["path", "labels", "scores", "error"]] * len(files)
        assert [row["labels"] for row in rows[:-1]] == expected, kind
        for row, row_probabilities in zip(rows, probabilities):
            wanted = [row_probabilities[CLASS_NAMES.index(name)] for name in row["labels"]]
            np.testing.assert_allclose(row["scores"], wanted, atol=1e-4)
            assert row["error"] is None
        assert rows[-1]["labels"] is None and rows[-1]["scores"] is None
        assert rows[-1]["error"] == "not a JPEG, PNG, GIF or BMP image"


def test_multi_label_rows_of_bytes_equal_those_of_files(multi_label_exports):
    _, paths, files = multi_label_exports
    predictor = predictor_module.load_predictor(paths["litert"], batch_size=5)
    by_path = predictor.predict(files[:-1])
    by_bytes = predictor.predict([open(path, "rb").read() for path in files[:-1]])
    assert [row["labels"] for row in by_bytes] == [row["labels"] for row in by_path]
    assert all(row["path"] is None for row in by_bytes)
    assert predictor.predict(files[0], top_k=99)[0]["labels"] == by_path[0]["labels"]  # top_k ignored
