"""Tests of tfresnet.insight.report_html: the report's one self-contained HTML page."""

import base64
import io
import re
import xml.etree.ElementTree as ElementTree

from conftest import REPORT_CLASS_NAMES as CLASS_NAMES
from conftest import copy_to_ram
from conftest import report_model as _model
from conftest import reshuffling_dataset as _reshuffling_dataset
from PIL import Image

import tfresnet
from tfresnet.insight import report, report_html
from tfresnet.paths import join, read_bytes


def _page_images(page: str) -> list[str]:
    """The `src` of every <img> of the page, parsed as XML (the page is well-formed)."""
    root = ElementTree.fromstring(page.split("\n", 1)[1])  # past <!DOCTYPE html>
    assert root.tag == "html"
    return [element.get("src") for element in root.iter("img")]


def test_the_page_is_self_contained_and_every_picture_decodes(folder_with_a_conflict, tmp_path):
    data = tfresnet.from_folder(folder_with_a_conflict, image_size=64, batch_size=8, val_split=0.3, seed=0)
    check = tfresnet.check_dataset(folder_with_a_conflict, val_split=0.3, seed=0)
    model = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=64)
    history = {"loss": [1.0, 0.8], "accuracy": [0.4, 0.6], "phase": [1, 2]}
    config = {"backbone": "resnet-test", "note": "<b>&'\"</b>"}
    report.write_report(
        model,
        data.validation,
        data.class_names,
        str(tmp_path),
        history=history,
        dataset_check=check,
        config=config,
    )
    page = (tmp_path / report.HTML_FILE).read_text(encoding="utf-8")
    sources = _page_images(page)
    pictures = [
        "training_curves.png",
        "confusion_matrix.png",
        "top_losses.png",
        "gradcam.png",
        "calibration.png",
    ]
    # A random model may or may not contradict a label with confidence.
    pictures += ["label_errors.png"] * (tmp_path / "label_errors.png").exists()
    # A thumbnail of each image of each group of duplicates shown, then the figures.
    groups = [group["train"] + group["validation"] for group in check["cross_split"]]
    groups += [group["paths"] for group in check["conflicting_labels"]]
    groups += check["exact_duplicates"] + check["near_duplicates"]
    thumbnails = sum(map(len, groups))
    assert thumbnails >= 4  # the copy is an exact duplicate and a label conflict
    expected = ["data:image/jpeg"] * thumbnails + ["data:image/png;"] * len(pictures)
    assert [source[:15] for source in sources] == expected
    for source in sources:
        kind, encoded = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", source).groups()
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
            picture.load()
            assert picture.format == kind.upper()
    for name in pictures:
        with open(tmp_path / name, "rb") as file:
            assert base64.b64encode(file.read()).decode() in page, name
    # Nothing outside itself: no link or source but data: URIs and the page's own anchors.
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", page) == []
    outside_pictures = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(
        r"url\(|https?:|//[a-z]|<script|<link|@import", outside_pictures, flags=re.IGNORECASE
    )
    for key, _ in report_html.SECTIONS:
        assert f'<section id="{key}">' in page
    assert "&lt;b&gt;&amp;&#x27;&quot;&lt;/b&gt;" in page  # text is escaped
    assert "red/copy_of_blue.jpg" in page


def test_the_page_says_when_the_dataset_check_did_not_run(tmp_path):
    report.write_report(_model(), _reshuffling_dataset(), CLASS_NAMES, str(tmp_path))
    page = (tmp_path / report.HTML_FILE).read_text()
    assert "The dataset check did not run" in page
    assert len(_page_images(page)) == 4  # confusion matrix, top losses, label errors, calibration


def test_a_page_on_a_store_shows_the_duplicates_of_a_folder_there(folder_with_a_conflict, ram_dir):
    """The images and the report on TensorFlow's in-memory file system: their thumbnails inlined."""
    folder = copy_to_ram(folder_with_a_conflict, join(ram_dir, "images"))
    check = tfresnet.check_dataset(folder, val_split=0.3, seed=0)
    output_dir = join(ram_dir, "report")
    report.write_report(_model(), _reshuffling_dataset(), CLASS_NAMES, output_dir, dataset_check=check)
    page = read_bytes(join(output_dir, report.HTML_FILE)).decode("utf-8")
    thumbnails = [source for source in _page_images(page) if source.startswith("data:image/jpeg")]
    groups = [group["paths"] for group in check["conflicting_labels"]] + check["exact_duplicates"]
    assert (
        len(thumbnails) >= sum(map(len, groups)) >= 4
    )  # the copy is an exact duplicate and a label conflict
    with Image.open(io.BytesIO(read_bytes(join(folder, "blue", "000.jpg")))) as original:
        size = original.size
    for source in thumbnails:
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as picture:
            assert picture.format == "JPEG" and max(picture.size) <= report_html.THUMBNAIL_SIZE
            assert picture.size == size  # 40 px: smaller than a thumbnail, kept whole
