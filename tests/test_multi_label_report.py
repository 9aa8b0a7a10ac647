"""tfresnet.insight.multi_label_report: the report `write_report` writes for a multi-label model,
on a constructed case counted by hand and on a trained model recomputed (its page:
test_multi_label_html.py)."""

import json
import os

import numpy as np
import pytest
from conftest import (
    REPORT_CASE_LABELS,
    REPORT_CASE_NAMES,
    REPORT_CASE_PATHS,
    REPORT_CASE_PROBABILITIES,
    assert_pictures_in_the_page,
    ram_files,
    report_case_dataset,
    report_case_model,
)
from sklearn.metrics import average_precision_score

from tfresnet.files import read_json
from tfresnet.insight import evaluation, multi_label_metrics, multi_label_report, report
from tfresnet.insight.dataset_check import check_csv
from tfresnet.paths import join

NAMES = REPORT_CASE_NAMES
PROBABILITIES, LABELS, PATHS = REPORT_CASE_PROBABILITIES, REPORT_CASE_LABELS, REPORT_CASE_PATHS
PNG = b"\x89PNG\r\n\x1a\n"
_sigmoid_model, _dataset = report_case_model, report_case_dataset


def test_a_constructed_case_counted_by_hand(tmp_path):
    written = report.write_report(_sigmoid_model(), _dataset(), NAMES, str(tmp_path), paths=PATHS)
    assert written["multi_label"] is True and written["thresholds"] == [0.5, 0.5, 0.5]
    assert written["most_missed"] == [{"label": "red", "count": 2}, {"label": "blue", "count": 1}]
    assert written["most_added"] == [{"label": "green", "count": 2}]
    per_label = written["per_label"]
    # blue: 2 right, 1 missed; green: 2 right, 2 added; red: 1 right, 2 missed.
    assert (per_label["blue"]["precision"], per_label["blue"]["recall"]) == pytest.approx((1.0, 2 / 3))
    assert (per_label["green"]["precision"], per_label["green"]["f1"]) == pytest.approx((0.5, 2 / 3))
    assert (per_label["red"]["recall"], per_label["red"]["f1"]) == pytest.approx((1 / 3, 0.5))
    assert [per_label[name]["support"] for name in NAMES] == [3, 2, 3]
    assert written["f1_micro"] == pytest.approx(2 * 5 / (2 * 5 + 2 + 3))
    # Every image is among the top losses (6 < TOP_LOSSES), highest binary cross-entropy first.
    clipped = np.clip(PROBABILITIES.astype("float64"), 1e-7, 1 - 1e-7)
    losses = -(LABELS * np.log(clipped) + (1 - LABELS) * np.log(1 - clipped)).mean(axis=1)
    top = written["top_losses"]
    assert [entry["index"] for entry in top] == list(np.argsort(-losses))
    assert [entry["loss"] for entry in top] == pytest.approx(sorted(losses, reverse=True), rel=1e-5)
    by_index = {entry["index"]: entry for entry in top}
    assert by_index[1] == {
        "index": 1,
        "path": "images/1.png",
        "loss": pytest.approx(losses[1], rel=1e-5),
        "given": ["red"],
        "predicted": ["green"],
    }
    assert by_index[3]["given"] == [] and by_index[2]["predicted"] == ["green"]
    saved = json.loads((tmp_path / report.REPORT_FILE).read_text())
    assert saved == json.loads(json.dumps(written))
    for name in ("pr_curves.png", "top_losses.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    # No history: no curves; the single-label pictures are not drawn.
    for name in ("training_curves.png", "confusion_matrix.png", "calibration.png"):
        assert not (tmp_path / name).exists(), name


def test_a_report_on_a_store_holds_the_files_of_a_local_one(tmp_path, ram_dir):
    """The report's folder on a store (TensorFlow's in-memory file system, through tf.io.gfile)."""
    model, history = _sigmoid_model(), {"loss": [0.7, 0.5], "mean_average_precision": [0.5, 0.7]}
    output_dir = join(ram_dir, "runs", "tags")  # the folder: made by the report
    stored = report.write_report(model, _dataset(), NAMES, output_dir, paths=PATHS, history=history)
    local = report.write_report(model, _dataset(), NAMES, str(tmp_path), paths=PATHS, history=history)
    assert json.loads(json.dumps(stored)) == json.loads(json.dumps(local))
    assert read_json(join(output_dir, report.REPORT_FILE)) == json.loads(json.dumps(local))
    pictures = ["pr_curves.png", "top_losses.png", "training_curves.png"]
    assert (
        ram_files(output_dir)
        == sorted(os.listdir(tmp_path))
        == sorted([*pictures, "report.html", "report.json"])
    )
    assert_pictures_in_the_page(output_dir, pictures, report.HTML_FILE)


def test_a_trained_models_report_is_its_recomputed_measures(multi_label_model, multi_label_csv, tmp_path):
    model, data = multi_label_model
    history = {
        "loss": [0.9, 0.5, 0.3],
        "mean_average_precision": [0.5, 0.7, 0.9],
        "val_loss": [1.0, 0.6, 0.4],
        "val_mean_average_precision": [0.4, 0.7, 0.8],
        "phase": [1, 1, 2],
    }
    thresholds = [0.4, 0.5, 0.6]
    dataset_check = check_csv(multi_label_csv, multi_label=True, seed=0)
    written = report.write_report(
        model,
        data.validation,
        data.class_names,
        str(tmp_path),
        history=history,
        dataset_check=dataset_check,
        tta=True,
        thresholds=thresholds,
    )
    saved = json.loads((tmp_path / report.REPORT_FILE).read_text())
    assert saved == json.loads(json.dumps(written))
    assert set(saved) == {
        "multi_label", "mean_average_precision", "f1_micro", "f1_macro", "num_images", "per_label",
        "class_names", "thresholds", "most_missed", "most_added", "mean_average_precision_tta",
        "f1_micro_tta", "f1_macro_tta", "tta_views", "evaluated_on", "top_losses", "dataset",
    }  # fmt: skip
    assert saved["dataset"] == json.loads(json.dumps(dataset_check)) and saved["evaluated_on"] == "validation"
    assert saved["num_images"] == 12 and saved["class_names"] == ["blue", "green", "red"]
    probabilities, labels = evaluation.predict_probabilities(model, data.validation)
    expected = multi_label_metrics.label_scores(probabilities, labels, thresholds)
    for key in ("mean_average_precision", "f1_micro", "f1_macro"):
        assert saved[key] == pytest.approx(expected[key])
    for j, name in enumerate(data.class_names):
        assert saved["per_label"][name] == pytest.approx(expected["per_label"][j])
        assert saved["per_label"][name]["threshold"] == thresholds[j]
        ap = average_precision_score(labels[:, j], probabilities[:, j])
        assert saved["per_label"][name]["average_precision"] == pytest.approx(ap)
    with_tta = evaluation.evaluate(model, data.validation, tta=True, thresholds=thresholds)
    assert saved["mean_average_precision_tta"] == pytest.approx(with_tta["mean_average_precision_tta"])
    assert saved["f1_micro_tta"] == pytest.approx(with_tta["f1_micro_tta"])
    losses = multi_label_metrics.image_losses(probabilities, labels)
    assert len(saved["top_losses"]) == report.TOP_LOSSES
    assert [entry["loss"] for entry in saved["top_losses"]] == pytest.approx(
        sorted(losses, reverse=True)[: report.TOP_LOSSES], rel=1e-5
    )
    for entry in saved["top_losses"]:
        assert entry["given"] == [data.class_names[j] for j in np.flatnonzero(labels[entry["index"]])]
    for name in ("pr_curves.png", "top_losses.png", "training_curves.png", "report.html"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "pr_curves.png").read_bytes()[:8] == PNG


def test_calibration_and_unmatched_class_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Calibration .* is single-label only"):
        report.write_report(_sigmoid_model(), _dataset(), NAMES, str(tmp_path / "calibrated"), calibrate=True)
    assert not (tmp_path / "calibrated").exists()  # refused before any work
    with pytest.raises(ValueError, match="labels are rows of 3 for 2 class names"):
        report.write_report(_sigmoid_model(), _dataset(), NAMES[:2], str(tmp_path / "names"))
    with pytest.raises(ValueError, match="thresholds must be 3 numbers in"):
        report.write_report(_sigmoid_model(), _dataset(), NAMES, str(tmp_path), thresholds=[0.5, 2, 0.5])


def test_multi_label_report_of_arrays():
    found = multi_label_report.multi_label_report(LABELS, PROBABILITIES, NAMES, [0.5, 0.5, 0.25], most=2)
    # red from 0.25: also predicted on image 1 (right), not on image 0 (0.2); ties in label order.
    assert found["most_missed"] == [{"label": "blue", "count": 1}, {"label": "red", "count": 1}]
    assert found["per_label"]["red"]["recall"] == pytest.approx(2 / 3)
    assert found["thresholds"] == [0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="Pass the class names the model was trained on"):
        multi_label_report.multi_label_report(LABELS, PROBABILITIES, NAMES[:2])
