"""`python -m tfresnet.export SAVED_MODEL_DIR --format {litert,onnx} --output FILE`: convert an export.

Converts a SavedModel written by `export_saved_model` (no retraining) to a LiteRT `.tflite` file
(`--quantize none|float16|dynamic|int8`; int8 is calibrated on `--calibration-data`, a folder of
training images) or an ONNX file, with its class names in `<file>.labels.txt` (and a multi-label
model's thresholds in `<file>.json`). With `--eval-data`, a folder of class sub-folders or a labels
CSV (`path,label`; a multi-label model's labels separated by `--label-delimiter`), it also
measures the file against the SavedModel on those images. Every path may be local or on a store
TensorFlow reads (`gs://bucket/models/flowers/1`).

Prints one JSON line: `output`, `format`, `quantization`, `size_bytes`, and with `--eval-data`
`agreement` (share of images whose top-1 label equals the SavedModel's), `max_abs_difference`
(of probabilities), `accuracy`, `saved_model_accuracy` and `eval_images`. For a multi-label
model `agreement` is the share of images given the same labels (those over their thresholds),
and `f1_micro` and `saved_model_f1_micro` take the accuracies' place.

Exit codes: 0 done; 2 bad input (one line on stderr, nothing written): a bad flag, a missing or
foreign SavedModel, int8 without calibration data, data folders without images; 1 when the
converter cannot convert the model (one line saying why; `--verbose` shows the traceback).

Example:
    python -m tfresnet.export models/flowers/1 --format litert --quantize int8 \\
        --calibration-data flowers/train --eval-data flowers/val --output models/flowers/model.tflite
"""

from __future__ import annotations

import argparse
import json
import sys

from tfresnet import paths
from tfresnet.cli import console
from tfresnet.data.label_sets import LABEL_DELIMITER
from tfresnet.export.kinds import FILE_FORMATS, QUANTIZATIONS

PROG = "python -m tfresnet.export"
EXIT_CANNOT_CONVERT = 1
# Batches the evaluation images are compared in.
EVAL_BATCH = 32


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = console.Parser(
        prog=PROG,
        description="Convert a tfresnet SavedModel to LiteRT (.tflite) or ONNX, optionally measured.",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument("saved_model", metavar="SAVED_MODEL_DIR", help="folder written by export_saved_model")
    parser.add_argument("--format", required=True, choices=list(FILE_FORMATS), help="file format")
    parser.add_argument(
        "--quantize", choices=QUANTIZATIONS, default="none", help="LiteRT weights (and with int8 activations)"
    )
    parser.add_argument(
        "--calibration-data",
        metavar="DIR",
        default=None,
        help="training images for int8 (searched recursively)",
    )
    parser.add_argument(
        "--eval-data",
        metavar="DIR|CSV",
        default=None,
        help="class sub-folders of images, or a labels CSV (path,label), to measure the file on",
    )
    console.add_label_delimiter(parser, separates="a multi-label model's labels in the --eval-data CSV")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .tflite or .onnx file to write")
    parser.add_argument("--verbose", action="store_true", help="also show the converters' own log lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code.

    Example:
    >>> main(["models/flowers/1", "--format", "onnx", "--output", "models/flowers/model.onnx"])
    0
    """
    from tfresnet.cli.quiet import quiet_terminal

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    with quiet_terminal(verbose=args.verbose):
        try:
            reference, calibration, evaluation = _prepare(args)
        except (ValueError, OSError, ImportError) as error:
            return _fail(error, console.EXIT_BAD_INPUT)
        try:
            _convert(args, calibration)
        except (ValueError, OSError, ImportError) as error:
            return _fail(error, console.EXIT_BAD_INPUT)
        except Exception as error:  # the converters raise many types
            if args.verbose:
                raise
            return _fail(
                RuntimeError(f"cannot convert {args.saved_model!r} to {args.format}: {_first_reason(error)}"),
                EXIT_CANNOT_CONVERT,
            )
        summary = {
            "output": paths.absolute(args.output),
            "format": args.format,
            "quantization": args.quantize,
            "size_bytes": paths.stat(args.output)[0],
        }
        if evaluation is not None:
            summary.update(_measure(reference, args.output, evaluation))
    print(json.dumps(summary))
    return 0


def _prepare(args: argparse.Namespace):
    """Checks the flags and the data before converting; returns the SavedModel's runtime, the
    calibration images (int8) and the evaluation dataset (or None)."""
    from tfresnet.export.common import check_output_path
    from tfresnet.export.runtime import SavedModelRuntime, import_runtime, model_format

    if args.format == "onnx" and args.quantize != "none":
        raise ValueError(f"--quantize {args.quantize} applies to --format litert; ONNX files are float32.")
    if args.quantize == "int8" and not args.calibration_data:
        raise ValueError(
            "--quantize int8 needs --calibration-data DIR: a folder of a few hundred training images "
            "to calibrate the int8 activations."
        )
    suffix = FILE_FORMATS[args.format].suffix
    if not args.output.lower().endswith(suffix):
        raise ValueError(
            f"--output must end with {suffix} for --format {args.format}. Received: {args.output!r}"
        )
    if model_format(args.saved_model) != "saved_model":
        raise ValueError(
            f"{args.saved_model!r} is not a SavedModel folder: pass the folder export_saved_model wrote."
        )
    import_runtime(args.format)
    reference = SavedModelRuntime(args.saved_model)
    calibration = None
    if args.quantize == "int8":
        calibration = _calibration_images(args.calibration_data, reference)
    evaluation = None
    if args.eval_data:
        evaluation = _evaluation_data(args.eval_data, reference, args.label_delimiter)
    check_output_path(args.output, suffix)
    return reference, calibration, evaluation


def _calibration_images(folder: str, reference):
    """Up to `CALIBRATION_IMAGES` readable images of `folder`, drawn evenly from all of it."""
    import numpy as np

    from tfresnet.export.litert import CALIBRATION_IMAGES
    from tfresnet.export.predictor import ImageDecoder, list_images

    if not paths.isdir(folder):
        raise FileNotFoundError(
            f"--calibration-data {folder!r} is not a folder: pass a folder of training images."
        )
    files = list_images([folder])
    order = np.random.default_rng(0).permutation(len(files))
    decoder, images = ImageDecoder(reference.image_size, crop_fraction=reference.crop_fraction), []
    for start in range(0, len(files), CALIBRATION_IMAGES):
        chunk = [files[i] for i in order[start : start + CALIBRATION_IMAGES]]
        images += [image for image in decoder.decode(chunk) if not isinstance(image, str)]
        if len(images) >= CALIBRATION_IMAGES:
            break
    if not images:
        raise ValueError(
            f"--calibration-data {folder!r} holds no readable .jpg, .jpeg, .png, .bmp or .gif images."
        )
    return np.stack(images[:CALIBRATION_IMAGES])


def _evaluation_data(path: str, reference, delimiter: str = LABEL_DELIMITER):
    """The images of a folder or labels CSV under the evaluation transform, labelled with the
    model's indices (a multi-label model's: multi-hot rows over its labels)."""
    import tensorflow as tf

    from tfresnet.data import from_csv, from_folder

    options = {
        "image_size": reference.image_size,
        "crop_fraction": reference.crop_fraction,
        "batch_size": EVAL_BATCH,
        "val_split": 0,
        "augmentation": "none",
        "cache": False,
    }
    if paths.isfile(path) and path.lower().endswith(".csv"):
        multi_label = {"multi_label": True, "label_delimiter": delimiter} if reference.multi_label else {}
        data = from_csv(path, **options, **multi_label)
    else:
        data = from_folder(path, **options)
    unknown = sorted(set(data.class_names) - set(reference.class_names))
    if unknown:
        raise ValueError(
            f"--eval-data {path!r} has classes the model does not know: {unknown}. Its sub-folders "
            f"(or CSV labels) must be named after the model's labels: {reference.class_names}"
        )
    indices = tf.constant([reference.class_names.index(name) for name in data.class_names])
    if not reference.multi_label:
        return data.train_evaluation.map(lambda images, labels: (images, tf.gather(indices, labels)))
    columns = tf.one_hot(indices, len(reference.class_names))  # the data's label j -> the model's
    if data.multi_label:
        return data.train_evaluation.map(lambda images, labels: (images, tf.matmul(labels, columns)))
    return data.train_evaluation.map(lambda images, labels: (images, tf.gather(columns, labels)))


def _convert(args: argparse.Namespace, calibration) -> None:
    if args.format == "litert":
        from tfresnet.export.litert import export_litert

        export_litert(
            args.saved_model, args.output, quantization=args.quantize, representative_data=calibration
        )
    else:
        from tfresnet.export.onnx_export import export_onnx

        export_onnx(args.saved_model, args.output)


def _measure(reference, output: str, evaluation) -> dict:
    """Agreement with the SavedModel, difference of probabilities and accuracies on `evaluation`."""
    from tfresnet.export.formats import compare, predict_all
    from tfresnet.export.runtime import load_runtime

    converted = load_runtime(output)
    outputs = predict_all(
        evaluation,
        {"saved_model": reference.probabilities, "converted": converted.probabilities},
        multi_label=reference.multi_label,
    )
    figures = compare(
        outputs["saved_model"], outputs["converted"], outputs["labels"], thresholds=reference.thresholds
    )
    measure = "f1_micro" if reference.multi_label else "accuracy"
    figures[f"saved_model_{measure}"] = figures.pop(f"reference_{measure}")
    return {**figures, "eval_images": len(outputs["labels"])}


def _fail(error: BaseException, code: int) -> int:
    console.print_bad_input(PROG, error)
    return code


def _first_reason(error: BaseException, limit: int = 300) -> str:
    """The converter's first error line (its messages run to pages), at most `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower()]
    reason = (errors or lines or [type(error).__name__])[0]
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
