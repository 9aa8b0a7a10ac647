"""Time to write the SavedModel: `tfresnet.export_saved_model` against Keras's `ExportArchive`
writing the same two signatures of the same model.

(a) `export_saved_model(model, ...)`: `serving_default` (encoded bytes, decoded in the graph)
    and `serve_images` (pixels), saved with `tf.saved_model.save`, each signature traced once
    (the model itself once, for both);
(b) `keras.export.ExportArchive` with the same two functions as endpoints, `write_out`: the
    plain-Keras way of the same file (each endpoint traced twice, once by `add_endpoint`, once
    in TensorFlow's save context), the fair peer;
(c) `model.export(path)`: Keras's one-line export, one endpoint on pixels only (less work,
    shown for scale).
The three take turns, the order rotated every round; each export builds its functions anew,
so no trace is reused. Both (a) and (b) are checked to serve the same probabilities
(`timed_exports`, which `benchmarks/litert_export.py` uses too).

Usage:
    python benchmarks/export.py              # ResNet50 at 224 px, 3 rounds
    python benchmarks/export.py --quick      # ResNet50 at 64 px, 2 rounds
    python benchmarks/export.py --backbone resnet-tiny --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline import describe_machine, headline, load_average  # noqa: E402

from tfresnet import build_classifier, export_saved_model  # noqa: E402
from tfresnet.data.image_size import MAX_IMAGE_PIXELS  # noqa: E402
from tfresnet.data.transforms import CROP_FRACTION  # noqa: E402
from tfresnet.export.saved_model import _signatures  # noqa: E402

CLASSES = ["a", "b", "c", "d", "e"]


def build_parser(doc: str = __doc__) -> argparse.ArgumentParser:
    """The flags of an export benchmark (this one's, and `litert_export.py`'s, with its `doc`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="backbone row (default resnet50)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (default 224)")
    parser.add_argument("--rounds", type=int, default=3, help="exports of each kind (default 3)")
    parser.add_argument("--quick", action="store_true", help="64 px, 2 rounds")
    return parser


def export_archive(model: keras.Model, path: str) -> None:
    """(b): the same two signatures through `keras.export.ExportArchive`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    signatures = _signatures(model, CLASSES, len(CLASSES), MAX_IMAGE_PIXELS, CROP_FRACTION)
    for name, function in signatures.items():
        archive.add_endpoint(name, function)
    archive.write_out(path, verbose=False)


def timed(function, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process, all threads) of `function(*args)`."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def median_table(times: dict[str, list[tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Prints and returns each export's median (wall seconds, CPU seconds) over its rounds."""
    print(f"\n{'export':<32} {'median wall s':>14} {'median CPU s':>13}")
    medians = {}
    for name, pairs in times.items():
        medians[name] = tuple(statistics.median(pair[i] for pair in pairs) for i in (0, 1))
        print(f"{name:<32} {medians[name][0]:>14.1f} {medians[name][1]:>13.1f}")
    return medians


def timed_exports(
    kinds: dict[str, Callable[[str], object]],
    outputs: Callable[[str, np.ndarray], np.ndarray],
    *,
    rounds: int,
    image_size: int,
    suffix: str = "",
) -> dict[str, tuple[float, float]]:
    """Runs each export of `kinds` `rounds` times, taking turns (the order rotated every round),
    checks that the first two kinds' files give the same `outputs(path, pixels)`, and prints
    and returns the medians (`median_table`)."""
    root = tempfile.mkdtemp(prefix="tfresnet-export-bench-")
    times = {name: [] for name in kinds}
    for round_ in range(rounds):
        names = list(kinds)[round_ % len(kinds):] + list(kinds)[:round_ % len(kinds)]
        for name in names:
            path = os.path.join(root, f"{list(kinds).index(name)}-{len(times[name])}{suffix}")
            times[name].append(timed(kinds[name], path))
            print(f"  round {round_ + 1} {name}: {times[name][-1][0]:.1f} s wall", flush=True)

    pixels = np.random.default_rng(0).uniform(0, 255, (4, image_size, image_size, 3)).astype("float32")
    ours, theirs = (outputs(os.path.join(root, f"{i}-0{suffix}"), pixels) for i in (0, 1))
    gap = float(np.max(np.abs(ours - theirs)))
    print(f"load average after: {load_average()}; largest difference of the probabilities "
          f"(a) vs (b): {gap:.1e}")
    if gap > 1e-5:
        raise SystemExit("the two exports compute different probabilities")
    return median_table(times)


def served(path: str, pixels: np.ndarray) -> np.ndarray:
    return tf.saved_model.load(path).signatures["serve_images"](images=tf.constant(pixels))["probabilities"]


def model_to_export(argv: list[str] | None, doc: str = __doc__) -> tuple[argparse.Namespace, keras.Model]:
    """The flags of an export benchmark and the classifier it exports; prints the machine."""
    args = build_parser(doc).parse_args(argv)
    if args.quick:
        args.image_size, args.rounds = 64, 2
    print(describe_machine())
    print(f"{args.backbone} classifier, {args.image_size} px, {len(CLASSES)} classes, random weights; "
          f"{args.rounds} rounds; load average before: {load_average()}", flush=True)
    model = build_classifier(len(CLASSES), backbone=args.backbone, weights=None, image_size=args.image_size)
    return args, model


def main(argv: list[str] | None = None) -> int:
    args, model = model_to_export(argv)
    kinds = {
        "export_saved_model": lambda path: export_saved_model(model, path, class_names=CLASSES),
        "ExportArchive, same signatures": lambda path: export_archive(model, path),
        "model.export (one endpoint)": lambda path: model.export(path, verbose=False),
    }
    medians = timed_exports(kinds, served, rounds=args.rounds, image_size=args.image_size)
    (wall_a, cpu_a) = medians["export_saved_model"]
    (wall_b, cpu_b) = medians["ExportArchive, same signatures"]
    print(headline("export_saved_model", f"ExportArchive of the same signatures ({args.image_size} px)",
                   wall_b / wall_a, cpu_b / cpu_a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
