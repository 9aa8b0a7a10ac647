"""The two-phase fine-tuning recipe, its callbacks, and the choice of distribution strategy.

Phase 1 trains the head with the backbone frozen. Phase 2 unfreezes the backbone from
`freeze_until` and trains on at a lower learning rate with a linear warm-up and a cosine decay.
BatchNormalization stays in inference mode throughout, and the model is recompiled between the
phases here, never by the user.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfresnet.data import ImageData
from tfresnet.freezing import freeze
from tfresnet.models import build_classifier

MIXED_PRECISION = ("auto", "on", "off")
CLASS_WEIGHTS = ("balanced", "none")
# Files kept in `output_dir`.
BEST_WEIGHTS = "best.weights.h5"
HEAD_DONE_WEIGHTS = "head_phase.weights.h5"
BACKUP_DIR = "backup"


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` returns.

    Attributes:
        model: The trained model, holding the weights of its best validation epoch.
        history: Per-epoch metrics of both phases, phase 1 first (`loss`, `accuracy`,
            `val_loss`, `val_accuracy`, `learning_rate`), and `phase` (1 or 2) per epoch.
        class_names: Label `i` is `class_names[i]`.
        config: The resolved settings of the run (what was asked and what "auto" became).
    """

    model: keras.Model
    history: dict[str, list[float]]
    class_names: list[str]
    config: dict


# === Strategy and precision ===


def resolve_strategy() -> tf.distribute.Strategy:
    """Picks the distribution strategy a run on this machine should use.

    `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster (training across
    machines, one process per machine with the same command), `TPUStrategy` when a TPU is
    attached (Colab), `MirroredStrategy` with several GPUs, else the default strategy. Call it
    at the start of a program, before any other TensorFlow work: multi-worker training
    requires it.

    Example:
    >>> strategy = resolve_strategy()
    >>> with strategy.scope():
    ...     model = build_classifier(3, weights=None)
    """
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    with contextlib.suppress(ValueError, tf.errors.NotFoundError, RuntimeError):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def resolve_mixed_precision(mixed_precision: str) -> bool:
    """`"auto"` means on when a GPU is visible; `"on"` and `"off"` are what they say."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision must be one of {MIXED_PRECISION}. Received: mixed_precision={mixed_precision!r}"
        )
    if mixed_precision == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return mixed_precision == "on"


@contextlib.contextmanager
def _precision_policy(mixed: bool):
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# === Recipe pieces ===


def class_weights(class_counts: list[int], mode: str = "balanced") -> dict[int, float] | None:
    """Weights that make every class count as much as the others in the loss.

    Args:
        class_counts: Training images per class.
        mode: `"balanced"` (weight `n / (k * count)`) or `"none"`.

    Example:
    >>> class_weights([30, 10])
    {0: 0.6666666666666666, 1: 2.0}
    """
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}. Received: class_weight={mode!r}")
    if mode == "none":
        return None
    total, k = sum(class_counts), len(class_counts)
    return {i: total / (k * count) for i, count in enumerate(class_counts) if count}


def fine_tune_schedule(
    learning_rate: float, *, steps: int, warmup_steps: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """A linear warm-up from 0 to `learning_rate`, then a cosine decay to 0 at `steps`."""
    warmup_steps = min(warmup_steps, max(steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(steps - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def _one_hot(num_classes: int):
    def convert(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return convert


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Writes the weights beside `path`, then renames them over it."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".weights.h5")
    os.close(handle)
    model.save_weights(temporary, overwrite=True)
    os.replace(temporary, path)


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the best epoch in `path`, written atomically.

    The file is written beside its target, then renamed over it, so an interrupted run never
    leaves a half-written checkpoint where a good one was. One instance spans both phases.
    """

    def __init__(self, path: str, monitor: str = "val_accuracy"):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = -math.inf if "acc" in monitor else math.inf

    def _better(self, value: float) -> bool:
        return value > self.best if "acc" in self.monitor else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self._better(value):
            return
        self.best = float(value)
        save_weights_atomically(self.model, self.path)


def _history_from_csv(path: str) -> dict[str, list[float]]:
    """Reads a CSVLogger file, so a resumed run reports the epochs it did before too."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(float(value))
    return history


# === The recipe ===


def fine_tune(
    data: ImageData,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    head_units: int | None = None,
    dropout: float = 0.2,
    head_epochs: int = 3,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    fine_tune_learning_rate: float | None = None,
    freeze_until: int | str = 0,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    class_weight: str = "balanced",
    mixed_precision: str = "auto",
    jit_compile: bool | str = "auto",
    patience: int | None = 5,
    seed: int | None = None,
    output_dir: str | None = None,
    resume: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
) -> FineTuneResult:
    """Fine-tunes a ResNet50 classifier on `data` with the two-phase recipe.

    1. `head_epochs` epochs of the head alone, the backbone frozen, at `learning_rate`.
    2. `epochs` epochs with the backbone trained from `freeze_until` on (0: all of it), at
       `fine_tune_learning_rate` (default a tenth of `learning_rate`) after a linear warm-up
       of `warmup_epochs`, decaying along a cosine. BatchNormalization stays in inference mode.

    With `output_dir`, the run keeps there: `best.weights.h5` (best validation accuracy, or
    training loss without a validation set, written atomically), `training_log.csv`,
    TensorBoard logs in `logs/`, and a `backup/` from which `resume=True` continues a killed
    run at the epoch it reached. Without `resume`, a previous run's backup is discarded.

    Args:
        data: Training (and validation) batches from `tfresnet.data`.
        backbone: `"resnet50"`, `"resnet50v2"` or `"hub:<handle>"`.
        weights: `"imagenet"`, None or a weights file (see `build_classifier`).
        head_units: Units of an optional hidden layer in the head.
        dropout: Dropout rate before the predictions.
        head_epochs: Epochs of phase 1 (0 skips it).
        epochs: Epochs of phase 2 (0 skips it).
        learning_rate: Adam's learning rate in phase 1.
        fine_tune_learning_rate: Peak learning rate of phase 2; default `learning_rate / 10`.
        freeze_until: Index or name of the first backbone layer trained in phase 2.
        warmup_epochs: Length of phase 2's warm-up, in epochs.
        label_smoothing: Label smoothing of the cross-entropy loss.
        class_weight: `"balanced"` weighs classes by inverse frequency; `"none"`.
        mixed_precision: `"auto"` (on with a GPU), `"on"` or `"off"`.
        jit_compile: XLA compilation: `"auto"`, True or False (as `Model.compile`).
        patience: Early stopping after this many epochs without improvement (None: never).
        seed: Makes initialisation, shuffling and augmentation repeatable.
        output_dir: Where checkpoints and logs go (None: nowhere).
        resume: Continue the run found in `output_dir`.
        strategy: A `tf.distribute` strategy; default `resolve_strategy()`'s choice.
        verbose: Keras's `fit` verbosity; the progress bar by default.

    Returns:
        A `FineTuneResult`.

    Example:
    >>> data = tfresnet.from_folder("flowers/", image_size=224, seed=0)
    >>> result = fine_tune(data, head_epochs=2, epochs=5, output_dir="runs/flowers")
    >>> result.history["val_accuracy"][-1]
    0.93
    """
    for name, value in (("head_epochs", head_epochs), ("epochs", epochs)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0. Received: {name}={value!r}")
    if head_epochs + epochs == 0:
        raise ValueError("Nothing to train: head_epochs and epochs are both 0. Set one of them above 0.")
    for name, value in (
        ("learning_rate", learning_rate),
        ("fine_tune_learning_rate", fine_tune_learning_rate),
    ):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0. Received: {name}={value!r}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
    if resume and not output_dir:
        raise ValueError("resume=True needs the output_dir of the run to continue.")
    weights_by_class = class_weights(data.class_counts, class_weight)
    mixed = resolve_mixed_precision(mixed_precision)
    fine_tune_learning_rate = fine_tune_learning_rate or learning_rate / 10
    strategy = strategy or resolve_strategy()
    if seed is not None:
        keras.utils.set_random_seed(seed)

    config = {
        "backbone": backbone,
        "weights": weights,
        "image_size": data.image_size,
        "head_units": head_units,
        "dropout": dropout,
        "head_epochs": head_epochs,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "fine_tune_learning_rate": fine_tune_learning_rate,
        "freeze_until": freeze_until,
        "warmup_epochs": warmup_epochs,
        "label_smoothing": label_smoothing,
        "class_weight": class_weight,
        "mixed_precision": mixed,
        "jit_compile": jit_compile,
        "patience": patience,
        "seed": seed,
        "class_names": data.class_names,
        "num_train": data.num_train,
        "num_validation": data.num_validation,
        "num_replicas": strategy.num_replicas_in_sync,
    }

    chief = is_chief(strategy)
    run_dir = output_dir if chief else (output_dir and tempfile.mkdtemp(prefix="tfresnet-worker-"))
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        if not resume:
            _remove(run_dir, BACKUP_DIR, HEAD_DONE_WEIGHTS, BEST_WEIGHTS, "log_head.csv", "log_fine_tune.csv")

    num_classes = len(data.class_names)
    train = data.train.map(_one_hot(num_classes))
    validation = data.validation.map(_one_hot(num_classes)) if data.validation is not None else None
    monitor = "val_accuracy" if validation is not None else "loss"
    steps_per_epoch = max(math.ceil(data.num_train / _batch_size(data)), 1)

    with _precision_policy(mixed), strategy.scope():
        model = build_classifier(
            num_classes,
            backbone=backbone,
            weights=weights,
            image_size=data.image_size,
            head_units=head_units,
            dropout=dropout,
        )
        freeze(model, until=freeze_until)  # checks the index or name before any training
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]

        best = BestCheckpoint(os.path.join(run_dir, BEST_WEIGHTS), monitor) if run_dir else None
        history: dict[str, list[float]] = {}

        def callbacks(phase: str) -> list[keras.callbacks.Callback]:
            found = [best] if best else []
            if patience is not None and monitor.startswith("val_"):
                found.append(keras.callbacks.EarlyStopping(monitor, patience=patience, mode="max"))
            if run_dir:
                found += [
                    keras.callbacks.BackupAndRestore(
                        os.path.join(run_dir, BACKUP_DIR, phase), double_checkpoint=True
                    ),
                    keras.callbacks.CSVLogger(os.path.join(run_dir, f"log_{phase}.csv"), append=resume),
                    keras.callbacks.TensorBoard(os.path.join(run_dir, "logs", phase)),
                ]
            return found

        def run_phase(phase: str, phase_epochs: int, optimizer: keras.optimizers.Optimizer) -> None:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                _work_around_multi_worker_fit(model)
            fitted = model.fit(
                train,
                validation_data=validation,
                epochs=phase_epochs,
                class_weight=weights_by_class,
                callbacks=callbacks(phase),
                verbose=verbose,
            )
            done = {k: [float(v) for v in values] for k, values in fitted.history.items()}
            if run_dir:  # a resumed phase logged its earlier epochs too
                done = _history_from_csv(os.path.join(run_dir, f"log_{phase}.csv")) or done
            _extend(history, done, phase=1 if phase == "head" else 2)

        head_done = run_dir and resume and os.path.exists(os.path.join(run_dir, HEAD_DONE_WEIGHTS))
        if head_epochs and not head_done:
            freeze(model, until=None)
            run_phase("head", head_epochs, keras.optimizers.Adam(learning_rate))
            if run_dir:
                save_weights_atomically(model, os.path.join(run_dir, HEAD_DONE_WEIGHTS))
        elif head_done:
            model.load_weights(os.path.join(run_dir, HEAD_DONE_WEIGHTS))
            _extend(history, _history_from_csv(os.path.join(run_dir, "log_head.csv")), phase=1)

        if epochs:
            freeze(model, until=freeze_until)
            schedule = fine_tune_schedule(
                fine_tune_learning_rate,
                steps=epochs * steps_per_epoch,
                warmup_steps=round(warmup_epochs * steps_per_epoch),
            )
            run_phase("fine_tune", epochs, keras.optimizers.Adam(schedule))

        if best and os.path.exists(best.path):
            model.load_weights(best.path)
        if run_dir:  # finished: nothing left to resume
            _remove(run_dir, BACKUP_DIR, HEAD_DONE_WEIGHTS)

    if run_dir and chief:
        with open(os.path.join(run_dir, "config.json"), "w") as file:
            json.dump(config, file, indent=2, default=str)
    return FineTuneResult(model=model, history=history, class_names=list(data.class_names), config=config)


def _work_around_multi_worker_fit(model: keras.Model) -> None:
    """Lets Keras 3's `fit()` run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    Keras 3 averages one batch across workers eagerly to build the model, which that strategy
    cannot do, and averages each step's scalar logs "along axis 0", which scalars lack. The
    model and optimizer are built here instead (fit() runs inside `strategy.scope()`, where
    Keras finds the strategy), and the step logs get a batch axis of length 1.
    """
    model.optimizer.build(model.trainable_variables)
    model._distribute_strategy = None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def with_batch_axis(data, step=step):
            return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

        setattr(model, name, with_batch_axis)


def _extend(history: dict[str, list[float]], epochs: dict[str, list[float]], phase: int) -> None:
    for key, values in epochs.items():
        history.setdefault(key, []).extend(values)
    history.setdefault("phase", []).extend([phase] * len(epochs.get("loss", [])))


def _remove(directory: str, *names: str) -> None:
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _batch_size(data: ImageData) -> int:
    if data.batch_size:
        return data.batch_size
    for images, _ in data.train.take(1):
        return int(images.shape[0])
    raise ValueError("The training set is empty: no batch could be read from it.")


# === Learning-rate finder ===


def find_lr(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    label_smoothing: float = 0.0,
    output_path: str | None = None,
) -> dict:
    """Sweeps Adam's learning rate exponentially over training steps and suggests one.

    One step per rate, from `start_lr` to `end_lr`, stopping early when the loss diverges
    (four times its minimum). The model's weights and compile settings are restored
    afterwards, so the sweep leaves no trace. The suggestion is the rate where the smoothed
    loss falls fastest (the steepest slope against log rate), as fastai's `lr_find` does.

    Args:
        model: A model from `build_classifier`; freeze it as the phase to tune will be.
        dataset: Batches of `(images, int labels)`, e.g. `ImageData.train` (repeated as needed).
        start_lr: The first rate.
        end_lr: The last rate.
        steps: The number of rates tried (one training step each).
        label_smoothing: As in training.
        output_path: A PNG of loss against rate is written here when given.

    Returns:
        `{"suggested_learning_rate", "learning_rates", "losses"}`.

    Example:
    >>> model = build_classifier(5, image_size=224)
    >>> find_lr(model, data.train, output_path="lr_find.png")["suggested_learning_rate"]
    0.0012
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr. Received: start_lr={start_lr}, end_lr={end_lr}")
    if steps < 5:
        raise ValueError(f"steps must be at least 5. Received: steps={steps}")
    saved_weights = model.get_weights()
    compile_config = model.get_compile_config() if getattr(model, "compiled", False) else None
    optimizer = keras.optimizers.Adam(start_lr)
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing))
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    rates, losses = [], []
    batches = dataset.map(_one_hot(model.output_shape[-1])).repeat()
    try:
        for step, (images, labels) in zip(range(steps), batches):
            rate = start_lr * factor**step
            optimizer.learning_rate = rate
            loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
            rates.append(rate)
            losses.append(loss)
            if not math.isfinite(loss) or loss > 4 * min(losses):
                break
    finally:
        model.set_weights(saved_weights)
        if compile_config:
            model.compile_from_config(compile_config)
    suggested = _steepest_descent(rates, losses)
    if output_path:
        _plot_lr_sweep(rates, losses, suggested, output_path)
    return {"suggested_learning_rate": suggested, "learning_rates": rates, "losses": losses}


def _steepest_descent(rates: list[float], losses: list[float]) -> float:
    """The rate where the exponentially smoothed loss falls fastest against log(rate)."""
    smoothed, average = [], 0.0
    for i, loss in enumerate(losses):
        average = 0.9 * average + 0.1 * (loss if math.isfinite(loss) else max(losses[:i] or [0.0]))
        smoothed.append(average / (1 - 0.9 ** (i + 1)))
    end = int(np.argmin(smoothed)) + 1  # the sweep's tail past the minimum only diverges
    if end < 3:
        return rates[max(end - 1, 0)]
    slopes = np.gradient(np.array(smoothed[:end]), np.log(np.array(rates[:end])))
    return float(rates[int(np.argmin(slopes))])


def _plot_lr_sweep(rates: list[float], losses: list[float], suggested: float, path: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot(rates, losses)
    axes.axvline(suggested, color="red", linestyle="--", label=f"suggested {suggested:.2g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
