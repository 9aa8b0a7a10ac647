"""The evaluation report: counts, the top-loss images paired with their own predictions, plots,
calibration, Grad-CAM, and its files written whole (its page: test_report_html.py)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPORT_CLASS_NAMES as CLASS_NAMES
from conftest import REPORT_LABELS as LABELS
from conftest import REPORT_SIZE as SIZE
from conftest import REPORT_WRONG as WRONG
from conftest import assert_close_across_kernels, assert_pictures_in_the_page, ram_files
from conftest import report_images as _images
from conftest import report_model as _model
from conftest import reshuffling_dataset as _reshuffling_dataset
from PIL import Image

import tfresnet
from tfresnet.files import read_json
from tfresnet.insight import calibration, evaluation, multi_label_report, report
from tfresnet.insight.gradcam import grad_cam
from tfresnet.paths import join

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_dataset_really_reshuffles():
    dataset = _reshuffling_dataset()
    orders = {tuple(np.concatenate([images[:, 0, 0, 2] for images, _ in dataset])) for _ in range(3)}
    assert len(orders) > 1


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
    assert "accuracy_tta" not in saved and "tta_views" not in saved
    assert saved["most_confused"][0] == {"true": "dog", "predicted": "fox", "count": 2}
    for name in ("confusion_matrix.png", "training_curves.png", "top_losses.png", "calibration.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    probabilities, labels = evaluation.predict_probabilities(_model(), _reshuffling_dataset())
    assert saved["expected_calibration_error"] == pytest.approx(
        calibration.expected_calibration_error(probabilities, labels)
    )
    # This model has no convolutional backbone: no heatmaps, said once in the report and the page.
    assert saved["grad_cam"]["available"] is False and "'backbone'" in saved["grad_cam"]["reason"]
    assert not (tmp_path / "gradcam.png").exists()
    assert "Grad-CAM is not available" in (tmp_path / "report.html").read_text()


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
        "import tfresnet.insight.report, tfresnet.training, tfresnet.insight.evaluation\n"
        "import tfresnet.insight.batch_grid\n"
        "inputs = keras.Input((8, 8, 3))\n"
        "model = keras.Model(inputs, keras.layers.Dense(2, activation='softmax')("
        "keras.layers.GlobalAveragePooling2D()(inputs)))\n"
        "data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), 'float32'), [0, 1, 0, 1]))\n"
        "try:\n"
        "    tfresnet.insight.report.write_report(model, data.batch(2), ['a', 'b'], sys.argv[1])\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
        "try:\n"
        "    tfresnet.show_batch(data.batch(2), ['a', 'b'], sys.argv[1] + '/batch.png')\n"
        "except ImportError as error:\n"
        "    print('show_batch ImportError:', error)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ImportError:" in completed.stdout and "pip install matplotlib" in completed.stdout
    assert "show_batch ImportError:" in completed.stdout
    assert json.loads((tmp_path / "report.json").read_text())["num_images"] == 4
    assert not (tmp_path / "confusion_matrix.png").exists() and not (tmp_path / "batch.png").exists()


# === Test-time augmentation ===

# Images the model above gets wrong only as they are: their channel 1 is a frame of 255 around
# 60, bright enough on average (145) to mark them, not once a corner crop drops a row and a
# column of the frame (114), so that 4 of the 6 views are right.
FRAMED = {1, 3}


def _framed_dataset() -> tf.data.Dataset:
    images = _images()
    for i in FRAMED:
        images[i, ..., 1] = 255
        images[i, 1:-1, 1:-1, 1] = 60
    return tf.data.Dataset.from_tensor_slices((images, LABELS)).batch(5)


def test_write_report_with_tta_records_both_accuracies_and_shows_them(tmp_path):
    written = report.write_report(_model(), _framed_dataset(), CLASS_NAMES, str(tmp_path), tta=True)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(written))
    assert saved["accuracy"] == pytest.approx(8 / 12)  # single pass: still wrong on 1, 3, 8, 10
    assert saved["confusion_matrix"] == [[3, 1, 0], [0, 2, 2], [1, 0, 3]]
    assert saved["accuracy_tta"] == pytest.approx(10 / 12)  # the framed images are put right
    assert saved["tta_views"] == list(evaluation.TTA_VIEWS)
    assert evaluation.evaluate(_model(), _framed_dataset(), tta=True)["accuracy_tta"] == saved["accuracy_tta"]
    page = (tmp_path / report.HTML_FILE).read_text()
    assert "accuracy with test-time augmentation" in page and "0.833 (+0.167)" in page
    assert "original, flipped, top-left crop, top-right crop, bottom-left crop, bottom-right crop" in page


# === A classifier's report ===


def test_a_classifier_report_overlays_grad_cam_calibrates_and_holds_the_dataset_check(
    folder_with_a_conflict, tmp_path, monkeypatch
):
    data = tfresnet.from_folder(folder_with_a_conflict, image_size=64, batch_size=4, val_split=0.3, seed=0)
    check = tfresnet.check_dataset(folder_with_a_conflict, val_split=0.3, seed=0)
    model = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=64)
    shown = []
    monkeypatch.setattr(report, "_show", lambda axis, image, heatmap: shown.append((image, heatmap)))
    written = report.write_report(
        model, data.validation, data.class_names, str(tmp_path), dataset_check=check, calibrate=True
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["dataset"] == json.loads(json.dumps(check)) and saved["grad_cam"] == {"available": True}
    assert saved["dataset"]["conflicting_labels"][0]["paths"] == ["blue/000.jpg", "red/copy_of_blue.jpg"]
    # Every image drawn (top losses, then a few per class) carries its own prediction's heatmap.
    assert len(shown) == min(report.TOP_LOSSES, data.num_validation) + data.num_validation
    expected = grad_cam(model, np.stack([image for image, _ in shown]))
    assert_close_across_kernels(np.stack([heatmap for _, heatmap in shown]), expected)  # other batches
    probabilities, labels = evaluation.predict_probabilities(model, data.validation)
    temperature = calibration.fit_temperature(probabilities, labels)
    assert written["calibration"]["temperature"] == pytest.approx(temperature, rel=1e-4)
    assert written["calibration"]["expected_calibration_error_after"] == pytest.approx(
        calibration.expected_calibration_error(
            calibration.scale_probabilities(probabilities, temperature), labels
        )
    )
    assert (tmp_path / "gradcam.png").is_file() and (tmp_path / "calibration.png").is_file()


# === Many classes, and files written whole ===


def test_a_thousand_classes_report_with_a_bounded_confusion_matrix(tmp_path):
    """The full matrix stays in report.json; the picture shows the classes most confused, at a
    size that does not grow with the classes (at 1,300 classes it once failed to draw)."""
    classes = 1000
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (48, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, classes, len(images))
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(
        keras.layers.Flatten()(inputs / 255.0)
    )
    model = keras.Model(inputs, outputs)
    names = [f"class_{i:04d}" for i in range(classes)]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    written = report.write_report(model, dataset, names, str(tmp_path))
    matrix = np.array(json.loads((tmp_path / "report.json").read_text())["confusion_matrix"])
    assert matrix.shape == (classes, classes) and matrix.sum() == len(images)
    assert len(written["per_class"]) == classes
    with Image.open(tmp_path / "confusion_matrix.png") as picture:
        assert max(picture.size) <= 2000, picture.size
    shown = report.shown_classes(matrix)
    assert len(shown) == report.CONFUSION_CLASSES
    errors = matrix - np.diag(np.diag(matrix))
    involved = errors.sum(axis=0) + errors.sum(axis=1)
    assert involved[shown].min() >= np.delete(involved, shown).max()  # the most confused ones
    assert "report.html" in os.listdir(tmp_path)


def test_shown_classes_keeps_all_of_a_few_and_the_most_confused_of_many():
    matrix = np.array([[5, 0, 0, 0], [3, 1, 0, 0], [0, 0, 4, 0], [0, 0, 1, 2]])
    np.testing.assert_array_equal(report.shown_classes(matrix, limit=4), [0, 1, 2, 3])
    np.testing.assert_array_equal(report.shown_classes(matrix, limit=2), [0, 1])


@pytest.mark.parametrize("failing", ["plot", "json"])
def test_a_report_cut_short_leaves_the_previous_files_whole(tmp_path, monkeypatch, failing):
    """Every file is written beside its target and renamed over it: a failure half-way through
    writing one (a full disk) leaves the previous file as it was, and no temporary file."""
    report.write_report(_model(), _reshuffling_dataset(), CLASS_NAMES, str(tmp_path))
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def half_then_full(target, *args, **kwargs):
        if isinstance(target, str):
            with open(target, "wb") as file:
                file.write(b"half")
        else:
            target.write("{half")
        raise OSError("No space left on device")

    if failing == "plot":
        from matplotlib.figure import Figure

        monkeypatch.setattr(Figure, "savefig", lambda figure, target, **kwargs: half_then_full(target))
    else:
        monkeypatch.setattr(json, "dump", lambda value, file, **kwargs: half_then_full(file))
    with pytest.raises(OSError, match="No space left"):
        report.write_report(_model(), _reshuffling_dataset(), CLASS_NAMES, str(tmp_path))
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert set(after) == set(before)  # no temporary file left
    for name in [name for name in before if failing == "json" or name.endswith(".png")]:
        assert after[name] == before[name], name  # report.json is new when a plot fails


def test_the_report_lists_and_shows_the_labels_the_model_contradicts(tmp_path):
    dataset = tf.data.Dataset.from_tensor_slices((_images(), LABELS)).batch(5)  # in source order
    paths = [f"images/{i:02d}.png" for i in range(len(LABELS))]
    written = report.write_report(_model(), dataset, CLASS_NAMES, str(tmp_path), paths=paths)
    suspects = written["suspected_label_errors"]
    # The model errs with confidence on exactly the images of WRONG; the least likely label first.
    assert [item["index"] for item in suspects] == sorted(WRONG)
    assert [item["path"] for item in suspects] == [paths[i] for i in sorted(WRONG)]
    assert [(item["given"], item["predicted"]) for item in suspects] == [
        (CLASS_NAMES[LABELS[i]], CLASS_NAMES[(LABELS[i] + 1) % 3]) for i in sorted(WRONG)
    ]
    assert all(item["score"] > 0.5 > item["given_probability"] for item in suspects)
    assert (tmp_path / "label_errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "Suspected label errors" in page and all(paths[i] in page for i in WRONG)

    # A model right everywhere suspects nothing; an older run's picture goes.
    right = tf.data.Dataset.from_tensor_slices((_images()[[0, 2, 4]], LABELS[[0, 2, 4]])).batch(5)
    again = report.write_report(_model(), right, CLASS_NAMES, str(tmp_path))
    assert again["suspected_label_errors"] == []
    assert not (tmp_path / "label_errors.png").exists()
    assert "contradicts no label" in (tmp_path / "report.html").read_text()


def test_a_report_on_a_store_holds_the_files_of_a_local_one_and_drops_an_older_picture(tmp_path, ram_dir):
    """The report's folder on a store (TensorFlow's in-memory file system, through tf.io.gfile)."""
    history = {"loss": [1.0, 0.5], "accuracy": [0.3, 0.6], "phase": [1, 2]}
    dataset = tf.data.Dataset.from_tensor_slices((_images(), LABELS)).batch(5)
    model, output_dir = _model(), join(ram_dir, "runs", "flowers")  # the folder: made by the report
    stored = report.write_report(model, dataset, CLASS_NAMES, output_dir, history=history)
    local = report.write_report(model, dataset, CLASS_NAMES, str(tmp_path), history=history)
    assert json.loads(json.dumps(stored)) == json.loads(json.dumps(local))
    assert read_json(join(output_dir, report.REPORT_FILE)) == json.loads(
        (tmp_path / report.REPORT_FILE).read_text()
    )
    pictures = [
        "calibration.png",
        "confusion_matrix.png",
        "label_errors.png",
        "top_losses.png",
        "training_curves.png",
    ]
    assert (
        ram_files(output_dir)
        == sorted(os.listdir(tmp_path))
        == sorted([*pictures, "report.json", "report.html"])
    )
    assert_pictures_in_the_page(output_dir, pictures, report.HTML_FILE)

    right = tf.data.Dataset.from_tensor_slices((_images()[[0, 2, 4]], LABELS[[0, 2, 4]])).batch(5)
    assert report.write_report(model, right, CLASS_NAMES, output_dir)["suspected_label_errors"] == []
    assert "label_errors.png" not in ram_files(output_dir)  # the older run's picture went


# === Multi-label models (their report: test_multi_label_report.py) ===


def test_thresholds_are_refused_for_a_single_label_model(tmp_path):
    output = str(tmp_path / "r")
    with pytest.raises(ValueError, match="thresholds apply to a multi-label model"):
        report.write_report(_model(), _reshuffling_dataset(), CLASS_NAMES, output, thresholds=[0.5] * 3)
    assert not (tmp_path / "r").exists()


def test_a_multi_label_model_gets_the_multi_label_report_and_curves(multi_label_model, tmp_path, monkeypatch):
    model, data = multi_label_model
    drawn, plot = [], report._plot_history

    def recording(history, output_dir, score="accuracy"):
        drawn.append(score)
        plot(history, output_dir, score)

    monkeypatch.setattr(multi_label_report, "_plot_history", recording)
    history = {"loss": [0.5], "mean_average_precision": [0.7], "phase": [1]}
    written = report.write_report(model, data.validation, data.class_names, str(tmp_path), history=history)
    assert written["multi_label"] is True and "accuracy" not in written and "confusion_matrix" not in written
    assert drawn == ["mean_average_precision"] and (tmp_path / "training_curves.png").is_file()
    with pytest.raises(ValueError, match="single-label only"):
        report.write_report(model, data.validation, data.class_names, str(tmp_path), temperature=1.5)
