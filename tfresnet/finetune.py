"""`python -m tfresnet.finetune`: from a folder of images (or a TFDS dataset) to a SavedModel.

A thin command over the library: load the data, (optionally search hyper-parameters,)
fine-tune with the two-phase recipe, write the evaluation report and export for serving.
Bad input stops it before any training with one line on stderr and exit code 2.

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

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """Reports a bad flag in one line (not the whole usage) and exits with code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, received {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, received {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, received {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), received {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, received {text}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    """The command's flags, in groups; `--help` documents each."""
    parser = _Parser(
        prog="python -m tfresnet.finetune",
        description="Fine-tune a ResNet50 image classifier and export it for TensorFlow Serving.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    source.add_argument("--tfds", metavar="NAME", help="a TensorFlow Datasets name, e.g. tf_flowers")
    data.add_argument("--tfds-split", default="train", help="TFDS split to train on")
    data.add_argument("--tfds-data-dir", default=None, help="TFDS data_dir (default: TFDS's own)")
    data.add_argument(
        "--val-split", type=_fraction, default=0.2, help="fraction of each class held out for validation"
    )
    data.add_argument("--image-size", type=_positive_int, default=224, help="side of the input images")
    data.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch")
    data.add_argument(
        "--augmentation",
        choices=("none", "flip", "standard"),
        default="standard",
        help="standard: random resized crop and flip; flip: flip only; none: central crop",
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--backbone",
        type=_backbone,
        default="resnet50",
        metavar="{resnet50,resnet50v2,resnet50-torchvision,hub:HANDLE}",
        help="backbone; HANDLE is a tfhub.dev/Kaggle URL or a local SavedModel folder",
    )
    model.add_argument(
        "--weights",
        default="imagenet",
        metavar="{imagenet,none,PATH}",
        help="backbone weights: ImageNet, random, or a .h5/.weights.h5 file; for resnet50-torchvision "
        "also torchvision:IMAGENET1K_V1|V2 or a .pth/.safetensors state dict",
    )
    model.add_argument("--head-units", type=_non_negative_int, default=0, help="hidden head units (0: none)")
    model.add_argument("--dropout", type=_fraction, default=0.2, help="dropout before the predictions")

    training = parser.add_argument_group("training")
    training.add_argument("--head-epochs", type=_non_negative_int, default=3, help="epochs of the head alone")
    training.add_argument("--epochs", type=_non_negative_int, default=10, help="epochs of fine-tuning")
    training.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="head-phase rate")
    training.add_argument(
        "--fine-tune-learning-rate",
        type=_positive_float,
        default=None,
        help="peak fine-tuning rate (default: a tenth of --learning-rate)",
    )
    training.add_argument(
        "--freeze-until",
        type=_layer,
        default=0,
        help="index or name of the first backbone layer fine-tuned (0: the whole backbone)",
    )
    training.add_argument("--label-smoothing", type=_fraction, default=0.1, help="label smoothing")
    training.add_argument(
        "--class-weight", choices=("balanced", "none"), default="balanced", help="weigh rare classes up"
    )
    training.add_argument(
        "--mixed-precision", choices=("auto", "on", "off"), default="auto", help="auto: on with a GPU"
    )
    training.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA")
    training.add_argument(
        "--patience", type=_non_negative_int, default=5, help="early stopping patience (0: none)"
    )
    training.add_argument("--seed", type=int, default=None, help="seed for repeatable runs")

    tune = parser.add_argument_group("hyper-parameter search (keras-tuner)")
    tune.add_argument(
        "--tune",
        action="store_true",
        help="search head units, dropout and learning rate first, then train the best as usual",
    )
    tune.add_argument("--tuner", choices=("hyperband", "random", "bayesian"), default="hyperband")
    tune.add_argument("--max-trials", type=_positive_int, default=10, help="trials in all")
    tune.add_argument("--tune-epochs", type=_positive_int, default=5, help="epochs per trial (at most)")
    tune.add_argument(
        "--tune-dir", default=None, help="search directory, resumable (default: OUTPUT_DIR/tuning)"
    )
    tune.add_argument("--overwrite", action="store_true", help="start the search afresh")

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--output-dir", default="tfresnet_run", help="checkpoints, logs, report and plots")
    outputs.add_argument(
        "--export-dir", default=None, help="SavedModel folder (default: OUTPUT_DIR/saved_model/1)"
    )
    outputs.add_argument("--top-k", type=_positive_int, default=5, help="classes returned by the export")
    outputs.add_argument("--resume", action="store_true", help="continue the run found in --output-dir")
    outputs.add_argument(
        "--find-lr",
        action="store_true",
        help="only sweep the head phase's learning rate: write lr_find.png and a suggestion, train nothing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done, 2 bad usage or bad input).

    Example:
    >>> main(["--data-dir", "flowers/", "--epochs", "2", "--output-dir", "runs/flowers"])
    0
    """
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tfresnet import data as data_module
    from tfresnet import export, training

    try:
        strategy = training.resolve_strategy()
        loader_options = {
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "val_split": args.val_split,
            "augmentation": args.augmentation,
            "seed": args.seed,
            "drop_remainder": strategy.num_replicas_in_sync > 1,
        }
        if args.data_dir:
            data = data_module.from_folder(args.data_dir, **loader_options)
        else:
            data = data_module.from_tfds(
                args.tfds, split=args.tfds_split, data_dir=args.tfds_data_dir, **loader_options
            )
        if args.find_lr:
            return _find_lr(args, data)
        if args.tune:
            _apply_search(args, loader_options, strategy)
        result = training.fine_tune(
            data,
            backbone=args.backbone,
            weights=None if args.weights.lower() == "none" else args.weights,
            head_units=args.head_units or None,
            dropout=args.dropout,
            head_epochs=args.head_epochs,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            fine_tune_learning_rate=args.fine_tune_learning_rate,
            freeze_until=args.freeze_until,
            label_smoothing=args.label_smoothing,
            class_weight=args.class_weight,
            mixed_precision=args.mixed_precision,
            jit_compile={"auto": "auto", "on": True, "off": False}[args.jit_compile],
            patience=args.patience or None,
            seed=args.seed,
            output_dir=args.output_dir,
            resume=args.resume,
            strategy=strategy,
        )
    except (ValueError, OSError) as error:
        print(f"{build_parser().prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Every worker of a multi-worker run evaluates and exports, so that none leaves the others
    # early; only the chief's files are kept.
    chief = training.is_chief(strategy)
    output_dir = args.output_dir if chief else tempfile.mkdtemp(prefix="tfresnet-worker-")
    evaluation = data.validation if data.validation is not None else data.train
    report = export.write_report(
        result.model, evaluation, data.class_names, output_dir, history=result.history
    )
    export_dir = args.export_dir or os.path.join(args.output_dir, "saved_model", "1")
    if not chief:
        export_dir = os.path.join(output_dir, "saved_model")
    export.export_saved_model(
        result.model, export_dir, class_names=data.class_names, top_k=args.top_k, config=result.config
    )
    if not chief:
        shutil.rmtree(output_dir, ignore_errors=True)
        return 0
    summary = {
        "accuracy": report["accuracy"],
        "evaluated_on": "validation" if data.validation is not None else "training",
        "output_dir": os.path.abspath(args.output_dir),
        "export_dir": os.path.abspath(export_dir),
        "skipped_files": len(data.skipped),
    }
    print(json.dumps(summary))
    return 0


def _apply_search(args: argparse.Namespace, loader_options: dict, strategy) -> None:
    """Runs the search on un-augmented data and puts the best values into `args`."""
    from tfresnet import data as data_module
    from tfresnet import tuning

    options = {**loader_options, "augmentation": "none"}
    if args.data_dir:
        data = data_module.from_folder(args.data_dir, **options)
    else:
        data = data_module.from_tfds(args.tfds, split=args.tfds_split, data_dir=args.tfds_data_dir, **options)
    best = tuning.search(
        data,
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        tuner=args.tuner,
        max_trials=args.max_trials,
        tune_epochs=args.tune_epochs,
        directory=args.tune_dir or os.path.join(args.output_dir, "tuning"),
        overwrite=args.overwrite,
        seed=args.seed,
        distribution_strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
    )
    args.head_units = best["head_units"] or 0
    args.dropout = best["dropout"]
    args.learning_rate = best["learning_rate"]


def _find_lr(args: argparse.Namespace, data) -> int:
    from tfresnet import models, training

    model = models.build_classifier(
        len(data.class_names),
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        head_units=args.head_units or None,
        dropout=args.dropout,
    )
    os.makedirs(args.output_dir, exist_ok=True)
    plot = os.path.join(args.output_dir, "lr_find.png")
    sweep = training.find_lr(model, data.train, label_smoothing=args.label_smoothing, output_path=plot)
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
