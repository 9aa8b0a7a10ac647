"""The evaluation report of a multi-label classifier (sigmoid outputs): what `write_report` writes
for a model that `tfresnet.models.is_multi_label` recognises.

One pass over the dataset gives each image's probabilities (and, with `tta`, their average over
the views of `tfresnet.insight.evaluation.TTA_VIEWS`) and keeps the images of highest loss (the
binary cross-entropy, mean over the labels), so each is shown with its own prediction even when
the dataset reshuffles. Files: `report.json` (see `multi_label_report`, plus `evaluated_on`,
`top_losses`, and `dataset` and the `_tta` measures when given or asked for),
`training_curves.png` (loss and mean average precision, with a history), `pr_curves.png` (each
label's precision-recall curve, its threshold's point marked), `top_losses.png` (the images with
their given and predicted label sets) and `report.html`. Temperature scaling is single-label only.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfresnet.files import save_figure, write_json
from tfresnet.insight import calibration, evaluation, multi_label_metrics, report_html
from tfresnet.insight.report import REPORT_FILE, TOP_LOSSES, _figure, _plot_history
from tfresnet.models.classifier import MEAN_AVERAGE_PRECISION
from tfresnet.models.thresholds import apply_thresholds
from tfresnet.paths import join, makedirs

PR_CURVES_FILE = "pr_curves.png"
# pr_curves.png draws at most this many labels (beyond: those with the most images).
PR_CURVE_LABELS = 12
# most_missed and most_added list this many labels at most.
MOST_ERRORS = 5


def multi_label_report(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    thresholds: list[float] | None = None,
    *,
    most: int = MOST_ERRORS,
) -> dict:
    """The measures of a multi-label classifier at its thresholds (see
    `tfresnet.insight.multi_label_metrics`).

    Args:
        labels: `(images, labels)` multi-hot rows.
        probabilities: `(images, labels)` sigmoid probabilities.
        class_names: Label `j` is `class_names[j]`.
        thresholds: One decision threshold per label (default: 0.5 each).
        most: `most_missed` and `most_added` list this many labels at most.

    Returns:
        `{"multi_label": True, "mean_average_precision", "f1_micro", "f1_macro", "num_images",
        "per_label", "class_names", "thresholds", "most_missed", "most_added"}`: `per_label` maps
        each label to its `average_precision`, `precision`, `recall`, `f1`, `support` and
        `threshold`; `most_missed` (`most_added`) lists `{"label", "count"}`, the labels most
        often given but not predicted (predicted but not given).

    Example:
    >>> found = multi_label_report(np.array([[1, 0], [1, 1]]), np.array([[0.9, 0.6], [0.3, 0.8]]), ["a", "b"])
    >>> found["f1_micro"], found["most_missed"], found["most_added"]
    (0.6666666666666666, [{'label': 'a', 'count': 1}], [{'label': 'b', 'count': 1}])
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(class_names):
        raise ValueError(
            f"The model gives {probabilities.shape[1:]} probabilities per image for {len(class_names)} "
            f"class names. Pass the class names the model was trained on."
        )
    found = multi_label_metrics.label_scores(probabilities, labels, thresholds)
    thresholds = [entry["threshold"] for entry in found["per_label"]]
    predicted = apply_thresholds(probabilities, thresholds)
    return {
        "multi_label": True,
        **{key: found[key] for key in multi_label_metrics.SUMMARY_KEYS},
        "num_images": int(len(probabilities)),
        "per_label": dict(zip(class_names, found["per_label"])),
        "class_names": list(class_names),
        "thresholds": thresholds,
        **multi_label_metrics.most_missed_and_added(labels, predicted, class_names, most=most),
    }


def write_multi_label_report(
    model: keras.Model,
    dataset: tf.data.Dataset,
    class_names: list[str],
    output_dir: str,
    *,
    history: dict[str, list[float]] | None = None,
    evaluated_on: str = "validation",
    dataset_check: dict | None = None,
    config: dict | None = None,
    calibrate: bool = False,
    tta: bool = False,
    paths: list[str] | None = None,
    thresholds: list[float] | None = None,
) -> dict:
    """Evaluates a multi-label `model` on `dataset` in one pass and writes its report into
    `output_dir` (the files: see the module's docstring). `write_report` calls it for a
    multi-label model; its arguments are `write_report`'s (`calibrate` is refused).

    Returns:
        The report's dict.

    Example:
        report = write_multi_label_report(model, data.validation, data.class_names, "runs/x",
                                          thresholds=result.thresholds)
        report["mean_average_precision"], report["per_label"]["road"]["f1"]
        # (0.81, 0.77)
    """
    if calibrate:
        raise ValueError(calibration.SINGLE_LABEL_ONLY)
    makedirs(output_dir)
    probabilities, labels, kept, _, tta_probabilities = evaluation.evaluation_pass(
        model, dataset, keep=TOP_LOSSES, tta=tta
    )
    if labels.shape[1] != len(class_names):
        raise ValueError(
            f"The dataset's labels are rows of {labels.shape[1]} for {len(class_names)} class names. "
            "Pass the class names of the data (ImageData.class_names)."
        )
    report = multi_label_report(labels, probabilities, class_names, thresholds)
    if tta:
        scores = multi_label_metrics.label_scores(tta_probabilities, labels, report["thresholds"])
        report.update({f"{key}_tta": scores[key] for key in multi_label_metrics.SUMMARY_KEYS})
        report["tta_views"] = list(evaluation.TTA_VIEWS)
    report["evaluated_on"] = evaluated_on
    report["top_losses"] = _top_losses(probabilities, labels, report, sorted(kept), paths)
    if dataset_check is not None:
        report["dataset"] = dataset_check
    write_json(join(output_dir, REPORT_FILE), report)
    if history:
        _plot_history(history, output_dir, score=MEAN_AVERAGE_PRECISION)
    _plot_pr_curves(probabilities, labels, report, output_dir)
    _plot_top_losses(report["top_losses"], kept, output_dir)
    report_html.write_html(report, output_dir, config=config)
    return report


def _names(row: np.ndarray, class_names: list[str]) -> list[str]:
    return [class_names[j] for j in np.flatnonzero(row)]


def _top_losses(
    probabilities: np.ndarray, labels: np.ndarray, report: dict, indices: list[int], paths: list[str] | None
) -> list[dict]:
    """The images at `indices`, highest loss first: their loss, given and predicted label sets."""
    names = report["class_names"]
    losses = multi_label_metrics.image_losses(probabilities, labels)
    predicted = apply_thresholds(probabilities, report["thresholds"])
    return [
        {
            "index": int(i),
            **({"path": paths[i]} if paths is not None else {}),
            "loss": float(losses[i]),
            "given": _names(labels[i] > 0, names),
            "predicted": _names(predicted[i], names),
        }
        for i in sorted(indices, key=lambda i: (-losses[i], i))
    ]


def shown_labels(supports: list[int], limit: int = PR_CURVE_LABELS) -> list[int]:
    """The labels `pr_curves.png` draws: all of them up to `limit`, else the `limit` labels with
    the most images, in label order.

    Example:
    >>> shown_labels([5, 1, 9, 3], limit=2)
    [0, 2]
    """
    order = np.argsort(-np.asarray(supports), kind="stable")[:limit]
    return sorted(int(j) for j in order)


def _plot_pr_curves(probabilities: np.ndarray, labels: np.ndarray, report: dict, output_dir: str) -> None:
    """A panel per label: its precision-recall curve, the point of its threshold marked."""
    names = report["class_names"]
    shown = shown_labels([report["per_label"][name]["support"] for name in names])
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    figure = _figure(3.2 * columns, 3.1 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat[len(shown) :]:
        axis.axis("off")
    for axis, j in zip(axes.flat, shown):
        entry = report["per_label"][names[j]]
        if entry["support"]:
            curve = multi_label_metrics.precision_recall_points(probabilities[:, j], labels[:, j])
            precision, recall = curve[0], curve[1]
            axis.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre")
            marked = f"threshold {entry['threshold']:.2f}"
            axis.plot(entry["recall"], entry["precision"], "o", color="red", label=marked)
            axis.legend(loc="lower left", fontsize=7)
            title = f"{names[j]}: AP {entry['average_precision']:.2f} ({entry['support']} images)"
            axis.set_title(title, fontsize=9)
        else:
            axis.set_title(f"{names[j]}: no image has it", fontsize=9)
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.05)
        axis.set_xlabel("recall")
        axis.set_ylabel("precision")
    shown_of = f" (the {len(shown)} most frequent of {len(names)} labels)" if len(shown) < len(names) else ""
    figure.suptitle(f"precision-recall curves{shown_of}")
    figure.tight_layout()
    save_figure(figure, join(output_dir, PR_CURVES_FILE))


def _plot_top_losses(entries: list[dict], images: dict[int, np.ndarray], output_dir: str) -> None:
    columns = 3
    rows = max(1, -(-len(entries) // columns))
    figure = _figure(3 * columns, 3.4 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, entry in zip(axes.flat, entries):
        axis.imshow(np.clip(images[entry["index"]], 0, 255).astype("uint8"))
        given = ", ".join(entry["given"]) or "none"
        predicted = ", ".join(entry["predicted"]) or "none"
        axis.set_title(f"given: {given}\npredicted: {predicted}", fontsize=8)
    figure.suptitle("highest loss (binary cross-entropy): given / predicted labels")
    figure.tight_layout()
    save_figure(figure, join(output_dir, "top_losses.png"))
