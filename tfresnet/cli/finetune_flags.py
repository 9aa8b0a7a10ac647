"""The flags of `python -m tfresnet.finetune`, in groups (`--help` documents each), and the run
settings they make (`run_settings`)."""

from __future__ import annotations

import argparse

from tfresnet.cli import console


def _backbone(text: str) -> str:
    from tfresnet.models.backbones import get_backbone

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
    from tfresnet.export.kinds import FORMATS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(FORMATS)}, received {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command's flags, in groups; `--help` documents each.

    Example:
    >>> build_parser().parse_args(["--data-dir", "flowers/"]).epochs
    10
    """
    parser = console.Parser(
        prog="python -m tfresnet.finetune",
        description="Fine-tune a ResNet50 image classifier and export it for TensorFlow Serving.",
        formatter_class=console.HelpFormatter,
    )
    _data_flags(parser.add_argument_group("data"))
    _augmentation_flags(parser.add_argument_group("augmentation"))
    _model_flags(parser.add_argument_group("model"))
    _training_flags(parser.add_argument_group("training"))
    _tune_flags(parser.add_argument_group("hyper-parameter search (keras-tuner)"))
    _outputs_flags(parser.add_argument_group("outputs"))
    return parser


def _data_flags(data: argparse._ArgumentGroup) -> None:
    """The images, the split and the batches."""
    from tfresnet.data import pipeline as loaders

    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="folder with one sub-folder of images per class")
    source.add_argument(
        "--csv",
        metavar="FILE",
        help="CSV of image paths and labels, with a header row (and maybe a split column)",
    )
    source.add_argument("--tfds", metavar="NAME", help="a TensorFlow Datasets name, e.g. tf_flowers")
    data.add_argument(
        "--image-dir", default=None, help="folder the --csv paths are relative to (default: the CSV's folder)"
    )
    data.add_argument("--path-column", default="path", help="--csv column of image paths")
    data.add_argument("--label-column", default="label", help="--csv column of labels")
    console.add_multi_label_flags(data)
    data.add_argument("--tfds-split", default="train", help="TFDS split to train on")
    data.add_argument("--tfds-data-dir", default=None, help="TFDS data_dir (default: TFDS's own)")
    data.add_argument(
        "--val-split",
        type=console.fraction,
        default=loaders.VAL_SPLIT,
        help="fraction of each class held out for validation",
    )
    data.add_argument(
        "--image-size", type=console.positive_int, default=loaders.IMAGE_SIZE, help="side of the input images"
    )
    console.add_max_image_pixels(
        data, larger="a larger --data-dir/--csv file is skipped, and the export's serving_default refuses it"
    )
    data.add_argument(
        "--batch-size", type=console.positive_int, default=loaders.BATCH_SIZE, help="images per batch"
    )
    data.add_argument(
        "--no-check",
        action="store_true",
        help="skip the dataset check of the images (duplicates, leakage across the split, bad files)",
    )


def _augmentation_flags(augmentation: argparse._ArgumentGroup) -> None:
    """What training does to its images: crops and flips, RandAugment, MixUp, CutMix."""
    from tfresnet.data import pipeline as loaders
    from tfresnet.data.augment import RANDAUGMENT_MAGNITUDE, RANDAUGMENT_OPS
    from tfresnet.training.settings import RunSettings

    augmentation.add_argument(
        "--augmentation",
        choices=loaders.AUGMENTATIONS,
        default=loaders.AUGMENTATION,
        help="standard: random resized crop and flip; randaugment: those, then RandAugment; "
        "flip: flip only; none: central crop",
    )
    augmentation.add_argument(
        "--randaugment-magnitude",
        type=_magnitude,
        default=RANDAUGMENT_MAGNITUDE,
        metavar="M",
        help="RandAugment's strength on timm's 0-10 scale (9: rotations up to 27 degrees; see README)",
    )
    augmentation.add_argument(
        "--randaugment-ops",
        type=console.non_negative_int,
        default=RANDAUGMENT_OPS,
        metavar="N",
        help="RandAugment's operations per image",
    )
    augmentation.add_argument(
        "--mixup",
        type=console.non_negative_float,
        default=RunSettings.mixup,
        metavar="ALPHA",
        help="MixUp's alpha (0: off)",
    )
    augmentation.add_argument(
        "--cutmix",
        type=console.non_negative_float,
        default=RunSettings.cutmix,
        metavar="ALPHA",
        help="CutMix's alpha (0: off; with --mixup, one or the other per batch)",
    )


def _magnitude(text: str) -> float:
    from tfresnet.data.augment import MAX_MAGNITUDE

    value = console.float_type(text)
    if not 0 <= value <= MAX_MAGNITUDE:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_MAGNITUDE}], received {text}")
    return value


def _model_flags(model: argparse._ArgumentGroup) -> None:
    """The network: backbone, weights and head."""
    from tfresnet.training.settings import RunSettings

    add_backbone_flags(model)
    model.add_argument(
        "--head-units", type=console.non_negative_int, default=0, help="hidden head units (0: none)"
    )
    model.add_argument(
        "--dropout", type=console.fraction, default=RunSettings.dropout, help="dropout before the predictions"
    )


def add_backbone_flags(group: argparse._ArgumentGroup) -> None:
    """`--backbone` and `--weights` (read `--weights` back with `weights(args)`)."""
    from tfresnet.models.backbones import BACKBONES
    from tfresnet.training.settings import RunSettings

    group.add_argument(
        "--backbone",
        type=_backbone,
        default=RunSettings.backbone,
        metavar="{" + ",".join(name for name in BACKBONES if name != "hub") + ",hub:HANDLE}",
        help="backbone (resnet-tiny, resnet-test: tiny networks for smoke runs and tests, weights none); "
        "HANDLE is a tfhub.dev/Kaggle URL or a local SavedModel folder",
    )
    group.add_argument(
        "--weights",
        default=RunSettings.weights,
        metavar="{imagenet,none,PATH}",
        help="backbone weights: ImageNet, random, or a .h5/.weights.h5 file; for resnet50-torchvision "
        "also torchvision:IMAGENET1K_V1|V2 or a .pth/.safetensors state dict",
    )


def _training_flags(training: argparse._ArgumentGroup) -> None:
    """The two phases and the recipe."""
    from tfresnet.training.distribute import MIXED_PRECISION
    from tfresnet.training.settings import CLASS_WEIGHTS
    from tfresnet.training.settings import RunSettings as defaults

    training.add_argument(
        "--head-epochs",
        type=console.non_negative_int,
        default=defaults.head_epochs,
        help="epochs of the head alone",
    )
    training.add_argument(
        "--epochs", type=console.non_negative_int, default=defaults.epochs, help="epochs of fine-tuning"
    )
    training.add_argument(
        "--learning-rate", type=console.positive_float, default=defaults.learning_rate, help="head-phase rate"
    )
    training.add_argument(
        "--fine-tune-learning-rate",
        type=console.positive_float,
        default=defaults.fine_tune_learning_rate,
        help="peak fine-tuning rate (default: a tenth of --learning-rate)",
    )
    training.add_argument(
        "--freeze-until",
        type=_layer,
        default=defaults.freeze_until,
        help="index or name of the first backbone layer fine-tuned (0: the whole backbone)",
    )
    training.add_argument(
        "--label-smoothing", type=console.fraction, default=defaults.label_smoothing, help="label smoothing"
    )
    training.add_argument(
        "--class-weight", choices=CLASS_WEIGHTS, default=defaults.class_weight, help="weigh rare classes up"
    )
    training.add_argument(
        "--ema",
        action="store_true",
        help="keep a moving average of the fine-tuned weights: validate, keep and export it",
    )
    training.add_argument(
        "--ema-momentum",
        type=console.fraction,
        default=defaults.ema_momentum,
        help="the average's momentum per step",
    )
    training.add_argument(
        "--mixed-precision",
        choices=MIXED_PRECISION,
        default=defaults.mixed_precision,
        help="auto: on with a GPU",
    )
    training.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA")
    training.add_argument(
        "--patience",
        type=console.non_negative_int,
        default=defaults.patience,
        help="early stopping patience (0: none)",
    )
    training.add_argument("--seed", type=console.seed, default=defaults.seed, help="seed for repeatable runs")


def _tune_flags(tune: argparse._ArgumentGroup) -> None:
    """The search."""
    from tfresnet.tuning import TUNERS

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


def _outputs_flags(outputs: argparse._ArgumentGroup) -> None:
    """Where things go, the export, and the other modes."""
    from tfresnet.export.kinds import QUANTIZATIONS

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
        choices=QUANTIZATIONS,
        default="none",
        help="the LiteRT file's weights (int8: activations too, calibrated on training images)",
    )
    outputs.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a temperature on the validation set and bake it into the export (calibrated probabilities)",
    )
    outputs.add_argument(
        "--tta",
        action="store_true",
        help="also evaluate with test-time augmentation (flips and crops): accuracy_tta in report.json",
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


# === From flags to settings ===


def csv_columns(args: argparse.Namespace) -> dict:
    """The CSV readers' column arguments of the flags, with `--multi-label`'s when given.

    Example:
    >>> csv_columns(build_parser().parse_args(["--csv", "tags.csv", "--multi-label"]))
    {'path_column': 'path', 'label_column': 'label', 'multi_label': True, 'label_delimiter': ' '}
    """
    columns = {"path_column": args.path_column, "label_column": args.label_column}
    if args.multi_label:
        columns.update(multi_label=True, label_delimiter=args.label_delimiter)
    return columns


def weights(args: argparse.Namespace) -> str | None:
    """`--weights` as `fine_tune` takes it (`none`: None)."""
    return None if args.weights.lower() == "none" else args.weights


def run_settings(args: argparse.Namespace):
    """The run's `RunSettings`, from the flags (what `fine_tune` is asked and `config.json` records)."""
    from tfresnet.training.settings import RunSettings

    return RunSettings(
        backbone=args.backbone,
        weights=weights(args),
        head_units=args.head_units or None,
        dropout=args.dropout,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        freeze_until=args.freeze_until,
        label_smoothing=args.label_smoothing,
        class_weight=args.class_weight,
        mixup=args.mixup,
        cutmix=args.cutmix,
        ema=args.ema,
        ema_momentum=args.ema_momentum,
        mixed_precision=args.mixed_precision,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit_compile],
        patience=args.patience or None,
        seed=args.seed,
    )
