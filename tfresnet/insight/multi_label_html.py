"""The sections of a multi-label report's page (`report.html`): its measures, the per-label
table, the precision-recall curves, the labels most often missed and added, and the top losses
with their given and predicted label sets. `tfresnet.insight.report_html.write_html` writes the
page from them, self-contained as a single-label report's.
"""

from __future__ import annotations

from tfresnet.insight.report_html import _dataset, _key_values, _note, _number, _picture, _table

SECTIONS = (
    ("summary", "Summary"),
    ("config", "Configuration"),
    ("dataset", "Dataset check"),
    ("training", "Training curves"),
    ("per-label", "Per label"),
    ("pr-curves", "Precision-recall curves"),
    ("errors", "Labels most often missed and added"),
    ("top-losses", "Top losses"),
)


def multi_label_sections(
    report: dict, output_dir: str, *, config: dict | None = None
) -> list[tuple[str, str, str]]:
    """The page's `(anchor, title, HTML body)` sections of a multi-label report's dict.

    Example:
        write_page(multi_label_sections(report, "runs/x", config=result.config), "runs/x")
        # 'runs/x/report.html'
    """
    body = {
        "summary": _summary(report),
        "config": _key_values(config) if config else _note("No configuration was given."),
        "dataset": _dataset(report.get("dataset")),
        "training": _picture(output_dir, "training_curves.png", "No training history was given."),
        "per-label": _per_label(report),
        "pr-curves": _picture(output_dir, "pr_curves.png", "Not drawn."),
        "errors": _errors(report),
        "top-losses": _top_losses(report, output_dir),
    }
    return [(key, title, body[key]) for key, title in SECTIONS]


def _summary(report: dict) -> str:
    rows = [
        ["mean average precision", _number(report["mean_average_precision"])],
        ["F1, micro (every image-label decision)", _number(report["f1_micro"])],
        ["F1, macro (mean of the labels' F1)", _number(report["f1_macro"])],
    ]
    if "tta_views" in report:
        views = ", ".join(report["tta_views"])
        rows.append(
            [
                f"mean average precision / F1 micro with test-time augmentation (views averaged: {views}; "
                "the export is single-pass)",
                f"{_number(report['mean_average_precision_tta'])} / {_number(report['f1_micro_tta'])}",
            ]
        )
    rows += [
        ["images evaluated", report["num_images"]],
        ["evaluated on", report["evaluated_on"]],
        ["labels", len(report["class_names"])],
    ]
    dataset = report.get("dataset")
    if dataset:
        rows.append(["cross-split duplicates (leakage)", len(dataset["cross_split"])])
    note = _note(
        "A label is predicted where its probability reaches its threshold (see the per-label table); "
        "F1, precision and recall are measured at those thresholds, average precision over all of them."
    )
    return _table(None, rows) + note


def _per_label(report: dict) -> str:
    rows = [
        [
            name,
            _number(values["average_precision"]),
            _number(values["precision"]),
            _number(values["recall"]),
            _number(values["f1"]),
            values["support"],
            _number(values["threshold"]),
        ]
        for name, values in report["per_label"].items()
    ]
    header = ["label", "average precision", "precision", "recall", "F1", "support", "threshold"]
    return _table(header, rows, numeric={1, 2, 3, 4, 5, 6})


def _errors(report: dict) -> str:
    parts = []
    for key, title, empty in (
        ("most_missed", "Most often missed (given, not predicted)", "No label was missed."),
        ("most_added", "Most often added (predicted, not given)", "No label was added."),
    ):
        found = report[key]
        parts.append(f"<h3>{title}</h3>")
        rows = [[entry["label"], entry["count"]] for entry in found]
        parts.append(_table(["label", "images"], rows, numeric={1}) if rows else _note(empty))
    return "".join(parts)


def _top_losses(report: dict, output_dir: str) -> str:
    note = _note("The evaluation images with the highest loss (binary cross-entropy, mean over the labels).")
    rows = [
        [
            entry.get("path", f"image {entry['index']}"),
            ", ".join(entry["given"]) or "none",
            ", ".join(entry["predicted"]) or "none",
            _number(entry["loss"]),
        ]
        for entry in report["top_losses"]
    ]
    table = _table(["image", "given labels", "predicted labels", "loss"], rows, numeric={3})
    return note + _picture(output_dir, "top_losses.png", "Not drawn.") + table
