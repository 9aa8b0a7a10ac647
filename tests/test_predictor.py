"""Tests of tfresnet.export.predictor: the same rows from each format, from files or encoded bytes."""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import EXPORTED_CLASS_NAMES as CLASS_NAMES
from conftest import EXPORTED_IMAGE_SIZE as IMAGE_SIZE
from conftest import EXPORTED_KINDS as KINDS
from conftest import assert_close_across_kernels

import tfresnet
from tfresnet.export import predictor as predictor_module

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
