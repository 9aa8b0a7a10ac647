"""What `python -m tfresnet.finetune` does with its parsed flags: the checks before any
training, then the search, the training, the report and the exports.

Everything a run needs is checked first (the flags, the data, the backbone, its weights file
and the packages that file needs, where the backbone starts to train, that the output folders
can be written); bad input returns exit code 2 with one line on stderr. What fails later,
while training, keeps its traceback, and the run's files stay where they are (`--resume`
continues it). Several machines: with `--tune` and keras-tuner's variables, every process
takes part in one search, then only its chief trains, reports and exports. Every folder and
file a flag names may be on any file system TensorFlow has (`gs://bucket/runs/flowers`; see
`tfresnet.paths`).

Example:
    with contextlib.ExitStack() as held:
        run(build_parser().parse_args(["--data-dir", "shapes/", "--weights", "none"]), held)
    # 0
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile

from tfresnet import files, paths
from tfresnet.cli import console, preflight
from tfresnet.cli.finetune_flags import build_parser, csv_columns, run_settings, weights

# What bad input raises while it is checked (data, backbone, weights, folders, packages).
BAD_INPUT_ERRORS = (ValueError, OSError, ImportError)


def run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """Checks everything, then (searches and) trains, reports and exports."""
    from tfresnet import training
    from tfresnet.training import distribute
    from tfresnet.training.run_identity import ResumeError, RunMismatch

    try:
        strategy, data = _prepare(args, held)
        dataset_check = None if args.find_lr else _check_dataset(args, chief=distribute.is_chief(strategy))
    except RunMismatch as error:
        return console.print_bad_input(build_parser().prog, error.for_command())
    except BAD_INPUT_ERRORS as error:
        return console.print_bad_input(build_parser().prog, error)
    if args.find_lr:
        return _find_lr(args, data)
    settings = run_settings(args)
    if args.tune:
        try:
            best = _search(args, data, strategy)
        except ValueError as error:
            # The search checks its settings against its directory before any trial; a trial's
            # own failure reaches here as keras-tuner's RuntimeError, with its traceback.
            return console.print_bad_input(build_parser().prog, error)
        worker = _search_worker_id()
        if worker is not None:  # the search's chief trains the best values; a worker is done
            print(json.dumps({"tuner_id": worker, "best_hyperparameters": best}))
            return 0
        settings = dataclasses.replace(settings, **best)
    if distribute.is_chief(strategy):
        _show_batch(args, data)
    try:
        result = training.fine_tune(
            data, output_dir=args.output_dir, resume=args.resume, strategy=strategy, **settings.to_json()
        )
    except RunMismatch as error:  # with --tune, told once the search has chosen the head
        return console.print_bad_input(build_parser().prog, error.for_command())
    except ResumeError as error:  # the workers of a multi-worker run see different runs
        return console.print_bad_input(build_parser().prog, error)
    return _report_and_export(
        args, data, result, chief=distribute.is_chief(strategy), dataset_check=dataset_check
    )


# === Checks before any training ===


def _prepare(args: argparse.Namespace, held: contextlib.ExitStack):
    """Checks the flags, the data, the model and the folders; takes the output folder's lock
    (into `held`) and checks that a resume continues the same run (with `--tune`, `fine_tune`
    checks it once the search has chosen the head); returns `(strategy, data)`."""
    from tfresnet.training import distribute, run_files
    from tfresnet.training.run_identity import run_identity

    if not args.csv and (args.image_dir or args.path_column != "path" or args.label_column != "label"):
        raise ValueError(
            "--image-dir, --path-column and --label-column go with --csv FILE. Pass --csv or drop them."
        )
    preflight.check_multi_label(
        multi_label=args.multi_label,
        label_delimiter=args.label_delimiter,
        source="--csv" if args.csv else "--data-dir" if args.data_dir else "--tfds",
        calibrate=args.calibrate,
    )
    if args.calibrate and not args.val_split and not args.find_lr:
        raise ValueError(
            "--calibrate fits a temperature on the validation set, and --val-split 0 holds out none. "
            "Pass --val-split above 0 (e.g. 0.2)."
        )
    if not args.find_lr:
        run_settings(args).check()
    if args.tune and not args.find_lr:
        _check_search(args)
    if not args.find_lr:
        from tfresnet.export.formats import check_export_request

        check_export_request(args.export_formats, args.quantize)  # packages too, before training
    strategy = distribute.resolve_strategy()  # first TensorFlow work: multi-worker needs it so
    model = {
        "backbone": args.backbone,
        "weights": weights(args),
        "image_size": args.image_size,
        "freeze_until": args.freeze_until,
    }
    build = preflight.check_backbone(**model)
    data = _load_data(args, drop_remainder=strategy.num_replicas_in_sync > 1)
    if args.tune and not args.find_lr:
        from tfresnet.tuning.features import check_data

        check_data(data)
    preflight.check_weights(**model, build=build)
    preflight.check_writable(_written_folders(args, chief=distribute.is_chief(strategy)))  # creates them
    search_worker = args.tune and not args.find_lr and _search_worker_id() is not None
    if distribute.is_chief(strategy) and not search_worker:  # the other workers share the folder
        held.enter_context(run_files.run_lock(args.output_dir))
    # With --tune the head is the search's choice, known after the search: `fine_tune` checks it.
    if args.resume and not args.find_lr and not args.tune:
        identity = run_identity(
            data,
            backbone=args.backbone,
            weights=model["weights"],
            head_units=args.head_units or None,
            dropout=args.dropout,
            ema=args.ema,
        )
        run_files.check_resume(args.output_dir, identity)
    return strategy, data


def _check_dataset(args: argparse.Namespace, *, chief: bool) -> dict | None:
    """The dataset check of `--data-dir` or `--csv` against the split training uses, printed and
    returned for the report (None where it does not run: TFDS data, `--no-check`, a worker of a
    shared search or of a multi-worker run)."""
    from tfresnet.insight import dataset_check

    if args.tfds or args.no_check or not chief or (args.tune and _search_worker_id() is not None):
        return None
    split = {"val_split": args.val_split, "seed": args.seed, "max_image_pixels": args.max_image_pixels}
    if args.csv:
        found = dataset_check.check_csv(args.csv, image_dir=args.image_dir, **csv_columns(args), **split)
    else:
        found = dataset_check.check_dataset(args.data_dir, **split)
    print(dataset_check.summary_table(found))
    if dataset_check.has_problems(found):
        print("The dataset check found leakage across the split or conflicting labels: see report.html.")
    return found


def _check_search(args: argparse.Namespace) -> None:
    """The search's own requirements: its processes' variables and the tuner's packages."""
    from tfresnet.tuning.tuner import require_bayesian, role

    role()  # refuses a shared search with some of its variables missing
    if args.tuner == "bayesian":
        require_bayesian()


def _written_folders(args: argparse.Namespace, *, chief: bool) -> list[tuple[str, str]]:
    """`(flag, folder)` of every folder this process writes into (an export replaces its own).

    Another worker of a multi-worker run writes its files into a temporary folder of its own.
    """
    folders = [("--tune-dir", _tune_dir(args))] if args.tune and not args.find_lr else []
    if not chief:
        return folders
    folders.append(("--output-dir", args.output_dir))
    if args.find_lr:
        return folders
    export_dir = paths.absolute(_export_dir(args))
    if paths.isfile(export_dir):
        raise ValueError(f"--export-dir {export_dir!r} is a file: the export is a folder. Pass another path.")
    return [*folders, ("--export-dir", os.path.dirname(export_dir))]


# === The run ===


def _load_data(args: argparse.Namespace, *, drop_remainder: bool):
    """The data the flags name, evaluated at the central crop of the backbone's weights."""
    from tfresnet import data as data_module
    from tfresnet.models import eval_crop_fraction

    options = {
        "image_size": args.image_size,
        "crop_fraction": eval_crop_fraction(args.backbone, weights(args)),
        "batch_size": args.batch_size,
        "val_split": args.val_split,
        "augmentation": args.augmentation,
        "randaugment_magnitude": args.randaugment_magnitude,
        "randaugment_ops": args.randaugment_ops,
        "seed": args.seed,
        "drop_remainder": drop_remainder,
    }
    if args.data_dir:
        return data_module.from_folder(args.data_dir, **options, max_image_pixels=args.max_image_pixels)
    if args.csv:
        return data_module.from_csv(
            args.csv,
            image_dir=args.image_dir,
            **csv_columns(args),
            **options,
            max_image_pixels=args.max_image_pixels,
        )
    return data_module.from_tfds(args.tfds, split=args.tfds_split, data_dir=args.tfds_data_dir, **options)


def _search(args: argparse.Namespace, data, strategy) -> dict:
    """Searches with the same data, recipe and flags; returns `fine_tune` keyword arguments."""
    from tfresnet import tuning

    return tuning.search(
        data,
        backbone=args.backbone,
        weights=weights(args),
        tuner=args.tuner,
        max_trials=args.max_trials,
        tune_epochs=args.tune_epochs,
        directory=_tune_dir(args),
        overwrite=args.overwrite,
        seed=args.seed,
        label_smoothing=args.label_smoothing,
        class_weight=args.class_weight,
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
    )


def _tune_dir(args: argparse.Namespace) -> str:
    return args.tune_dir or paths.join(args.output_dir, "tuning")


def _export_dir(args: argparse.Namespace) -> str:
    return args.export_dir or paths.join(args.output_dir, "saved_model", "1")


def _search_worker_id() -> str | None:
    """The `KERASTUNER_TUNER_ID` of a worker of a shared search (its part ends with the search:
    it prints its tuner id and best values); None on the chief (tuner id containing "chief")
    or alone."""
    from tfresnet.tuning.tuner import role

    return os.environ["KERASTUNER_TUNER_ID"] if role() == "worker" else None


def _report_and_export(
    args: argparse.Namespace, data, result, *, chief: bool, dataset_check: dict | None
) -> int:
    """Writes the exports, then the report (on the chief; other workers only keep pace).

    The exports come first, so that a report that fails (a plot, a full disk) never costs the
    trained model. With `--calibrate`, the temperature fitted on the validation set is baked
    into the exported model, and recorded in `tfresnet_config.json`.
    """
    from tfresnet import export
    from tfresnet.insight import calibration, report
    from tfresnet.insight.evaluation import predict_probabilities

    # Every worker of a multi-worker run evaluates and exports, so that none leaves the others
    # early; only the chief's files are kept (another worker's go to a local folder of its own).
    output_dir = args.output_dir if chief else tempfile.mkdtemp(prefix="tfresnet-worker-")
    if data.validation is not None:
        evaluation, evaluated_on, image_paths = data.validation, "validation", data.files.get("validation")
    else:
        evaluation, evaluated_on = data.train_evaluation, "training (evaluation transform)"
        image_paths = data.files.get("train")
    temperature, config = None, result.config
    if args.calibrate:
        temperature = calibration.fit_temperature(*predict_probabilities(result.model, evaluation))
        config = {**config, "temperature": temperature}
    export_dir = _export_dir(args) if chief else paths.join(output_dir, "saved_model")
    with calibration.temperature_applied(result.model, temperature):
        export.export_saved_model(
            result.model,
            export_dir,
            class_names=data.class_names,
            top_k=args.top_k,
            config=config,
            max_image_pixels=args.max_image_pixels,
            thresholds=result.thresholds,
        )
        exports = _export_formats(args, data, result, evaluation, output_dir) if chief else {}
    written = report.write_report(
        result.model,
        evaluation,
        data.class_names,
        output_dir,
        history=result.history,
        evaluated_on=evaluated_on,
        dataset_check=dataset_check,
        config=config,
        calibrate=args.calibrate,
        temperature=temperature,
        tta=args.tta,
        paths=image_paths,
        thresholds=result.thresholds,
    )
    if not chief:
        paths.rmtree(output_dir)
        return 0
    if exports:  # their agreement figures join the report
        path = paths.join(output_dir, report.REPORT_FILE)
        files.write_json(path, {**(files.read_json(path) or {}), "exports": exports})
    print(json.dumps(_summary(args, data, written, exports, export_dir=export_dir)))
    return 0


def _summary(args: argparse.Namespace, data, written: dict, exports: dict, *, export_dir: str) -> dict:
    """The command's one-line JSON summary: the figures a person looks at first, where things went."""
    from tfresnet.insight.report import HTML_FILE

    evaluated_on = written["evaluated_on"]
    if data.multi_label:
        from tfresnet.insight.multi_label_metrics import SUMMARY_KEYS

        names = [*SUMMARY_KEYS, *(["mean_average_precision_tta"] * args.tta)]
    else:
        names = ["accuracy", *(["accuracy_tta"] * args.tta), "expected_calibration_error"]
    summary = {
        **{name: written[name] for name in names},
        "evaluated_on": evaluated_on,
        "output_dir": paths.absolute(args.output_dir),
        "export_dir": paths.absolute(export_dir),
        "report_html": paths.absolute(paths.join(args.output_dir, HTML_FILE)),
        "skipped_files": len(data.skipped),
    }
    if args.calibrate:
        summary["temperature"] = written["calibration"]["temperature"]
        summary["expected_calibration_error_after"] = written["calibration"][
            "expected_calibration_error_after"
        ]
    if exports:
        summary["exports"] = {name: entry["path"] for name, entry in exports.items()}
    return summary


def _export_formats(args, data, result, evaluation, output_dir: str) -> dict:
    """`OUTPUT_DIR/model.tflite` / `model.onnx`, each measured against the trained model on
    `evaluation` (a multi-label run's thresholds carried beside each file)."""
    if not set(args.export_formats) - {"saved_model"}:
        return {}
    from tfresnet.cli.quiet import quiet_terminal
    from tfresnet.export.formats import export_formats

    with quiet_terminal(verbose=args.verbose):  # the converters' own C++ lines
        exports = export_formats(
            result.model,
            output_dir,
            args.export_formats,
            quantize=args.quantize,
            calibration=data.train,
            validation=evaluation,
            class_names=data.class_names,
            crop_fraction=data.crop_fraction,
            thresholds=result.thresholds,
        )
    return exports


def _show_batch(args: argparse.Namespace, data) -> None:
    """`OUTPUT_DIR/batch.png`: the first training batch as the network gets it."""
    from tfresnet.insight.batch_grid import show_batch
    from tfresnet.training.fine_tuning import training_batches

    paths.makedirs(args.output_dir)
    batches = training_batches(data, mixup=args.mixup, cutmix=args.cutmix, seed=args.seed)
    show_batch(
        batches, data.class_names, paths.join(args.output_dir, "batch.png"), multi_label=data.multi_label
    )


def _find_lr(args: argparse.Namespace, data) -> int:
    from tfresnet import models
    from tfresnet.training import lr_finder

    model = models.build_classifier(
        len(data.class_names),
        backbone=args.backbone,
        weights=weights(args),
        image_size=args.image_size,
        head_units=args.head_units or None,
        dropout=args.dropout,
        multi_label=data.multi_label,
    )
    paths.makedirs(args.output_dir)
    plot = paths.join(args.output_dir, "lr_find.png")
    sweep = lr_finder.find_lr(model, data.train, label_smoothing=args.label_smoothing, output_path=plot)
    files.write_json(paths.join(args.output_dir, "lr_find.json"), sweep)
    print(
        json.dumps(
            {"suggested_learning_rate": sweep["suggested_learning_rate"], "plot": paths.absolute(plot)}
        )
    )
    return 0
