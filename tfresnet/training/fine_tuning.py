"""The two-phase fine-tuning recipe and the callbacks that make a run resumable.

Phase 1 trains the head with the backbone frozen. Phase 2 unfreezes the backbone from
`freeze_until` and trains on at a lower learning rate with a linear warm-up and a cosine decay.
BatchNormalization stays in inference mode throughout, and the model is recompiled between the
phases here (through `compile_classifier`, the one recipe), never by the user.

A run with an `output_dir` keeps there what lets a killed run continue with `resume=True`
(see `tfresnet.training.run_files`): resumed with the same settings, it continues at the epoch after the
last one it finished, with that epoch's weights and optimizer state; only its data order
differs from an uninterrupted run's. Resuming a finished run trains nothing more.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import keras
import tensorflow as tf

from tfresnet import paths
from tfresnet.data import ImageData
from tfresnet.files import copy_atomically, write_json
from tfresnet.models.backbones import eval_crop_fraction
from tfresnet.models.classifier import build_classifier, compile_classifier
from tfresnet.models.freezing import freeze
from tfresnet.training.checkpoints import BestCheckpoint, read_log
from tfresnet.training.distribute import (
    is_chief,
    precision_policy,
    resolve_mixed_precision,
    resolve_strategy,
    strategy_name,
    work_around_multi_worker_fit,
)
from tfresnet.training.run_files import (
    BACKUP_DIR,
    BEST_WEIGHTS,
    CONFIG_FILE,
    DONE_FILE,
    HEAD_DONE_WEIGHTS,
    LOG_FILE,
    check_workers_agree,
    extend_history,
    finished_run,
    history_rows,
    phase_backup,
    phase_callbacks,
    recorded_settings,
    remove,
    run_folder,
)
from tfresnet.training.run_identity import run_identity
from tfresnet.training.settings import PHASES, RunSettings, fine_tune_schedule, steps_per_epoch
from tfresnet.training.targets import loss_labels, monitor, run_thresholds, weights_facts
from tfresnet.training.worker_data import images_per_worker, mixed_batches, training_input


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` returns.

    Attributes:
        model: The trained model, holding the weights of its best epoch.
        history: Per-epoch metrics of both phases, phase 1 first (`loss`, `accuracy`, and
            with a validation set `val_loss`, `val_accuracy`), and `phase` (1 or 2) per epoch.
        class_names: Label `i` is `class_names[i]`.
        config: The resolved settings of the run (what was asked and what "auto" became).
        thresholds: A multi-label run's decision threshold per label, chosen on the validation
            set (`tfresnet.models.choose_thresholds`; 0.5 without one); None for single-label.
    """

    model: keras.Model
    history: dict[str, list[float]]
    class_names: list[str]
    config: dict
    thresholds: list[float] | None = None


# === The recipe ===


def fine_tune(
    data: ImageData,
    *,
    backbone: str = RunSettings.backbone,
    weights: str | None = RunSettings.weights,
    head_units: int | None = RunSettings.head_units,
    dropout: float = RunSettings.dropout,
    head_epochs: int = RunSettings.head_epochs,
    epochs: int = RunSettings.epochs,
    learning_rate: float = RunSettings.learning_rate,
    fine_tune_learning_rate: float | None = RunSettings.fine_tune_learning_rate,
    freeze_until: int | str = RunSettings.freeze_until,
    warmup_epochs: float = RunSettings.warmup_epochs,
    label_smoothing: float = RunSettings.label_smoothing,
    class_weight: str = RunSettings.class_weight,
    mixup: float = RunSettings.mixup,
    cutmix: float = RunSettings.cutmix,
    ema: bool = RunSettings.ema,
    ema_momentum: float = RunSettings.ema_momentum,
    mixed_precision: str = RunSettings.mixed_precision,
    jit_compile: bool | str = RunSettings.jit_compile,
    patience: int | None = RunSettings.patience,
    seed: int | None = RunSettings.seed,
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

    With `mixup` / `cutmix`, training batches are mixed in the input pipeline (see
    `training_batches`). With `ema`, the optimizer of the last phase (the fine-tuning one, or
    the head phase alone when `epochs=0`) keeps a moving average of the weights: validation,
    the best checkpoint and so the returned model hold the averaged weights. The head phase
    trains a new head from random weights, which an average over its few hundred steps would
    hold near where it started; so it is not averaged.

    Multi-label data (`ImageData.multi_label`, e.g. `from_csv(..., multi_label=True)`) trains a
    sigmoid per label on binary cross-entropy (label smoothing towards 0.5, `class_weight`
    balancing each label's positives and negatives), watches validation mean average precision,
    and then chooses each label's threshold on the validation set (`FineTuneResult.thresholds`,
    recorded in `config.json`, carried into the exports).

    The best epoch is the one with the best validation accuracy (mean average precision for
    multi-label data; the lowest training loss without a validation set); the returned model
    holds its weights. With `output_dir`, the
    run keeps there the files listed in this module's documentation, TensorBoard logs in
    `logs/` and `config.json`; `resume=True` continues a killed run where it stopped, and a
    finished one without training. Without `resume`, a previous run's state is discarded.
    With `seed`, Keras's global seeds are set (`keras.utils.set_random_seed`).

    Args:
        data: Training (and validation) batches from `tfresnet.data`.
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"`.
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
        class_weight: `"balanced"` weighs classes by inverse frequency (multi-label: each
            label's positives and negatives); `"none"`.
        mixup: MixUp's alpha on training batches (0: off).
        cutmix: CutMix's alpha on training batches (0: off; with both, one per batch).
        ema: Keep and use an exponential moving average of the weights (see above).
        ema_momentum: The average's momentum per step.
        mixed_precision: `"auto"` (on with a GPU), `"on"` or `"off"`.
        jit_compile: XLA compilation: `"auto"`, True or False (as `Model.compile`).
        patience: Early stopping after this many epochs without improvement (None: never).
        seed: Makes initialisation, shuffling and augmentation repeatable.
        output_dir: Where checkpoints and logs go (None: nowhere).
        resume: Continue the run found in `output_dir`.
        strategy: A `tf.distribute` strategy; default `resolve_strategy()`'s choice. Under a
            `MultiWorkerMirroredStrategy`, each worker reads only its share of the training
            files, with the steps per epoch of one machine (`tfresnet.training.worker_data`).
        verbose: Keras's `fit` verbosity; the progress bar by default.

    Returns:
        A `FineTuneResult`.

    Example:
        data = tfresnet.from_folder("flowers/", image_size=224, seed=0)
        result = fine_tune(data, head_epochs=2, epochs=5, output_dir="runs/flowers")
        result.history["val_accuracy"][-1]
        # 0.93
    """
    settings = RunSettings(
        backbone=backbone,
        weights=weights,
        head_units=head_units,
        dropout=dropout,
        head_epochs=head_epochs,
        epochs=epochs,
        learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate,
        freeze_until=freeze_until,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        class_weight=class_weight,
        mixup=mixup,
        cutmix=cutmix,
        ema=ema,
        ema_momentum=ema_momentum,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        patience=patience,
        seed=seed,
    )
    settings.check()
    if resume and not output_dir:
        raise ValueError("resume=True needs the output_dir of the run to continue.")
    _warn_if_crop_differs(data, backbone, weights)
    strategy = strategy or resolve_strategy()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return _run(data, settings, output_dir=output_dir, resume=resume, strategy=strategy, verbose=verbose)


def _run(
    data: ImageData,
    settings: RunSettings,
    *,
    output_dir: str | None,
    resume: bool,
    strategy: tf.distribute.Strategy,
    verbose,
) -> FineTuneResult:
    """Trains (or, for a finished run, restores) in the run folder; records `config.json`."""
    facts = _run_facts(data, strategy, settings)
    identity = run_identity(data, ema=settings.ema, **settings.model)
    with (
        run_folder(output_dir, strategy, resume, identity) as run_dir,
        precision_policy(facts["mixed_precision"]),
        strategy.scope(),
    ):
        if run_dir and resume and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            check_workers_agree(strategy, run_dir, output_dir)
        finished = bool(run_dir and resume and paths.exists(paths.join(run_dir, DONE_FILE)))
        if run_dir and resume:
            settings = recorded_settings(run_dir, settings, finished=finished)
            facts = _run_facts(data, strategy, settings)
        elif run_dir and is_chief(strategy):  # what a resume reads back
            write_json(paths.join(run_dir, CONFIG_FILE), {**settings.to_json(), **facts})
        model = build_classifier(
            len(data.class_names), image_size=data.image_size, multi_label=data.multi_label, **settings.model
        )
        freeze(model, until=settings.freeze_until)  # checks the index or name before any training
        if finished:
            history, best_epoch = finished_run(model, run_dir, settings)
        else:
            history, best_epoch = _train(
                model,
                data,
                settings,
                facts,
                run_dir=run_dir,
                resume=resume,
                strategy=strategy,
                verbose=verbose,
            )
        thresholds = run_thresholds(model, data)
        config = {
            **settings.to_json(),
            **facts,
            "jit_compile": bool(model.jit_compile),
            "best_epoch": best_epoch,
            "thresholds": thresholds,
        }
        if run_dir and is_chief(strategy):
            write_json(paths.join(run_dir, CONFIG_FILE), config)
    return FineTuneResult(
        model=model, history=history, class_names=list(data.class_names), config=config, thresholds=thresholds
    )


def _run_facts(data: ImageData, strategy: tf.distribute.Strategy, settings: RunSettings) -> dict:
    """What the run learned of the data and the machine, and what its settings came to, as
    `config.json` records them beside the settings."""
    return {
        "image_size": data.image_size,
        "crop_fraction": data.crop_fraction,
        "class_names": data.class_names,
        "multi_label": data.multi_label,
        "num_train": data.num_train,
        "num_validation": data.num_validation,
        **weights_facts(data, settings.class_weight),
        "steps_per_epoch": steps_per_epoch(data),
        "images_per_worker": images_per_worker(data, strategy),
        "fine_tune_rate": settings.fine_tune_rate,
        "averaged_phase": settings.averaged_phase,
        "mixed_precision": resolve_mixed_precision(settings.mixed_precision),
        "strategy": strategy_name(strategy),
        "num_replicas": strategy.num_replicas_in_sync,
    }


def _warn_if_crop_differs(data: ImageData, backbone: str, weights: str | None) -> None:
    """Warns when pretrained weights were evaluated at another central crop than the data's."""
    if weights is None:
        return
    expected = eval_crop_fraction(backbone, weights)
    if not math.isclose(data.crop_fraction, expected, rel_tol=1e-6):
        warnings.warn(
            f"The data is evaluated at a central crop of {data.crop_fraction:.4f} of the shorter side, and "
            f"weights={weights!r} were evaluated at {expected:.4f}. To evaluate and serve as their authors "
            f"did, load the data with crop_fraction=tfresnet.eval_crop_fraction({backbone!r}, {weights!r}).",
            stacklevel=3,
        )


def training_batches(
    data: ImageData, *, mixup: float = 0.0, cutmix: float = 0.0, seed: int | None = None
) -> tf.data.Dataset:
    """The batches `fine_tune` trains on: `data.train` with one-hot labels (multi-hot rows for
    multi-label data), mixed as asked.

    Example:
        tfresnet.show_batch(training_batches(data, mixup=0.2), data.class_names, "batch.png")
    """
    return mixed_batches(data.train, data, mixup=mixup, cutmix=cutmix, seed=seed)


def _train(
    model: keras.Model,
    data: ImageData,
    settings: RunSettings,
    facts: dict,
    *,
    run_dir: str | None,
    resume: bool,
    strategy: tf.distribute.Strategy,
    verbose,
) -> tuple[dict[str, list[float]], dict | None]:
    """Runs both phases; returns the history and the best epoch, and leaves the best epoch's
    weights in `model`."""
    mixing = {"mixup": settings.mixup, "cutmix": settings.cutmix, "seed": settings.seed}
    train = training_input(
        data, strategy, steps=facts["steps_per_epoch"], class_weights=facts["class_weights"], **mixing
    )
    validation = _validation_batches(data, strategy)
    watched = monitor(data)
    best = BestCheckpoint(run_dir and paths.join(run_dir, BEST_WEIGHTS), watched, resume=resume)
    history: dict[str, list[float]] = {}

    def run_phase(phase: str, phase_epochs: int, learning_rate) -> None:
        averaged = phase == settings.averaged_phase
        compile_classifier(
            model,
            learning_rate=learning_rate,
            label_smoothing=settings.label_smoothing,
            jit_compile=settings.jit_compile,
            ema_momentum=settings.ema_momentum if averaged else None,
            multi_label=data.multi_label,
            label_weights=facts["label_weights"],
        )
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            work_around_multi_worker_fit(model)
        best.phase = phase
        callbacks, log = phase_callbacks(phase, run_dir, best, watched, settings.patience, resume, averaged)
        fitted = model.fit(
            validation_data=validation,
            epochs=phase_epochs,
            verbose=verbose,
            callbacks=callbacks,
            shuffle=False,  # the loaders shuffle; Keras would only warn that it cannot
            **train,
        )
        rows = log.rows if log else history_rows(fitted.history)
        extend_history(history, rows, PHASES.index(phase) + 1)

    head_done = run_dir and resume and paths.exists(paths.join(run_dir, HEAD_DONE_WEIGHTS))
    if head_done:
        model.load_weights(paths.join(run_dir, HEAD_DONE_WEIGHTS))
        extend_history(history, read_log(paths.join(run_dir, LOG_FILE.format(phase="head"))), 1)
    elif settings.head_epochs:
        freeze(model, until=None)
        run_phase("head", settings.head_epochs, settings.learning_rate)
        if run_dir:  # the phase's backup holds the weights it ended with
            copy_atomically(
                phase_backup(run_dir, "head").weights_path, paths.join(run_dir, HEAD_DONE_WEIGHTS)
            )
    if settings.epochs:
        freeze(model, until=settings.freeze_until)
        steps = facts["steps_per_epoch"]
        schedule = fine_tune_schedule(
            settings.fine_tune_rate,
            steps=settings.epochs * steps,
            warmup_steps=round(settings.warmup_epochs * steps),
        )
        run_phase("fine_tune", settings.epochs, schedule)
    best.restore(model)
    if run_dir:  # finished: a resume goes straight to the report and the export
        write_json(paths.join(run_dir, DONE_FILE), {"best_epoch": best.best_epoch, "monitor": watched})
        remove(run_dir, BACKUP_DIR, HEAD_DONE_WEIGHTS)
    return history, best.best_epoch


def _validation_batches(data: ImageData, strategy: tf.distribute.Strategy) -> tf.data.Dataset | None:
    """The validation batches with the loss's labels (None without a validation set)."""
    if data.validation is None:
        return None
    validation = loss_labels(data.validation, data)
    if data.batch_size and strategy.num_replicas_in_sync > 1:
        # Every replica needs a batch at every step: the fit drops the last partial one (the
        # report still evaluates every image).
        validation = validation.rebatch(data.batch_size, drop_remainder=True)
    return validation
