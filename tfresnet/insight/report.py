"""The evaluation report: `report.json`, the pictures a person would rather see than read, and
`report.html`, one page holding them all.

`write_report` evaluates a model in one pass over a dataset and writes `report.json` (see
`classification_report`, plus the expected calibration error), `confusion_matrix.png`,
`training_curves.png`, `top_losses.png` (with their Grad-CAM heatmaps), `calibration.png` (a
reliability diagram), `gradcam.png` (a few images of each class with their heatmaps) and
`report.html`. The images of the top losses and of each class are kept during that same pass,
so each one is shown with its own prediction even when the dataset reshuffles or re-augments on
every pass; with `tta`, that pass also classifies each image in the views of
`tfresnet.insight.evaluation.TTA_VIEWS`, for `accuracy_tta`. matplotlib is imported only when a plot
is drawn: without it the module imports, and `write_report` writes `report.json` before it
fails at the first plot, saying what to install. A multi-label model's: `multi_label_report`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfresnet.files import new_figure, save_figure, write_json
from tfresnet.insight import calibration, evaluation, label_issues, report_html
from tfresnet.models.classifier import is_multi_label
from tfresnet.paths import join, makedirs, remove

REPORT_FILE = "report.json"
HTML_FILE = report_html.HTML_FILE
TOP_LOSSES = 9
# label_errors.png shows at most this many suspected label errors, among the images of highest
# loss kept during the evaluation pass (TOP_LOSSES + this many).
SUSPECTS_SHOWN = 12
# gradcam.png shows this many images of each class, for this many classes at most.
GRADCAM_PER_CLASS = 3
GRADCAM_CLASSES = 12
GRADCAM_BATCH = 16  # heatmaps computed this many images at a time
# confusion_matrix.png shows at most this many classes (beyond: those most often confused), so
# its size stays bounded whatever the number of classes (report.json keeps the whole matrix).
CONFUSION_CLASSES = 30


def classification_report(
    labels: np.ndarray, probabilities: np.ndarray, class_names: list[str], *, most_confused: int = 5
) -> dict:
    """Accuracy, per-class precision/recall, the confusion matrix and the most-confused pairs.

    Example:
    >>> classification_report(np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]]), ["a", "b"])["accuracy"]
    0.5
    """
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        true_positive = int(matrix[i, i])
        per_class[name] = {
            "precision": true_positive / max(int(matrix[:, i].sum()), 1),
            "recall": true_positive / max(int(matrix[i, :].sum()), 1),
            "support": int(matrix[i, :].sum()),
        }
    errors = matrix * (1 - np.eye(num_classes, dtype=int))
    rows, columns = np.nonzero(errors)
    order = np.argsort(-errors[rows, columns], kind="stable")[:most_confused]  # ties: row order
    off_diagonal = [
        (int(errors[rows[k], columns[k]]), class_names[rows[k]], class_names[columns[k]]) for k in order
    ]
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "num_images": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
        "most_confused": [
            {"true": true, "predicted": guess, "count": count}
            for count, true, guess in off_diagonal[:most_confused]
        ],
    }


def write_report(
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
    temperature: float | None = None,
    tta: bool = False,
    paths: list[str] | None = None,
    thresholds: list[float] | None = None,
) -> dict:
    """Evaluates `model` on `dataset` in one pass and writes the report into `output_dir`.

    For a multi-label model (sigmoid outputs), the report is that of
    `tfresnet.insight.multi_label_report.write_multi_label_report` (mean average precision, F1
    and per-label measures at `thresholds`, precision-recall curves); `calibrate` is then refused.

    Files: `report.json` (see `classification_report`, plus `evaluated_on`,
    `expected_calibration_error` over 15 equal-width bins, `grad_cam` (whether heatmaps could
    be drawn), and `dataset`, `calibration` and `accuracy_tta` when given or asked for),
    `confusion_matrix.png`, `training_curves.png` (with `history`), `top_losses.png` (the
    evaluation images with the highest loss, titled prediction / truth / probability, with the
    Grad-CAM heatmap of the prediction), `calibration.png` (the reliability diagram),
    `gradcam.png` (a few images of each class and their heatmaps; not for a TF Hub backbone),
    `label_errors.png` (the images the model contradicts with high confidence, listed in
    `suspected_label_errors`, see `label_issues.suspected_label_errors`) and `report.html`,
    one self-contained page with all of it.

    Args:
        model: A classifier of raw [0, 255] RGB images.
        dataset: Batches of `(images, int labels)`, e.g. `ImageData.validation`.
        class_names: Label `i` is `class_names[i]`.
        output_dir: Where the files go (created if needed), local or on a store (`gs://...`).
        history: Per-epoch metrics (`FineTuneResult.history`) for the training curves.
        evaluated_on: What `dataset` is, recorded in `report.json` (e.g. `"validation"`, or
            `"training (evaluation transform)"` for a run without a validation set).
        dataset_check: `tfresnet.check_dataset`'s findings, kept under `"dataset"`.
        config: The run's resolved settings (`FineTuneResult.config`), shown in the page.
        calibrate: Fit a temperature on `dataset` (see `tfresnet.insight.calibration`): `"calibration"`
            then holds it and the calibration error before and after; the model is unchanged
            (`calibration.apply_temperature` bakes it in).
        temperature: With `calibrate`, the temperature to report, already fitted on `dataset`
            (default: fitted here).
        tta: Also classify each image in the views of `tfresnet.insight.evaluation.TTA_VIEWS` and
            average their probabilities: `accuracy_tta` (and `tta_views`) then sit beside
            `accuracy`; everything else stays single-pass, as the exported model is.
        paths: The image file of each element of `dataset`, in order (`ImageData.files`): the
            suspected label errors are then named by their files, not only by position.
        thresholds: A multi-label model's decision threshold per label
            (`FineTuneResult.thresholds`; default 0.5 each); None for a single-label model.

    Returns:
        The report's dict.

    Example:
        report = write_report(model, data.validation, data.class_names, "runs/flowers")
        report["expected_calibration_error"]
        # 0.042
    """
    if is_multi_label(model):
        from tfresnet.insight.multi_label_report import write_multi_label_report

        return write_multi_label_report(
            model,
            dataset,
            class_names,
            output_dir,
            history=history,
            evaluated_on=evaluated_on,
            dataset_check=dataset_check,
            config=config,
            calibrate=calibrate or temperature is not None,
            tta=tta,
            paths=paths,
            thresholds=thresholds,
        )
    if thresholds is not None:
        raise ValueError("thresholds apply to a multi-label model (sigmoid outputs): leave them out here.")
    makedirs(output_dir)
    probabilities, labels, kept, samples, tta_probabilities = evaluation.evaluation_pass(
        model, dataset, keep=TOP_LOSSES + SUSPECTS_SHOWN, per_class=GRADCAM_PER_CLASS, tta=tta
    )
    given = probabilities[np.arange(len(labels)), labels]
    top = {i: kept[i] for i in sorted(kept, key=lambda i: given[i])[:TOP_LOSSES]}
    report = {
        **classification_report(labels, probabilities, class_names),
        "evaluated_on": evaluated_on,
        "expected_calibration_error": calibration.expected_calibration_error(probabilities, labels),
        "suspected_label_errors": label_issues.suspected_label_errors(
            probabilities, labels, class_names, paths=paths
        ),
    }
    if tta:
        report["accuracy_tta"] = evaluation.accuracy(tta_probabilities, labels)
        report["tta_views"] = list(evaluation.TTA_VIEWS)
    calibrated = None
    if calibrate:
        report["calibration"], calibrated = _calibrate(probabilities, labels, evaluated_on, temperature)
    samples = {label: samples[label] for label in sorted(samples)[:GRADCAM_CLASSES]}
    heatmaps, report["grad_cam"] = _heatmaps(model, top, samples)
    if dataset_check is not None:
        report["dataset"] = dataset_check
    write_json(join(output_dir, REPORT_FILE), report)
    _plot_confusion_matrix(np.array(report["confusion_matrix"]), class_names, output_dir)
    if history:
        _plot_history(history, output_dir)
    _plot_top_losses(top, probabilities, labels, class_names, output_dir, heatmaps)
    reliability_png = join(output_dir, "calibration.png")
    calibration.plot_reliability(probabilities, labels, calibrated, reliability_png)
    if heatmaps:
        _plot_gradcam(samples, probabilities, labels, class_names, output_dir, heatmaps)
    suspects_png = join(output_dir, label_issues.SUSPECTS_FILE)
    if not label_issues.plot_suspected(
        report["suspected_label_errors"], kept, suspects_png, limit=SUSPECTS_SHOWN
    ):
        remove(suspects_png)  # an older run's, in the same folder
    report_html.write_html(report, output_dir, config=config)
    return report


def _calibrate(
    probabilities: np.ndarray, labels: np.ndarray, evaluated_on: str, temperature: float | None = None
) -> tuple[dict, np.ndarray]:
    """The temperature fitted on these images (unless given), the errors before and after, and
    the new probabilities."""
    if temperature is None:
        temperature = calibration.fit_temperature(probabilities, labels)
    calibrated = calibration.scale_probabilities(probabilities, temperature)
    found = {
        "temperature": temperature,
        "fitted_on": evaluated_on,
        "expected_calibration_error_before": calibration.expected_calibration_error(probabilities, labels),
        "expected_calibration_error_after": calibration.expected_calibration_error(calibrated, labels),
        "negative_log_likelihood_before": calibration.negative_log_likelihood(probabilities, labels),
        "negative_log_likelihood_after": calibration.negative_log_likelihood(calibrated, labels),
    }
    return found, calibrated


def _heatmaps(model: keras.Model, top: dict, samples: dict) -> tuple[dict[int, np.ndarray], dict]:
    """Grad-CAM heatmaps of the kept images by index (of their predicted class), and whether
    they could be computed (with the reason when not)."""
    from tfresnet.insight.gradcam import GradCamUnavailable, grad_cam

    kept = dict(top)
    for images in samples.values():
        kept.update(images)
    if not kept:
        return {}, {"available": False, "reason": "no images"}
    order = sorted(kept)
    try:
        maps = [
            grad_cam(model, np.stack([kept[i] for i in order[start : start + GRADCAM_BATCH]]))
            for start in range(0, len(order), GRADCAM_BATCH)
        ]
    except GradCamUnavailable as error:
        return {}, {"available": False, "reason": str(error)}
    return dict(zip(order, np.concatenate(maps))), {"available": True}


def _figure(width: float, height: float):
    return new_figure(width, height, needed_by=f"The report's plots ({REPORT_FILE} is written already)")


def shown_classes(matrix: np.ndarray, limit: int = CONFUSION_CLASSES) -> np.ndarray:
    """The indices of the classes `confusion_matrix.png` shows: all of them up to `limit`, else
    the `limit` classes with the most errors (as the truth or as the prediction), in label order.

    Example:
    >>> shown_classes(np.array([[5, 0, 0], [3, 1, 0], [0, 0, 4]]), limit=2)
    array([0, 1])
    """
    if len(matrix) <= limit:
        return np.arange(len(matrix))
    errors = matrix - np.diag(np.diag(matrix))
    involved = errors.sum(axis=0) + errors.sum(axis=1)
    return np.sort(np.argsort(-involved, kind="stable")[:limit])


def _plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], output_dir: str) -> None:
    shown = shown_classes(matrix)
    names = [class_names[i] for i in shown]
    size = max(4, 0.5 * len(shown) + 2)
    figure = _figure(size, size)
    axes = figure.subplots()
    axes.imshow(matrix[np.ix_(shown, shown)], cmap="Blues")
    ticks = range(len(shown))
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(shown) < len(class_names):
        axes.set_title(f"the {len(shown)} most confused of {len(class_names)} classes")
    for (i, j), count in np.ndenumerate(matrix[np.ix_(shown, shown)]):
        axes.text(j, i, str(count), ha="center", va="center")
    figure.tight_layout()
    save_figure(figure, join(output_dir, "confusion_matrix.png"))


def _plot_history(history: dict[str, list[float]], output_dir: str, score: str = "accuracy") -> None:
    figure = _figure(10, 4)
    panels = figure.subplots(1, 2)
    for panel, metric in zip(panels, ("loss", score)):
        for key in (metric, f"val_{metric}"):
            if history.get(key):
                panel.plot(range(1, len(history[key]) + 1), history[key], label=key)
        phases = history.get("phase", [])
        if 1 in phases and 2 in phases:
            panel.axvline(phases.count(1) + 0.5, color="gray", linestyle="--", label="fine-tuning starts")
        panel.set_xlabel("epoch")
        panel.set_title(metric)
        panel.legend()
    figure.tight_layout()
    save_figure(figure, join(output_dir, "training_curves.png"))


def _plot_top_losses(
    top: dict[int, np.ndarray],
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    output_dir: str,
    heatmaps: dict[int, np.ndarray],
) -> None:
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0))
    order = sorted(top, key=lambda i: -losses[i])
    columns = 3
    rows = max(1, -(-len(order) // columns))
    figure = _figure(3 * columns, 3.3 * rows)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, i in zip(axes.flat, order):
        guess = int(probabilities[i].argmax())
        _show(axis, top[i], heatmaps.get(i))
        axis.set_title(
            f"{class_names[guess]} / {class_names[labels[i]]} / {probabilities[i, guess]:.2f}", fontsize=9
        )
    heat = ", Grad-CAM of the prediction" if heatmaps else ""
    figure.suptitle(f"highest loss: prediction / truth / probability{heat}")
    figure.tight_layout()
    save_figure(figure, join(output_dir, "top_losses.png"))


def _show(axis, image: np.ndarray, heatmap: np.ndarray | None) -> None:
    """An image, with its Grad-CAM heatmap over it when there is one."""
    axis.imshow(np.clip(image, 0, 255).astype("uint8"))
    if heatmap is not None:
        axis.imshow(heatmap, cmap="jet", alpha=0.4, vmin=0, vmax=1)


def _plot_gradcam(
    samples: dict[int, dict[int, np.ndarray]],
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    output_dir: str,
    heatmaps: dict[int, np.ndarray],
) -> None:
    """A row per class: its first images with the Grad-CAM heatmap of their prediction."""
    rows = max(1, len(samples))
    figure = _figure(2.6 * GRADCAM_PER_CLASS, 2.8 * rows)
    axes = figure.subplots(rows, GRADCAM_PER_CLASS, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row, (label, images) in zip(axes, samples.items()):
        for axis, (i, image) in zip(row, images.items()):
            guess = int(probabilities[i].argmax())
            _show(axis, image, heatmaps.get(i))
            color = "green" if guess == label else "red"
            axis.set_title(
                f"{class_names[label]}: {class_names[guess]} {probabilities[i, guess]:.2f}",
                fontsize=9,
                color=color,
            )
    figure.suptitle("Grad-CAM of the prediction: truth: prediction probability")
    figure.tight_layout()
    save_figure(figure, join(output_dir, "gradcam.png"))
