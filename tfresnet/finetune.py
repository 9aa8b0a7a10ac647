"""`python -m tfresnet.finetune`: from a folder of images (or a TFDS dataset) to a SavedModel.

A thin command over the library: load the data, (optionally search hyper-parameters,)
fine-tune with the two-phase recipe, write the evaluation report and export for serving. A
folder of images is checked first (`tfresnet.check`: duplicates, leakage across the split, bad
files), unless `--no-check`; its findings go into the report.

Errors. Everything a run needs is checked before any training (or search) starts: the flags,
the data, the backbone, its weights file and the optional packages that file needs, where
the backbone starts to train, and that the output folders can be written. Bad input stops
the command there, with one line on stderr and exit code 2. What fails later, while training,
is not bad input: it keeps its traceback (exit code 1), and the run's files stay where they
are (`--resume` continues it).

Output. TensorFlow's own log lines (and library warnings that users cannot act on) are kept
off the terminal: what remains is Keras's progress bars, the command's own lines and its JSON
summary. `--verbose` brings them back.

Several machines. With `--tune` and keras-tuner's variables (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`), every process takes part in one search; then
only its chief (the tuner id containing "chief") trains the best values, reports and exports.
A worker prints one JSON line, its tuner id and the best values it saw, and exits with 0.

Example:
    python -m tfresnet.finetune --data-dir flowers/ --image-size 224 --epochs 5 \\
        --output-dir runs/flowers --export-dir models/flowers/1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from tfresnet import console, preflight

# What bad input raises while it is checked (data, backbone, weights, folders, packages).
BAD_INPUT_ERRORS = (ValueError, OSError, ImportError)


def _backbone(text: str) -> str:
    from tfresnet.backbones import get_backbone

    try:
        get_backbone(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _layer(text: str) -> int | str:
    """An index (`140`, `-10`) or a layer name or prefix (`conv5`)."""
    try:
        return int(text)
    except ValueError:
        return text


def _export_formats(text: str) -> list[str]:
    """`saved_model,litert,onnx` -> the list, each name checked."""
    from tfresnet.export.formats import FORMATS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(FORMATS)}, received {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command's flags, in groups; `--help` documents each."""
    from tfresnet.backbones import BACKBONES
    from tfresnet.data import AUGMENTATIONS
    from tfresnet.distribute import MIXED_PRECISION
    from tfresnet.training import CLASS_WEIGHTS
    from tfresnet.tuning import TUNERS

    parser = console.Parser(
        prog="python -m tfresnet.finetune",
        description="Fine-tune a ResNet50 image classifier and export it for TensorFlow Serving.",
        formatter_class=console.HelpFormatter,
    )
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    source.add_argument("--tfds", metavar="NAME", help="a TensorFlow Datasets name, e.g. tf_flowers")
    data.add_argument("--tfds-split", default="train", help="TFDS split to train on")
    data.add_argument("--tfds-data-dir", default=None, help="TFDS data_dir (default: TFDS's own)")
    data.add_argument(
        "--val-split",
        type=console.fraction,
        default=0.2,
        help="fraction of each class held out for validation",
    )
    data.add_argument("--image-size", type=console.positive_int, default=224, help="side of the input images")
    data.add_argument("--batch-size", type=console.positive_int, default=32, help="images per batch")
    data.add_argument(
        "--augmentation",
        choices=AUGMENTATIONS,
        default="standard",
        help="standard: random resized crop and flip; flip: flip only; none: central crop",
    )
    data.add_argument(
        "--no-check",
        action="store_true",
        help="skip the dataset check of --data-dir (duplicates, leakage across the split, bad files)",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--backbone",
        type=_backbone,
        default="resnet50",
        metavar="{" + ",".join(name for name in BACKBONES if name != "hub") + ",hub:HANDLE}",
        help="backbone (resnet-tiny: a tiny network for tests and smoke runs, weights none); "
        "HANDLE is a tfhub.dev/Kaggle URL or a local SavedModel folder",
    )
    model.add_argument(
        "--weights",
        default="imagenet",
        metavar="{imagenet,none,PATH}",
        help="backbone weights: ImageNet, random, or a .h5/.weights.h5 file; for resnet50-torchvision "
        "also torchvision:IMAGENET1K_V1|V2 or a .pth/.safetensors state dict",
    )
    model.add_argument(
        "--head-units", type=console.non_negative_int, default=0, help="hidden head units (0: none)"
    )
    model.add_argument("--dropout", type=console.fraction, default=0.2, help="dropout before the predictions")

    training = parser.add_argument_group("training")
    training.add_argument(
        "--head-epochs", type=console.non_negative_int, default=3, help="epochs of the head alone"
    )
    training.add_argument("--epochs", type=console.non_negative_int, default=10, help="epochs of fine-tuning")
    training.add_argument(
        "--learning-rate", type=console.positive_float, default=1e-3, help="head-phase rate"
    )
    training.add_argument(
        "--fine-tune-learning-rate",
        type=console.positive_float,
        default=None,
        help="peak fine-tuning rate (default: a tenth of --learning-rate)",
    )
    training.add_argument(
        "--freeze-until",
        type=_layer,
        default=0,
        help="index or name of the first backbone layer fine-tuned (0: the whole backbone)",
    )
    training.add_argument("--label-smoothing", type=console.fraction, default=0.1, help="label smoothing")
    training.add_argument(
        "--class-weight", choices=CLASS_WEIGHTS, default="balanced", help="weigh rare classes up"
    )
    training.add_argument(
        "--mixed-precision", choices=MIXED_PRECISION, default="auto", help="auto: on with a GPU"
    )
    training.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA")
    training.add_argument(
        "--patience", type=console.non_negative_int, default=5, help="early stopping patience (0: none)"
    )
    training.add_argument("--seed", type=int, default=None, help="seed for repeatable runs")

    tune = parser.add_argument_group("hyper-parameter search (keras-tuner)")
    tune.add_argument(
        "--tune",
        action="store_true",
        help="search head units, dropout and learning rate first, then train the best as usual",
    )
    tune.add_argument(
        "--tuner", choices=TUNERS, default="hyperband", help="bayesian needs scikit-learn and scipy"
    )
    tune.add_argument("--max-trials", type=console.positive_int, default=10, help="trials in all")
    tune.add_argument(
        "--tune-epochs", type=console.positive_int, default=5, help="epochs per trial (at most)"
    )
    tune.add_argument(
        "--tune-dir", default=None, help="search directory, resumable (default: OUTPUT_DIR/tuning)"
    )
    tune.add_argument("--overwrite", action="store_true", help="start the search afresh")

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--output-dir", default="tfresnet_run", help="checkpoints, logs, report and plots")
    outputs.add_argument(
        "--export-dir", default=None, help="SavedModel folder (default: OUTPUT_DIR/saved_model/1)"
    )
    outputs.add_argument(
        "--top-k", type=console.positive_int, default=5, help="classes returned by the export"
    )
    outputs.add_argument(
        "--export-formats",
        type=_export_formats,
        default=["saved_model"],
        metavar="saved_model,litert,onnx",
        help="also write OUTPUT_DIR/model.tflite and/or OUTPUT_DIR/model.onnx, measured on validation",
    )
    outputs.add_argument(
        "--quantize",
        choices=("none", "float16", "dynamic", "int8"),
        default="none",
        help="the LiteRT file's weights (int8: activations too, calibrated on training images)",
    )
    outputs.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a temperature on the validation set and bake it into the export (calibrated probabilities)",
    )
    outputs.add_argument("--resume", action="store_true", help="continue the run found in --output-dir")
    outputs.add_argument(
        "--find-lr",
        action="store_true",
        help="only sweep the head phase's learning rate: write lr_find.png and a suggestion, train nothing",
    )
    outputs.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own logs and library warnings"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done, 2 bad usage or bad input).

    A failure during training or the search is raised, with its traceback (exit code 1 from
    `python -m`); the files written so far stay, so that `--resume` continues the run.

    Example:
    >>> main(["--data-dir", "flowers/", "--epochs", "2", "--output-dir", "runs/flowers"])
    0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with console.quiet_output(verbose=console.wants_verbose(argv)):
        args = build_parser().parse_args(argv)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Checks everything, then (searches and) trains, reports and exports."""
    from tfresnet import distribute, training

    try:
        strategy, data = _prepare(args)
        dataset_check = None if args.find_lr else _check_dataset(args, chief=distribute.is_chief(strategy))
    except BAD_INPUT_ERRORS as error:
        return console.print_bad_input(build_parser().prog, error)
    if args.find_lr:
        return _find_lr(args, data)
    options = _training_options(args)
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
        options.update(best)
    result = training.fine_tune(
        data, output_dir=args.output_dir, resume=args.resume, strategy=strategy, **options
    )
    return _report_and_export(
        args, data, result, chief=distribute.is_chief(strategy), dataset_check=dataset_check
    )


# === Checks before any training ===


def _prepare(args: argparse.Namespace):
    """Checks the flags, the data, the model and the folders; returns `(strategy, data)`."""
    from tfresnet import distribute, training

    if args.calibrate and not args.val_split and not args.find_lr:
        raise ValueError(
            "--calibrate fits a temperature on the validation set, and --val-split 0 holds out none. "
            "Pass --val-split above 0 (e.g. 0.2)."
        )
    if not args.find_lr:
        training.check_recipe(
            head_epochs=args.head_epochs,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            fine_tune_learning_rate=args.fine_tune_learning_rate,
            label_smoothing=args.label_smoothing,
        )
    if args.tune and not args.find_lr:
        _check_search(args)
    if not args.find_lr:
        from tfresnet.export.formats import check_export_request

        check_export_request(args.export_formats, args.quantize)  # packages too, before training
    strategy = distribute.resolve_strategy()  # first TensorFlow work: multi-worker needs it so
    model = {
        "backbone": args.backbone,
        "weights": _weights(args),
        "image_size": args.image_size,
        "freeze_until": args.freeze_until,
    }
    build = preflight.check_backbone(**model)
    data = _load_data(args, drop_remainder=strategy.num_replicas_in_sync > 1)
    if args.tune and not args.find_lr:
        from tfresnet.tuning.features import check_data

        check_data(data)
    preflight.check_weights(**model, build=build)
    preflight.check_writable(
        _written_folders(args, chief=distribute.is_chief(strategy))
    )  # last: creates them
    return strategy, data


def _check_dataset(args: argparse.Namespace, *, chief: bool) -> dict | None:
    """The dataset check of `--data-dir` against the split training uses, printed and returned
    for the report (None where it does not run: TFDS data, `--no-check`, a worker of a shared
    search or of a multi-worker run)."""
    from tfresnet import check

    if not args.data_dir or args.no_check or not chief or (args.tune and _search_worker_id() is not None):
        return None
    with console.native_stderr_captured(enabled=not args.verbose):
        found = check.check_dataset(args.data_dir, val_split=args.val_split, seed=args.seed)
    print(check.summary_table(found))
    if check.has_problems(found):
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
    export_dir = os.path.abspath(_export_dir(args))
    if os.path.isfile(export_dir):
        raise ValueError(f"--export-dir {export_dir!r} is a file: the export is a folder. Pass another path.")
    return [*folders, ("--export-dir", os.path.dirname(export_dir))]


# === The run ===


def _load_data(args: argparse.Namespace, *, drop_remainder: bool):
    from tfresnet import data as data_module

    options = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "val_split": args.val_split,
        "augmentation": args.augmentation,
        "seed": args.seed,
        "drop_remainder": drop_remainder,
    }
    if args.data_dir:
        return data_module.from_folder(args.data_dir, **options)
    return data_module.from_tfds(args.tfds, split=args.tfds_split, data_dir=args.tfds_data_dir, **options)


def _weights(args: argparse.Namespace) -> str | None:
    return None if args.weights.lower() == "none" else args.weights


def _training_options(args: argparse.Namespace) -> dict:
    """`fine_tune`'s keyword arguments, from the flags."""
    return {
        "backbone": args.backbone,
        "weights": _weights(args),
        "head_units": args.head_units or None,
        "dropout": args.dropout,
        "head_epochs": args.head_epochs,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "fine_tune_learning_rate": args.fine_tune_learning_rate,
        "freeze_until": args.freeze_until,
        "label_smoothing": args.label_smoothing,
        "class_weight": args.class_weight,
        "mixed_precision": args.mixed_precision,
        "jit_compile": {"auto": "auto", "on": True, "off": False}[args.jit_compile],
        "patience": args.patience or None,
        "seed": args.seed,
    }


def _search(args: argparse.Namespace, data, strategy) -> dict:
    """Searches with the same data, recipe and flags; returns `fine_tune` keyword arguments."""
    from tfresnet import tuning

    return tuning.search(
        data,
        backbone=args.backbone,
        weights=_weights(args),
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
    return args.tune_dir or os.path.join(args.output_dir, "tuning")


def _export_dir(args: argparse.Namespace) -> str:
    return args.export_dir or os.path.join(args.output_dir, "saved_model", "1")


def _search_worker_id() -> str | None:
    """The `KERASTUNER_TUNER_ID` of a worker of a shared search; None on its chief or alone.

    keras-tuner shares a search when `KERASTUNER_ORACLE_IP` is set; the process whose tuner id
    contains "chief" holds the oracle. Only it (or a process searching alone) goes on to train,
    report and export: the workers' part ends with the search.
    """
    from tfresnet.tuning.tuner import role

    return os.environ["KERASTUNER_TUNER_ID"] if role() == "worker" else None


def _report_and_export(
    args: argparse.Namespace, data, result, *, chief: bool, dataset_check: dict | None
) -> int:
    """Writes the report and the SavedModel (on the chief; other workers only keep pace).

    With `--calibrate`, the temperature fitted on the validation set is baked into the model
    before the export, and recorded in `tfresnet_config.json`.
    """
    from tfresnet import calibration, export, report

    # Every worker of a multi-worker run evaluates and exports, so that none leaves the others
    # early; only the chief's files are kept.
    output_dir = args.output_dir if chief else tempfile.mkdtemp(prefix="tfresnet-worker-")
    if data.validation is not None:
        evaluation, evaluated_on = data.validation, "validation"
    else:
        evaluation, evaluated_on = data.train_evaluation, "training (evaluation transform)"
    written = report.write_report(
        result.model,
        evaluation,
        data.class_names,
        output_dir,
        history=result.history,
        evaluated_on=evaluated_on,
        dataset_check=dataset_check,
        config=result.config,
        calibrate=args.calibrate,
    )
    if args.calibrate:
        result.config["temperature"] = written["calibration"]["temperature"]
        calibration.apply_temperature(result.model, written["calibration"]["temperature"])
    export_dir = _export_dir(args)
    if not chief:
        export_dir = os.path.join(output_dir, "saved_model")
    export.export_saved_model(
        result.model, export_dir, class_names=data.class_names, top_k=args.top_k, config=result.config
    )
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        return 0
    exports = _export_formats_and_measure(args, data, result.model, evaluation, output_dir)
    summary = {
        "accuracy": written["accuracy"],
        "evaluated_on": evaluated_on,
        "expected_calibration_error": written["expected_calibration_error"],
        "output_dir": os.path.abspath(args.output_dir),
        "export_dir": os.path.abspath(export_dir),
        "report_html": os.path.abspath(os.path.join(output_dir, report.HTML_FILE)),
        "skipped_files": len(data.skipped),
    }
    if args.calibrate:
        summary["temperature"] = written["calibration"]["temperature"]
        summary["expected_calibration_error_after"] = written["calibration"][
            "expected_calibration_error_after"
        ]
    if exports:
        summary["exports"] = {name: entry["path"] for name, entry in exports.items()}
    print(json.dumps(summary))
    return 0


def _export_formats_and_measure(args, data, model, evaluation, output_dir: str) -> dict:
    """`OUTPUT_DIR/model.tflite` / `model.onnx`, their agreement added to report.json as `exports`."""
    if not set(args.export_formats) - {"saved_model"}:
        return {}
    from tfresnet import checkpoints, report
    from tfresnet.export.formats import export_formats
    from tfresnet.export.quiet import quiet_terminal

    with quiet_terminal(verbose=args.verbose):  # the converters' own C++ lines
        exports = export_formats(
            model,
            output_dir,
            args.export_formats,
            quantize=args.quantize,
            calibration=data.train,
            validation=evaluation,
            class_names=data.class_names,
        )
    path = os.path.join(output_dir, report.REPORT_FILE)
    checkpoints.write_json(path, {**(checkpoints.read_json(path) or {}), "exports": exports})
    return exports


def _find_lr(args: argparse.Namespace, data) -> int:
    from tfresnet import lr_finder, models

    model = models.build_classifier(
        len(data.class_names),
        backbone=args.backbone,
        weights=_weights(args),
        image_size=args.image_size,
        head_units=args.head_units or None,
        dropout=args.dropout,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    plot = os.path.join(args.output_dir, "lr_find.png")
    sweep = lr_finder.find_lr(model, data.train, label_smoothing=args.label_smoothing, output_path=plot)
    with open(os.path.join(args.output_dir, "lr_find.json"), "w") as file:
        json.dump(sweep, file, indent=2)
    print(
        json.dumps(
            {"suggested_learning_rate": sweep["suggested_learning_rate"], "plot": os.path.abspath(plot)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
