"""How far a classifier's probabilities can be trusted, and temperature scaling to mend them.

`expected_calibration_error` measures the gap between confidence and accuracy (15 equal-width
bins of the top probability); `reliability_bins` gives the points of a reliability diagram.
`fit_temperature` finds the temperature T that minimises the negative log-likelihood of
`softmax(log(p) / T)` on held-out images (Guo et al., 2017), and `apply_temperature` bakes it
into a classifier: the kernel and bias of its final softmax layer are divided by T, so the model
(and every export of it) outputs the calibrated probabilities, with the same predicted labels and
no extra layer to register. `plot_reliability` draws the reliability diagram of the report.

Temperature scaling is single-label only: a multi-label model's sigmoid outputs have no softmax
to scale, and its labels are multi-hot rows, which these functions refuse.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from tfresnet.files import new_figure, save_figure

CALIBRATION_BINS = 15
# The temperature is searched in this range (a perfectly separated set pushes it to the bottom).
TEMPERATURE_RANGE = (0.05, 20.0)
_TINY = 1e-30
SINGLE_LABEL_ONLY = (
    "Calibration (temperature scaling, --calibrate) is single-label only: a multi-label model's "
    "sigmoid outputs have no softmax to scale. Leave calibration out for a multi-label model."
)


def _check(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(f"{SINGLE_LABEL_ONLY} Received: multi-hot labels of shape {labels.shape}")
    labels = labels.astype(int)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or not len(labels):
        raise ValueError(
            f"Expected probabilities of shape (images, classes) and one label per image. Received "
            f"probabilities of shape {probabilities.shape} and {len(labels)} labels."
        )
    return probabilities, labels


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Per confidence bin (equal widths over [0, 1]): images, mean confidence, accuracy.

    An image falls in the bin holding its top probability (the upper edge included); empty
    bins have confidence and accuracy NaN.

    Example:
    >>> reliability_bins(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 0]), bins=2)["accuracy"]
    [nan, 0.5]
    """
    probabilities, labels = _check(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return {
        "edges": np.linspace(0, 1, bins + 1).tolist(),
        "count": counts.tolist(),
        "confidence": mean_confidence.tolist(),
        "accuracy": accuracy.tolist(),
    }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """The expected calibration error: `sum_b (n_b / n) |accuracy_b - confidence_b|`.

    Example:
    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 1]))
    0.45
    """
    found = reliability_bins(probabilities, labels, bins)
    counts = np.array(found["count"])
    gaps = np.abs(np.array(found["accuracy"]) - np.array(found["confidence"]))
    return float(np.nansum(counts * gaps) / counts.sum())


def scale_probabilities(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """`softmax(log(probabilities) / temperature)`: what the calibrated model outputs.

    Example:
    >>> scale_probabilities(np.array([[0.8, 0.2]]), 2.0).round(3)
    array([[0.667, 0.333]])
    """
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), _TINY)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under the temperature-scaled probabilities."""
    probabilities, labels = _check(probabilities, labels)
    scaled = scale_probabilities(probabilities, temperature)
    return float(-np.log(np.maximum(scaled[np.arange(len(labels)), labels], _TINY)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, *, tolerance: float = 1e-5) -> float:
    """The temperature minimising the negative log-likelihood of `labels` (a golden-section
    search over log T in `TEMPERATURE_RANGE`: the likelihood is unimodal in it).

    Args:
        probabilities: The model's probabilities on held-out images, (images, classes).
        labels: Their true labels.
        tolerance: Stop when the bracket of log T is narrower than this.

    Returns:
        T: above 1 softens over-confident probabilities, below 1 sharpens timid ones.

    Example:
    >>> sure = np.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99], [0.99, 0.01]])
    >>> round(fit_temperature(sure, np.array([0, 0, 1, 1])), 2)  # one in four wrong: softer
    4.18
    """
    probabilities, labels = _check(probabilities, labels)
    low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_temperature: float) -> float:
        return negative_log_likelihood(probabilities, labels, float(np.exp(log_temperature)))

    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    while high - low > tolerance:
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(np.exp((low + high) / 2))


@contextlib.contextmanager
def temperature_applied(model: keras.Model, temperature: float | None):
    """`apply_temperature` inside the block only: afterwards the final layer holds its own
    weights again, exactly (None: the block runs on the model as it is).

    Example:
        with temperature_applied(model, 1.7):
            export_saved_model(model, "models/flowers/1", class_names=names)  # calibrated
    """
    if temperature is None:
        yield model
        return
    kept = model.layers[-1].get_weights()
    apply_temperature(model, temperature)
    try:
        yield model
    finally:
        model.layers[-1].set_weights(kept)


def apply_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """Divides the logits of `model`'s final softmax layer by `temperature`, in place.

    The layer (`"predictions"` in every tfresnet classifier) computes `softmax(x W + b)`; with
    `W / T` and `b / T` it computes `softmax((x W + b) / T)`, exactly the temperature-scaled
    probabilities, so `export_saved_model` then exports calibrated probabilities. The
    predicted labels do not change. Apply it once, to the trained weights.

    Returns:
        `model`, for chaining.

    Example:
        apply_temperature(result.model, fit_temperature(probabilities, labels))
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature!r}")
    layer = model.layers[-1]
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if activation == "sigmoid":
        raise ValueError(SINGLE_LABEL_ONLY)
    if not isinstance(layer, keras.layers.Dense) or activation != "softmax" or not layer.use_bias:
        raise ValueError(
            f"apply_temperature needs a model ending in a Dense softmax layer with a bias (as "
            f"tfresnet.build_classifier builds). Received a model ending in {layer.name!r} "
            f"({type(layer).__name__}, activation {activation!r})."
        )
    layer.kernel.assign(layer.kernel / temperature)
    layer.bias.assign(layer.bias / temperature)
    return model


def plot_reliability(
    probabilities: np.ndarray, labels: np.ndarray, calibrated: np.ndarray | None, path: str
) -> None:
    """Draws the reliability diagram into the PNG `path`: accuracy against confidence per bin,
    and how many images each holds (with `calibrated` probabilities beside, when given).

    Example:
        plot_reliability(probabilities, labels, None, "runs/flowers/calibration.png")
    """
    figure = new_figure(6, 6.5, needed_by="The report's plots (report.json is written already)")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    curves = [("model", probabilities)] + ([("calibrated", calibrated)] if calibrated is not None else [])
    width = 1 / CALIBRATION_BINS
    for offset, (name, values) in enumerate(curves):
        bins = reliability_bins(values, labels)
        centers = np.array(bins["edges"][:-1]) + width / 2
        error = expected_calibration_error(values, labels)
        shift = (offset - (len(curves) - 1) / 2) * width / len(curves)
        top.bar(
            centers + shift,
            np.nan_to_num(bins["accuracy"]),
            width / len(curves),
            alpha=0.7,
            label=f"{name} (ECE {error:.3f})",
        )
        bottom.bar(centers + shift, bins["count"], width / len(curves), alpha=0.7)
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title("reliability diagram (15 bins of the top probability)")
    top.legend(loc="upper left")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    save_figure(figure, path)
