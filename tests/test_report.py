"""The evaluation report: counts, the top-loss images paired with their own predictions, plots."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfresnet import report

CLASS_NAMES = ["cat", "dog", "fox"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Image i of the set: label LABELS[i]; the "model" below is wrong on the images in WRONG.
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
WRONG = {1, 3, 8, 10}
SIZE = 8


def _images() -> np.ndarray:
    """Each image says what it is: channel 0 its label (x100), 1 whether the model errs on it
    (255), 2 its index (x10)."""
    images = np.zeros((len(LABELS), SIZE, SIZE, 3), "float32")
    for i, label in enumerate(LABELS):
        images[i, ..., 0] = 100 * label
        images[i, ..., 1] = 255 * (i in WRONG)
        images[i, ..., 2] = 10 * i
    return images


class _ReadsThePixels(keras.layers.Layer):
    """Predicts the label written in channel 0 (0.9), or the next class on images marked in
    channel 1; less sure of later images, so that every loss differs."""

    def call(self, images):
        label = keras.ops.round(keras.ops.mean(images[..., 0], axis=(1, 2)) / 100)
        wrong = keras.ops.cast(keras.ops.mean(images[..., 1], axis=(1, 2)) > 127, "float32")
        index = keras.ops.mean(images[..., 2], axis=(1, 2)) / 10
        guess = keras.ops.cast(keras.ops.mod(label + wrong, 3), "int32")
        sure = 0.9 - 0.02 * index
        return keras.ops.one_hot(guess, 3) * sure[:, None] + (1 - sure[:, None]) / 3


def _model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, _ReadsThePixels()(inputs))


def _reshuffling_dataset(batch_size=5) -> tf.data.Dataset:
    """The images in a new order on every pass, in uneven batches."""
    dataset = tf.data.Dataset.from_tensor_slices((_images(), LABELS))
    return dataset.shuffle(len(LABELS), seed=0, reshuffle_each_iteration=True).batch(batch_size)


def test_the_dataset_really_reshuffles():
    dataset = _reshuffling_dataset()
    orders = {tuple(np.concatenate([images[:, 0, 0, 2] for images, _ in dataset])) for _ in range(3)}
    assert len(orders) > 1


def test_top_loss_images_are_the_wrong_ones_with_their_own_predictions():
    probabilities, labels, top = report._evaluate(_model(), _reshuffling_dataset(), keep=len(WRONG))
    assert sorted(labels) == sorted(LABELS)
    shown = {int(round(image[0, 0, 2] / 10)) for image in top.values()}
    assert shown == WRONG
    for position, image in top.items():
        assert image[0, 0, 0] / 100 == labels[position]  # the image shows the label reported for it
        assert image[0, 0, 1] == 255
        assert probabilities[position].argmax() == (labels[position] + 1) % 3


def test_write_report_counts_and_records_what_it_evaluated(tmp_path):
    history = {
        "loss": [1.0, 0.5, 0.4],
        "val_loss": [1.1, 0.7, 0.6],
        "accuracy": [0.3, 0.6, 0.7],
        "val_accuracy": [0.3, 0.5, 0.6],
        "phase": [1, 2, 2],
    }
    written = report.write_report(
        _model(),
        _reshuffling_dataset(),
        CLASS_NAMES,
        str(tmp_path),
        history=history,
        evaluated_on="training (evaluation transform)",
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(written))
    assert saved["evaluated_on"] == "training (evaluation transform)"
    assert saved["num_images"] == 12
    assert saved["accuracy"] == pytest.approx(8 / 12)
    # Wrong: 1 (dog as fox), 3 (cat as dog), 8 (fox as cat), 10 (dog as fox).
    assert saved["confusion_matrix"] == [[3, 1, 0], [0, 2, 2], [1, 0, 3]]
    assert saved["most_confused"][0] == {"true": "dog", "predicted": "fox", "count": 2}
    for name in ("confusion_matrix.png", "training_curves.png", "top_losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_classification_report_counts():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    result = report.classification_report(labels, np.eye(3)[predicted], CLASS_NAMES)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result["per_class"]["cat"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "support": 3}
    assert result["per_class"]["dog"]["precision"] == pytest.approx(0.5)
    assert result["per_class"]["fox"]["precision"] == pytest.approx(0.5)
    assert {"true": "cat", "predicted": "dog", "count": 1} in result["most_confused"]


def test_an_empty_evaluation_set_is_refused(tmp_path):
    empty = tf.data.Dataset.from_tensor_slices((_images()[:0], LABELS[:0])).batch(4)
    with pytest.raises(ValueError, match="empty"):
        report.write_report(_model(), empty, CLASS_NAMES, str(tmp_path))


def test_without_matplotlib_only_the_plots_fail(tmp_path):
    """The report and training modules import without matplotlib; `write_report` writes
    report.json and fails at its first plot, saying what to install."""
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import numpy as np, tensorflow as tf, keras\n"
        "import tfresnet.report, tfresnet.training\n"
        "inputs = keras.Input((8, 8, 3))\n"
        "model = keras.Model(inputs, keras.layers.Dense(2, activation='softmax')("
        "keras.layers.GlobalAveragePooling2D()(inputs)))\n"
        "data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), 'float32'), [0, 1, 0, 1]))\n"
        "try:\n"
        "    tfresnet.report.write_report(model, data.batch(2), ['a', 'b'], sys.argv[1])\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ImportError:" in completed.stdout and "pip install matplotlib" in completed.stdout
    assert json.loads((tmp_path / "report.json").read_text())["num_images"] == 4
    assert not (tmp_path / "confusion_matrix.png").exists()
