"""`find_lr`: an exponential learning-rate sweep with a suggestion, as fastai's `lr_find`."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfresnet.files import new_figure, save_figure
from tfresnet.models.classifier import LABEL_SMOOTHING, compile_classifier, is_multi_label, one_hot_labels


def find_lr(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    label_smoothing: float = LABEL_SMOOTHING,
    output_path: str | None = None,
) -> dict:
    """Sweeps Adam's learning rate exponentially over training steps and suggests one.

    One step per rate, from `start_lr` to `end_lr`, stopping early when the loss diverges
    (four times its minimum), under the training recipe (`compile_classifier`). The model's
    weights and compile settings are restored afterwards (an uncompiled model is left
    uncompiled), so the sweep leaves no trace. The suggestion is the rate where the smoothed
    loss falls fastest (the steepest slope against log rate), as fastai's `lr_find` does.

    Args:
        model: A model from `build_classifier`; freeze it as the phase to tune will be.
        dataset: Batches of `(images, int labels)` (multi-hot rows for a multi-label model), e.g.
            `ImageData.train` (repeated as needed).
        start_lr: The first rate.
        end_lr: The last rate.
        steps: The number of rates tried (one training step each).
        label_smoothing: As in training (`fine_tune`'s default).
        output_path: A PNG of loss against rate is written here when given.

    Returns:
        `{"suggested_learning_rate", "learning_rates", "losses"}`.

    Example:
        model = build_classifier(5, image_size=224)
        tfresnet.freeze(model, until=None)  # the head phase
        find_lr(model, data.train, output_path="lr_find.png")["suggested_learning_rate"]
        # 0.0012
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr. Received: start_lr={start_lr}, end_lr={end_lr}")
    if steps < 5:
        raise ValueError(f"steps must be at least 5. Received: steps={steps}")
    saved_weights = model.get_weights()
    compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
    multi_label = is_multi_label(model)
    compile_classifier(
        model, learning_rate=start_lr, label_smoothing=label_smoothing, multi_label=multi_label
    )
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    rates, losses = [], []
    batches = (dataset if multi_label else dataset.map(one_hot_labels(model.output_shape[-1]))).repeat()
    try:
        for step, (images, labels) in zip(range(steps), batches):
            rate = start_lr * factor**step
            model.optimizer.learning_rate = rate
            loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
            rates.append(rate)
            losses.append(loss)
            if not math.isfinite(loss) or loss > 4 * min(losses):
                break
    finally:
        model.set_weights(saved_weights)
        if compile_config:
            model.compile_from_config(compile_config)
        else:  # as it came: fit() asks for compile() rather than train at the sweep's last rate
            model.compiled = False
            model.optimizer = None
    suggested = _steepest_descent(rates, losses)
    if output_path:
        _plot_lr_sweep(rates, losses, suggested, output_path)
    return {"suggested_learning_rate": suggested, "learning_rates": rates, "losses": losses}


def _steepest_descent(rates: list[float], losses: list[float]) -> float:
    """The rate where the exponentially smoothed loss falls fastest against log(rate), before
    the smoothed loss's minimum (past it the sweep only diverges, and at it the next rate
    already does worse)."""
    smoothed, average = [], 0.0
    for i, loss in enumerate(losses):
        average = 0.9 * average + 0.1 * (loss if math.isfinite(loss) else max(losses[:i] or [0.0]))
        smoothed.append(average / (1 - 0.9 ** (i + 1)))
    minimum = int(np.argmin(smoothed))
    if minimum < 2:
        return rates[0]
    slopes = np.gradient(np.array(smoothed[: minimum + 1]), np.log(np.array(rates[: minimum + 1])))
    return float(rates[int(np.argmin(slopes[:minimum]))])


def _plot_lr_sweep(rates: list[float], losses: list[float], suggested: float, path: str) -> None:
    figure = new_figure(6, 4, needed_by="find_lr's plot")
    axes = figure.subplots()
    axes.plot(rates, losses)
    axes.axvline(suggested, color="red", linestyle="--", label=f"suggested {suggested:.2g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
