"""`python -m tfresnet.predict MODEL PATH...`: classify image files with an exported model.

MODEL is a SavedModel folder, a LiteRT `.tflite` or an `.onnx` file, with its class names in
`labels.txt` inside the folder, in `<file>.labels.txt` beside a file. PATH are image files or
folders, searched recursively for `.bmp`, `.gif`, `.jpeg`, `.jpg` and `.png` files. MODEL, PATH
and `--output` may be local or on a store TensorFlow reads (`gs://bucket/photos`). Every image
is decoded, centre-cropped and resized by `tfresnet.decode_for_eval`, the evaluation pipeline's
own transform, so each format sees exactly what the model was evaluated on.

Output: CSV with a header, one row per image, `path,label,score` (with `--top-k K` also
`label_2,score_2 ... label_K,score_K`) and `error`, the reason an image could not be read (its
other columns empty; the other images are still classified). `--output x.jsonl` writes JSON
lines with the same keys. Without `--output` the rows go to standard output.

A multi-label model (trained with `--multi-label`; its export records each label's decision
threshold) writes `path,labels,scores,error`: `labels` holds every label whose probability
reaches its threshold, in class order, joined by `--label-delimiter` (default a space, as in a
training CSV), and `scores` their probabilities joined the same way; both are empty for an
image with no label. `--top-k` does not apply to it (ignored): a threshold, not a rank, decides
each label. JSON lines hold lists (`"labels": ["sea", "sky"]`).

Exit codes: 0 when any image was classified; 2 (one line on stderr, nothing written) for a
missing model, an unknown format, no images at all, or bad flags; 2 also when no image could
be read (the rows, each naming its error, are written first).

In Python, `tfresnet.load_predictor(MODEL).predict(paths_or_bytes, top_k=K)` returns the same rows
(`tfresnet.export.predictor`).

Example:
    python -m tfresnet.predict models/flowers/model.tflite photos/ --top-k 3 --output preds.csv
    python -m tfresnet.predict models/scenes/1 photos/ --label-delimiter ";" --output tags.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

from tfresnet import paths

PROG = "python -m tfresnet.predict"
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    from tfresnet.cli import console

    parser = console.Parser(
        prog=PROG,
        description="Classify image files with an exported model (SavedModel folder, .tflite or .onnx).",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="SavedModel folder, .tflite or .onnx file")
    parser.add_argument(
        "paths", metavar="PATH", nargs="+", help="image files or folders (searched recursively)"
    )
    parser.add_argument(
        "--top-k",
        type=console.positive_int,
        default=1,
        help="labels per image, best first (ignored for a multi-label model: each label over its threshold)",
    )
    console.add_label_delimiter(
        parser, separates="a multi-label model's labels, and their scores, in a CSV cell"
    )
    parser.add_argument(
        "--batch-size", type=console.positive_int, default=32, help="images per call of the model"
    )
    parser.add_argument(
        "--output", default=None, help="CSV file, or .jsonl for JSON lines (default: CSV on stdout)"
    )
    console.add_max_image_pixels(parser, larger="a larger one gets an error row")
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' own log lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0: images classified, 2: bad input).

    Example:
        main(["models/flowers/model.onnx", "photos/", "--output", "preds.jsonl"])
        # 0
    """
    from tfresnet.cli.quiet import quiet_terminal

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    with quiet_terminal(verbose=args.verbose):
        try:
            predictor, items = _prepare(args)
        except (ValueError, OSError, ImportError) as error:
            return _bad_input(error)
        rows = predictor.predict(items, top_k=args.top_k, progress=True)
    json_lines = _json_lines(args.output)
    text = _format(rows, predictor.columns(args.top_k), json_lines=json_lines, delimiter=args.label_delimiter)
    if args.output:
        from tfresnet.files import write_text

        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    failed = sum(row["error"] is not None for row in rows)
    if failed == len(rows):
        return _bad_input(ValueError(f"None of the {len(rows)} images could be read: see the error column."))
    if failed:
        print(
            f"{PROG}: {failed} of {len(rows)} images could not be read: see the error column.",
            file=sys.stderr,
        )
    return 0


def _prepare(args: argparse.Namespace):
    """The predictor and the images, checked: a model that loads, labels that fit, images."""
    from tfresnet.export.predictor import list_images, load_predictor

    items = list_images(args.paths)
    if not items:
        raise ValueError(
            f"No images found in {' '.join(args.paths)}: pass image files or folders holding "
            f".jpg, .jpeg, .png, .bmp or .gif files."
        )
    if args.output:
        folder = os.path.dirname(paths.absolute(args.output))
        # An object store (gs://) has no folders to make: its objects are named by their path.
        if paths.isdir(args.output) or (paths.is_local(folder) and not paths.isdir(folder)):
            raise ValueError(
                f"--output {args.output!r} cannot be written: pass a file in an existing folder."
            )
    predictor = load_predictor(args.model, batch_size=args.batch_size, max_image_pixels=args.max_image_pixels)
    predictor._check_top_k(args.top_k)
    if predictor.multi_label:
        _check_delimiter(args.label_delimiter, predictor.class_names)
    return predictor, items


def _check_delimiter(delimiter: str, class_names: list[str]) -> None:
    """The delimiter must tell a multi-label model's labels apart when they are joined."""
    if not delimiter:
        raise ValueError("--label-delimiter must not be empty: pass what separates the labels, e.g. ';'.")
    joined = [name for name in class_names if delimiter in name]
    if joined:
        raise ValueError(
            f"--label-delimiter {delimiter!r} occurs in the label {joined[0]!r}: pass another one, "
            f"e.g. ';' or '|'."
        )


def _json_lines(output: str | None) -> bool:
    return bool(output) and output.lower().endswith(JSON_LINES_SUFFIXES)


def _format(rows: list[dict], columns: list[str], *, json_lines: bool, delimiter: str = " ") -> str:
    """JSON lines, or CSV where a multi-label row's lists are joined by `delimiter`."""
    if json_lines:
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(value, delimiter) for key, value in row.items()})
    return buffer.getvalue()


def _cell(value, delimiter: str):
    """A CSV cell: empty for None, a list's items (a multi-label row's) joined by `delimiter`."""
    if value is None:
        return ""
    if isinstance(value, list):
        return delimiter.join(str(item) for item in value)
    return value


def _bad_input(error: BaseException) -> int:
    from tfresnet.cli import console

    return console.print_bad_input(PROG, error)


if __name__ == "__main__":
    sys.exit(main())
