"""tfresnet.insight.multi_label_html: a multi-label report's page, self-contained, with its
measures, per-label table, curves, missed and added labels, top losses and dataset check."""

import base64
import io
import re
import xml.etree.ElementTree as ElementTree

from conftest import (
    REPORT_CASE_LABELS,
    REPORT_CASE_NAMES,
    REPORT_CASE_PATHS,
    REPORT_CASE_PROBABILITIES,
    report_case_dataset,
    report_case_model,
)
from PIL import Image

from tfresnet.insight import dataset_check, multi_label_html, report

NAMES = REPORT_CASE_NAMES
PROBABILITIES, LABELS, PATHS = REPORT_CASE_PROBABILITIES, REPORT_CASE_LABELS, REPORT_CASE_PATHS
_sigmoid_model, _dataset = report_case_model, report_case_dataset


def _root(page: str) -> ElementTree.Element:
    root = ElementTree.fromstring(page.split("\n", 1)[1])  # past <!DOCTYPE html>, well-formed
    assert root.tag == "html"
    return root


def _rows(section: ElementTree.Element) -> list[list[str]]:
    return [["".join(cell.itertext()) for cell in row] for row in section.iter("tr")]


def _sections(page: str) -> dict[str, ElementTree.Element]:
    return {section.get("id"): section for section in _root(page).iter("section")}


def test_the_page_of_a_constructed_case(multi_label_csv, tmp_path):
    check = dataset_check.check_csv(multi_label_csv, multi_label=True, seed=0)
    history = {"loss": [0.6, 0.4], "mean_average_precision": [0.6, 0.8], "phase": [1, 2]}
    report.write_report(
        _sigmoid_model(),
        _dataset(),
        NAMES,
        str(tmp_path),
        paths=PATHS,
        tta=True,
        history=history,
        dataset_check=check,
        config={"multi_label": True},
    )
    page = (tmp_path / report.HTML_FILE).read_text(encoding="utf-8")
    sections = _sections(page)
    assert list(sections) == [key for key, _ in multi_label_html.SECTIONS]
    per_label = _rows(sections["per-label"])
    assert per_label[0] == ["label", "average precision", "precision", "recall", "F1", "support", "threshold"]
    # green: predicted on 4 images, 2 of them rightly, found on both of its images.
    assert per_label[2][0] == "green" and per_label[2][2:] == ["0.500", "1.000", "0.667", "2", "0.500"]
    header = ["label", "images"]
    missed_then_added = [header, ["red", "2"], ["blue", "1"], header, ["green", "2"]]
    assert _rows(sections["errors"]) == missed_then_added
    top = _rows(sections["top-losses"])
    assert top[0] == ["image", "given labels", "predicted labels", "loss"]
    assert ["images/1.png", "red", "green"] in [row[:3] for row in top]
    assert ["images/3.png", "none", "green"] in [row[:3] for row in top]
    summary = dict(row for row in _rows(sections["summary"]))
    assert summary["labels"] == "3" and summary["images evaluated"] == "6"
    assert any("test-time augmentation" in key for key in summary)
    dataset = "".join(sections["dataset"].itertext())
    assert "imbalance (most / least frequent label)" in dataset and "Images without any label: 7" in dataset
    assert ["green + red", "8"] in _rows(sections["dataset"]) and "single-label check" in dataset
    pictures = [element.get("alt") for element in _root(page).iter("img")]
    assert pictures == ["training_curves.png", "pr_curves.png", "top_losses.png"]
    for element in _root(page).iter("img"):
        encoded = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", element.get("src")).group(1)
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
            picture.load()
            assert picture.format == "PNG"
        assert base64.b64decode(encoded) == (tmp_path / element.get("alt")).read_bytes()


def test_without_errors_history_or_check_the_page_says_so(tmp_path):
    report.write_report(_sigmoid_model(), _dataset().skip(1), NAMES, str(tmp_path))  # images 4 and 5: right
    sections = _sections((tmp_path / report.HTML_FILE).read_text(encoding="utf-8"))
    errors = "".join(sections["errors"].itertext())
    assert "No label was missed." in errors and "No label was added." in errors
    assert "No training history was given." in "".join(sections["training"].itertext())
    assert "The dataset check did not run" in "".join(sections["dataset"].itertext())
    assert "image 0" in "".join(sections["top-losses"].itertext())  # named by position without paths
