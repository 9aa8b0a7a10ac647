"""`search`: checks its arguments and the search directory, prepares the trials, runs them, and
reports the best values (see the package documentation for the whole story)."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from typing import Sequence

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfresnet import paths
from tfresnet.data import ImageData
from tfresnet.files import read_json, write_json
from tfresnet.models.backbones import get_backbone
from tfresnet.models.classifier import LABEL_SMOOTHING, build_classifier, check_label_smoothing
from tfresnet.models.freezing import first_trainable_from_table, freeze
from tfresnet.training.settings import RunSettings
from tfresnet.training.targets import weights_facts
from tfresnet.tuning.features import (
    CACHE_FILE,
    check_data,
    describe_data,
    describe_weights,
    features_key,
    load_or_extract,
)
from tfresnet.tuning.hypermodels import (
    ClassifierHyperModel,
    HeadHyperModel,
    declare_space,
    decode_freeze,
    encode_freeze_choices,
)
from tfresnet.tuning.label_kinds import resolve_objective
from tfresnet.tuning.trials import TRIALS_PLOT, TRIALS_TABLE, read_trials, write_summary
from tfresnet.tuning.tuner import (
    OBJECTIVES,
    TUNERS,
    WORKER_FILE,
    SearchTuner,
    check_strategy,
    make_oracle,
    remove_checkpoints,
    require_bayesian,
    role,
    trial_dirs,
    warn_if_exposed,
)

SETTINGS_FILE = "search.json"
BEST_FILE = "best_hyperparameters.json"
# Head trials share a Keras session this many at a time (`SearchTuner`'s `trials_per_session`).
HEAD_TRIALS_PER_SESSION = 25


@dataclasses.dataclass
class _Trials:
    """What trials build, what `hypermodel.fit(hp, model, *args, **kwargs)` feeds them, and how
    many share a Keras session."""

    hypermodel: keras_tuner.HyperModel
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    trials_per_session: int = 1


def search(
    data: ImageData,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    tuner: str = "hyperband",
    max_trials: int = 10,
    tune_epochs: int = 5,
    directory: str | os.PathLike = "tuning",
    overwrite: bool = False,
    seed: int | None = None,
    fast: bool = True,
    freeze_until_choices: Sequence[int | str | None] | None = None,
    objective: str | None = None,
    label_smoothing: float = LABEL_SMOOTHING,
    class_weight: str = RunSettings.class_weight,
    distribution_strategy: tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> dict:
    """Searches the head size, dropout, learning rate (and where to freeze) for a classifier.

    Trials train under `fine_tune`'s recipe (`compile_classifier` for the data's kind of labels,
    the weights of `class_weight`) and are scored on `data.validation`; with `fast` and no
    `freeze_until_choices`, on features computed once. The package documentation tells the
    rest: resuming, shared searches, where Keras's session and the global seeds are reset.

    Args:
        data: An `ImageData` with a validation set.
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"`.
        weights: `"imagenet"`, None (random backbone, drawn from `seed`) or a weights file.
        tuner: `"hyperband"`, `"random"` or `"bayesian"` (needs scikit-learn and scipy).
        max_trials: Trials to run in all (a Hyperband continuation counts as a trial).
        tune_epochs: Epochs per trial; Hyperband's largest number of epochs for one trial.
        directory: The search's own directory, created if needed; running again resumes it.
            Any file system TensorFlow has (`gs://bucket/tuning`); keras-tuner reads and writes
            it through `tf.io.gfile` too.
        overwrite: Start afresh: delete the search's own files in `directory` first (its
            trials, keras-tuner's state, the feature cache, `search.json` and the summary),
            nothing else.
        seed: Seeds the tuner and every trial's initialisation (None: random tuner, 0 for the rest).
        fast: Train heads on features computed once while the backbone is frozen.
        freeze_until_choices: Also search where the backbone starts to train, e.g.
            `[None, "conv5", "conv4"]` (None: frozen). Trials then train the full model.
        objective: `"val_accuracy"` (maximised; single-label data), `"val_mean_average_precision"`
            (maximised; multi-label data) or `"val_loss"` (minimised); None: the data's metric.
        label_smoothing: Label smoothing of the loss, in [0, 1) (`fine_tune`'s default).
        class_weight: `"balanced"` (weights by inverse frequency: of classes, or per label) or `"none"`.
        distribution_strategy: Strategy to run trials under (default: the active one).
        callbacks: Keras callbacks for every trial's `fit` (copied per trial).
        verbose: 0 silent, 1 keras-tuner's reports and progress bars, 2 a line per epoch.

    Returns:
        The best trial's values: `{"head_units": int or None, "dropout": float,
        "learning_rate": float}`, plus `"freeze_until"` when searched; also written to
        `directory/best_hyperparameters.json`, beside `trials.csv` and `trials.png`.

    Raises:
        ValueError: An invalid argument, data without a validation set, or a search in
            `directory` made with other settings (pass `overwrite=True`).

    Example:
        best = search(data, tuner="hyperband", max_trials=20, directory="runs/tuning")
        model = build_classifier(3, head_units=best["head_units"], dropout=best["dropout"])
    """
    _check_arguments(tuner, max_trials, tune_epochs, seed, label_smoothing)
    choices = _check_data_and_choices(data, backbone, freeze_until_choices)
    multi_label = data.multi_label
    objective = resolve_objective(objective, multi_label=multi_label)
    weighting = weights_facts(data, class_weight)  # fine_tune's: by class, or per label
    strategy = check_strategy(distribution_strategy)
    process = role()
    if process == "chief":
        warn_if_exposed()

    project_dir = paths.absolute(os.fspath(directory).rstrip("/") or "/")  # keras-tuner: parent + name
    description = describe_data(data)
    use_fast = fast and not choices
    settings = dict(tuner=tuner, objective=objective, tune_epochs=int(tune_epochs), fast=use_fast)
    settings.update(_recipe_settings(backbone, weights, seed, label_smoothing, class_weight, multi_label))
    settings.update(space=_space(choices), data=description)
    _start_directory(project_dir, settings, overwrite=overwrite, role=process)

    init_seed = 0 if seed is None else int(seed)
    recipe = dict(seed=init_seed, label_smoothing=label_smoothing, label_weights=weighting["label_weights"])
    setup = {"backbone": backbone, "weights": weights, "recipe": {**recipe, "multi_label": multi_label}}
    if use_fast:
        key = features_key(description, backbone, weights, init_seed)
        trials = _head_trials(data, key=key, role=process, cache_dir=project_dir, strategy=strategy, **setup)
    else:
        trials = _full_model_trials(data, choices=choices, **setup)
    trials.kwargs.update(epochs=tune_epochs, callbacks=list(callbacks), verbose=verbose)
    trials.kwargs["class_weight"] = weighting["class_weights"]
    oracle = make_oracle(
        tuner, objective=objective, max_trials=max_trials, tune_epochs=tune_epochs, seed=seed
    )
    _run_trials(trials, oracle, max_epochs=tune_epochs, strategy=strategy, project_dir=project_dir)
    return _report(project_dir, objective, process)


# === Arguments ===


def _check_arguments(tuner, max_trials, tune_epochs, seed, label_smoothing) -> None:
    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {TUNERS}. Received: tuner={tuner!r}")
    for name, value in (("max_trials", max_trials), ("tune_epochs", tune_epochs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32
    ):
        raise ValueError(f"seed must be an integer in [0, 2**32) or None. Received: seed={seed!r}")
    check_label_smoothing(label_smoothing)
    if tuner == "bayesian":
        require_bayesian()


def _check_data_and_choices(data, backbone: str, freeze_until_choices) -> tuple[str, ...]:
    """Checks the data and the backbone; returns the encoded `freeze_until` choices."""
    get_backbone(backbone)
    check_data(data)
    choices = encode_freeze_choices(freeze_until_choices)
    if choices:
        _check_freeze_choices(choices, backbone=backbone, image_size=data.image_size)
    return choices


def _check_freeze_choices(choices: Sequence[str], *, backbone: str, image_size: int) -> None:
    """Fails now, not in some trial hours from now, on a choice the backbone does not have.

    Indices are checked against the table's `num_layers`, stage names against its `stages`.
    Only another name (a block, a layer) or a backbone whose layers the table does not know (a
    Hub module) builds the network, with random weights, to ask `freeze`.
    """
    row, _ = get_backbone(backbone)
    unknown = [
        choice
        for choice in map(decode_freeze, choices)
        if choice is not None and first_trainable_from_table(row, choice) is None and choice != 0
    ]
    if not unknown:
        return
    model = build_classifier(2, backbone=backbone, weights=None, image_size=image_size)
    try:
        for choice in unknown:
            freeze(model, until=choice)
    finally:
        del model
        keras.backend.clear_session()


# === Settings ===


def _recipe_settings(backbone, weights, seed, label_smoothing, class_weight, multi_label) -> dict:
    """What trials train from and with, as `search.json` stores it."""
    return {
        "seed": seed if seed is None else int(seed),
        "backbone": backbone,
        "weights": describe_weights(weights),
        "label_smoothing": float(label_smoothing),
        "class_weight": class_weight,
        "multi_label": bool(multi_label),
    }


def _space(choices: Sequence[str]) -> list:
    """The search space as `search.json` stores it."""
    space = keras_tuner.HyperParameters()
    declare_space(space, choices)
    return json.loads(json.dumps(space.get_config()["space"]))


def _start_directory(project_dir: str, settings: dict, *, overwrite: bool, role: str) -> None:
    """Checks the settings against the directory's (`overwrite` deletes it); the chief or a lone
    process then writes them."""
    _check_settings(project_dir, settings, overwrite=overwrite, role=role)
    if role != "worker":
        paths.makedirs(project_dir)
        write_json(paths.join(project_dir, SETTINGS_FILE), settings)


def _check_settings(project_dir: str, settings: dict, *, overwrite: bool, role: str) -> None:
    """Refuses to continue a search made with other settings (keras-tuner would mix them)."""
    path = paths.join(project_dir, SETTINGS_FILE)
    if overwrite and role != "worker":
        _remove_search(project_dir)
        return
    if paths.exists(path):
        stored = {"multi_label": False, **read_json(path)}  # a file from before multi-label data
        if stored == settings:
            return
        changed = "; ".join(
            f"{key}: {_short(stored.get(key))} -> {_short(settings.get(key))}"
            for key in sorted(set(stored) | set(settings))
            if stored.get(key) != settings.get(key)
        )
        raise ValueError(
            f"The search in {project_dir!r} was made with other settings ({changed}); "
            f"continuing it would mix its trials into this search. Pass overwrite=True "
            f"(--overwrite on the command line) to start afresh, or choose another directory."
        )
    if paths.exists(paths.join(project_dir, "oracle.json")):
        raise ValueError(
            f"{project_dir!r} holds a keras-tuner search without {SETTINGS_FILE}, so its "
            f"settings are unknown. Pass overwrite=True (--overwrite on the command line) to "
            f"start afresh, or choose another directory."
        )


def _remove_search(project_dir: str) -> None:
    """Deletes the search's own files in `project_dir`, and nothing else there (it may be the
    run's output folder): keras-tuner's `oracle.json`, trial folders and tuner files, the
    feature cache, the settings, the best values and the summary."""
    if not paths.isdir(project_dir):
        return
    trials = trial_dirs(project_dir)
    workers = {"tuner0", os.environ.get("KERASTUNER_TUNER_ID") or "tuner0"}
    for trial_dir in trials:
        worker = read_json(paths.join(trial_dir, WORKER_FILE))
        if isinstance(worker, dict) and isinstance(worker.get("worker"), str):
            workers.add(worker["worker"])
    names = ["oracle.json", SETTINGS_FILE, BEST_FILE, TRIALS_TABLE, TRIALS_PLOT]
    names += [f"{os.path.basename(worker)}.json" for worker in workers]
    names += fnmatch.filter(paths.listdir(project_dir), CACHE_FILE.format(key="*"))
    for name in names:
        paths.remove(paths.join(project_dir, name))
    for trial_dir in trials:
        paths.rmtree(trial_dir)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# === Trials ===


def _full_model_trials(data: ImageData, *, backbone, weights, choices, recipe) -> _Trials:
    """Trials that train the full classifier on `data` as given (augmentation included)."""
    hypermodel = ClassifierHyperModel(
        len(data.class_names),
        backbone=backbone,
        weights=weights,
        image_size=data.image_size,
        freeze_until_choices=[decode_freeze(choice) for choice in choices],
        **recipe,
    )
    # The hypermodel's fit maps integer labels to one-hot ones; data.train is shuffled by its loader.
    return _Trials(hypermodel, (data.train,), {"validation_data": data.validation, "shuffle": False})


def _head_trials(data: ImageData, *, key, backbone, weights, cache_dir, strategy, recipe, role) -> _Trials:
    """Trials that train the head alone on features computed once (or read from the cache).

    The chief only hands out trials: it builds no model, so it needs the table's feature size,
    not the features.
    """
    seed, recipe = recipe["seed"], {**recipe, "reuse_models": True}
    if role == "chief":
        feature_dim = get_backbone(backbone)[0].feature_size
        return _Trials(HeadHyperModel(len(data.class_names), feature_dim=feature_dim, **recipe))
    features = load_or_extract(
        data, key=key, backbone=backbone, weights=weights, seed=seed, cache_dir=cache_dir, strategy=strategy
    )
    keras.backend.clear_session()
    return _Trials(
        HeadHyperModel(len(data.class_names), feature_dim=features.feature_dim, **recipe),
        (features.train_features, features.train_labels),
        {
            "batch_size": features.batch_size,
            "shuffle": True,
            "validation_data": (features.validation_features, features.validation_labels),
        },
        trials_per_session=HEAD_TRIALS_PER_SESSION,
    )


def _run_trials(trials: _Trials, oracle, *, max_epochs: int, strategy, project_dir: str) -> None:
    tuner = SearchTuner(
        oracle,
        trials.hypermodel,
        max_epochs=max_epochs,
        trials_per_session=trials.trials_per_session,
        distribution_strategy=strategy,
        directory=os.path.dirname(project_dir),
        project_name=os.path.basename(project_dir),
    )
    tuner.search(*trials.args, **trials.kwargs)
    del tuner
    # No garbage collection (up to 0.5 s in a large process): a full model's trial collected
    # its own at its end, and heads leave little.
    keras.backend.clear_session(free_memory=False)


# === Results ===


def _report(project_dir: str, objective: str, process: str) -> dict:
    """The best values; the chief or a lone process also writes them and the summary."""
    trials = read_trials(project_dir)
    best = _best_values(trials, objective, project_dir)
    if process != "worker":
        remove_checkpoints(project_dir)
        write_json(paths.join(project_dir, BEST_FILE), best)
        write_summary(project_dir, trials, objective)
    return best


def _classifier_values(values: dict) -> dict:
    best = {
        "head_units": int(values["head_units"]) or None,
        "dropout": round(float(values["dropout"]), 10),
        "learning_rate": float(values["learning_rate"]),
    }
    if "freeze_until" in values:
        best["freeze_until"] = decode_freeze(values["freeze_until"])
    return best


def _best_values(trials: list[dict], objective: str, project_dir: str) -> dict:
    completed = [trial for trial in trials if trial["status"] == "COMPLETED" and trial["score"] is not None]
    if not completed:
        failed = next((trial for trial in trials if trial["message"]), None)
        reason = f" The first failure: {failed['message']}" if failed else ""
        raise RuntimeError(f"No trial of the search in {project_dir!r} completed.{reason}")
    pick = max if OBJECTIVES[objective] == "max" else min
    return _classifier_values(pick(completed, key=lambda trial: trial["score"])["values"])
