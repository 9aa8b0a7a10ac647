"""`report.html`: the whole evaluation report on one self-contained page.

Every picture is inlined as a `data:` URI (the report's PNG files, and small JPEG thumbnails of
the duplicate images the dataset check found), the style sheet sits in the page, and nothing
else is referenced: the file opens from disk, offline, and can be mailed as it is. The report's
folder and the images may be local or on a store (`gs://...`). The markup is well-formed XML
(void elements closed, text escaped), so any parser reads it. A multi-label report's sections
are `tfresnet.insight.multi_label_html`'s.
"""

from __future__ import annotations

import base64
import html
import io
import json

from tfresnet.files import write_text
from tfresnet.paths import isfile, join, open_file, read_bytes

HTML_FILE = "report.html"
# The dataset section shows this many groups of each kind, and this many images of a group.
SHOWN_GROUPS = 8
SHOWN_MEMBERS = 6
SHOWN_UNREADABLE = 20
THUMBNAIL_SIZE = 96

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img.figure { max-width: 100%; border: 1px solid #eee; }
figure.thumb { display: inline-block; margin: 0.2em; font-size: 0.75em; max-width: 110px; }
figure.thumb img { display: block; width: 96px; height: auto; }
.note { color: #666; }
.warn { color: #a40; font-weight: bold; }
nav a { margin-right: 1em; }
"""
SECTIONS = (
    ("summary", "Summary"),
    ("config", "Configuration"),
    ("dataset", "Dataset check"),
    ("training", "Training curves"),
    ("confusion", "Confusion matrix"),
    ("per-class", "Per class"),
    ("confused", "Most confused"),
    ("top-losses", "Top losses"),
    ("label-errors", "Suspected label errors"),
    ("gradcam", "Grad-CAM"),
    ("calibration", "Calibration"),
)


def write_html(report: dict, output_dir: str, *, config: dict | None = None) -> str:
    """Writes `report.html` into `output_dir` from the report's dict and its PNG files.

    Returns:
        The page's path.

    Example:
        write_html(report, "runs/flowers", config=result.config)
        # 'runs/flowers/report.html'
    """
    if report.get("multi_label"):
        from tfresnet.insight.multi_label_html import multi_label_sections

        return write_page(multi_label_sections(report, output_dir, config=config), output_dir)
    body = {
        "summary": _summary(report),
        "config": _key_values(config) if config else _note("No configuration was given."),
        "dataset": _dataset(report.get("dataset")),
        "training": _picture(output_dir, "training_curves.png", "No training history was given."),
        "confusion": _picture(output_dir, "confusion_matrix.png", "Not drawn."),
        "per-class": _per_class(report),
        "confused": _most_confused(report),
        "top-losses": _top_losses(report, output_dir),
        "label-errors": _label_errors(report, output_dir),
        "gradcam": _gradcam(report, output_dir),
        "calibration": _calibration(report, output_dir),
    }
    return write_page([(key, title, body[key]) for key, title in SECTIONS], output_dir)


def write_page(sections: list[tuple[str, str, str]], output_dir: str) -> str:
    """Writes `report.html` of `(anchor, title, HTML body)` sections into `output_dir`; returns its path.

    Example:
        write_page([("summary", "Summary", "<p>...</p>")], "runs/flowers")
        # 'runs/flowers/report.html'
    """
    navigation = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    content = "".join(
        f'<section id="{key}"><h2>{title}</h2>{body}</section>\n' for key, title, body in sections
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8" />'
        '<meta name="viewport" content="width=device-width, initial-scale=1" />'
        f"<title>tfresnet report</title><style>{STYLE}</style></head>\n<body>"
        f"<h1>Evaluation report</h1><nav>{navigation}</nav>\n{content}</body></html>\n"
    )
    path = join(output_dir, HTML_FILE)
    write_text(path, page)
    return path


# === Pieces ===


def _text(value) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{_text(text)}</p>'


def _table(header: list[str] | None, rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = f"<tr>{''.join(f'<th>{_text(name)}</th>' for name in header)}</tr>" if header else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="number">{_text(cell)}</td>' if i in numeric else f"<td>{_text(cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _key_values(values: dict) -> str:
    rows = [
        [key, value if isinstance(value, str) else json.dumps(value, default=str)]
        for key, value in values.items()
    ]
    return _table(["setting", "value"], rows)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _picture(output_dir: str, name: str, missing: str) -> str:
    path = join(output_dir, name)
    if not isfile(path):
        return _note(missing)
    uri = _data_uri(read_bytes(path), "image/png")
    return f'<img class="figure" alt="{_text(name)}" src="{uri}" />'


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# === Sections ===


def _summary(report: dict) -> str:
    rows = [["accuracy", _number(report["accuracy"])]]
    if "accuracy_tta" in report:
        views = ", ".join(report["tta_views"])
        gain = report["accuracy_tta"] - report["accuracy"]
        rows.append(
            [
                f"accuracy with test-time augmentation (views averaged: {views}; the export is single-pass)",
                f"{_number(report['accuracy_tta'])} ({gain:+.3f})",
            ]
        )
    rows += [
        ["images evaluated", report["num_images"]],
        ["evaluated on", report["evaluated_on"]],
        ["classes", len(report["class_names"])],
        ["expected calibration error (15 bins)", _number(report["expected_calibration_error"])],
    ]
    calibration = report.get("calibration")
    if calibration:
        rows.append(["temperature (baked into the export)", _number(calibration["temperature"])])
    dataset = report.get("dataset")
    if dataset:
        rows.append(["cross-split duplicates (leakage)", len(dataset["cross_split"])])
        rows.append(["duplicates with conflicting labels", len(dataset["conflicting_labels"])])
    return _table(None, rows)


def _per_class(report: dict) -> str:
    rows = [
        [name, _number(values["precision"]), _number(values["recall"]), values["support"]]
        for name, values in report["per_class"].items()
    ]
    return _table(["class", "precision", "recall", "support"], rows, numeric={1, 2, 3})


def _most_confused(report: dict) -> str:
    pairs = report["most_confused"]
    if not pairs:
        return _note("No image was misclassified.")
    rows = [[pair["true"], pair["predicted"], pair["count"]] for pair in pairs]
    return _table(["true class", "predicted as", "images"], rows, numeric={2})


def _grad_cam_note(report: dict) -> str:
    state = report.get("grad_cam") or {}
    if state.get("available"):
        return ""
    return _note(state.get("reason", "Grad-CAM is not available: it was not computed."))


def _top_losses(report: dict, output_dir: str) -> str:
    note = "The evaluation images with the highest loss: prediction / truth / probability."
    if (report.get("grad_cam") or {}).get("available"):
        note += " The heatmap (Grad-CAM) shows where the model found its prediction."
    return _note(note) + _grad_cam_note(report) + _picture(output_dir, "top_losses.png", "Not drawn.")


def _label_errors(report: dict, output_dir: str) -> str:
    suspects = report.get("suspected_label_errors") or []
    if not suspects:
        return _note("The model contradicts no label with high confidence.")
    note = _note(
        f"{len(suspects)} evaluation images the model puts in another class with high confidence "
        "(at least 0.5, and at least that class's mean probability on its own images): check "
        "their labels (python -m tfresnet.check --label-issues looks at every image)."
    )
    rows = [
        [
            suspect.get("path", f"image {suspect['index']}"),
            suspect["given"],
            suspect["predicted"],
            _number(suspect["score"]),
        ]
        for suspect in suspects
    ]
    table = _table(["image", "given", "predicted", "probability"], rows, numeric={3})
    return note + _picture(output_dir, "label_errors.png", "Not drawn.") + table


def _gradcam(report: dict, output_dir: str) -> str:
    if not (report.get("grad_cam") or {}).get("available"):
        return _grad_cam_note(report)
    note = _note("The first images of each class (title: truth: prediction probability), with the heatmap.")
    return note + _picture(output_dir, "gradcam.png", "Not drawn.")


def _calibration(report: dict, output_dir: str) -> str:
    rows = [["expected calibration error", _number(report["expected_calibration_error"])]]
    calibration = report.get("calibration")
    if calibration:
        rows += [
            ["temperature", _number(calibration["temperature"])],
            ["ECE after temperature scaling", _number(calibration["expected_calibration_error_after"])],
            [
                "NLL before / after",
                f"{_number(calibration['negative_log_likelihood_before'])} / "
                f"{_number(calibration['negative_log_likelihood_after'])}",
            ],
            ["fitted on", calibration["fitted_on"]],
        ]
    return _table(None, rows) + _picture(output_dir, "calibration.png", "Not drawn.")


# === The dataset check ===


def _dataset(check: dict | None) -> str:
    if not check:
        return _note("The dataset check did not run (TFDS data, or --no-check).")
    multi_label = bool(check.get("multi_label"))
    spread = "most / least frequent label" if multi_label else "largest / smallest class"
    rows = [
        ["folder", check["directory"]],
        ["readable images", check["num_images"]],
        [f"imbalance ({spread})", _number(check["imbalance_ratio"], 2)],
        [
            "image width min / median / max",
            "{min} / {median:g} / {max}".format(**check["image_sizes"]["width"]),
        ],
        [
            "image height min / median / max",
            "{min} / {median:g} / {max}".format(**check["image_sizes"]["height"]),
        ],
        [
            "colour modes",
            ", ".join(f"{key} {count}" for key, count in check["modes"].items() if count) or "none",
        ],
        ["split checked", f"val_split {check['val_split']}, seed {check['seed']}"],
    ]
    if multi_label:
        parts = [_table(None, rows), *_label_sets(check)]
    else:
        counts = [list(item) for item in check["class_counts"].items()]
        parts = [_table(None, rows), _table(["class", "images"], counts, {1})]
    directory = check["directory"]
    leaks = [group["train"] + group["validation"] for group in check["cross_split"]]
    conflicts = None if multi_label else [group["paths"] for group in check["conflicting_labels"]]
    for title, groups, kind in (
        ("Leakage: duplicates on both sides of the train/validation split", leaks, "warn"),
        ("Duplicates filed under different classes", conflicts, "warn"),
        ("Exact duplicates (identical pixels)", check["exact_duplicates"], "note"),
        ("Near duplicates (re-encoded, resized or slightly cropped)", check["near_duplicates"], "note"),
    ):
        if groups is None:  # not checked: see _label_sets
            continue
        parts.append(f"<h3>{_text(title)}: {len(groups)}</h3>")
        if groups and kind == "warn":
            parts.append(_note("Fix these before trusting the validation score.", "warn"))
        parts += [_group(directory, group) for group in groups[:SHOWN_GROUPS]]
        if len(groups) > SHOWN_GROUPS:
            parts.append(_note(f"... and {len(groups) - SHOWN_GROUPS} more: see report.json."))
    unreadable = list(check["unreadable"].items())
    parts.append(f"<h3>Unreadable files: {len(unreadable)}</h3>")
    if unreadable:
        parts.append(_table(["file", "reason"], [list(item) for item in unreadable[:SHOWN_UNREADABLE]]))
    return "".join(parts)


def _label_sets(check: dict) -> list[str]:
    """A multi-label check's tables: images per label, the most frequent pairs, unlabelled images."""
    unlabelled = check["unlabelled"]
    examples = f" (e.g. {', '.join(unlabelled['examples'])})" if unlabelled["examples"] else ""
    pairs = [[" + ".join(pair["labels"]), pair["count"]] for pair in check["label_pairs"]]
    return [
        _table(["label", "images"], [list(item) for item in check["label_counts"].items()], {1}),
        _table(["labels together", "images"], pairs, {1}) if pairs else _note("No image has two labels."),
        _note(f"Images without any label: {unlabelled['count']}{examples}."),
        _note(check["not_checked"]["conflicting_labels"]),
    ]


def _group(directory: str, paths: list[str]) -> str:
    """One group of images, as small thumbnails captioned with their paths."""
    figures = []
    for path in paths[:SHOWN_MEMBERS]:
        uri = _thumbnail(join(directory, path))
        image = f'<img alt="{_text(path)}" src="{uri}" />' if uri else ""
        figures.append(f'<figure class="thumb">{image}<figcaption>{_text(path)}</figcaption></figure>')
    return f"<div>{''.join(figures)}</div>"


def _thumbnail(path: str) -> str | None:
    """A small JPEG of the image at `path`, as a data URI (None if it cannot be read)."""
    from PIL import Image

    try:
        with open_file(path, "rb") as file, Image.open(file) as image:
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            small = image.convert("RGB")
            small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    except Exception:  # noqa: BLE001 - a file moved or changed since the check: no thumbnail
        return None
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "image/jpeg")
