"""Latency and throughput of the exported SavedModel on JPEG bytes, against Keras on decoded
pixels.

(a) `serving_default` of `tfresnet.export_saved_model`'s SavedModel (reloaded with
    `tf.saved_model.load`), given JPEG bytes: decoding, central crop, resize and the
    normalisation run in the graph;
(b) its `serve_images` signature, given the decoded pixels: (a) without the decoding;
(c) `model.predict(x)` on the decoded pixels;
(d) `model.predict_on_batch(x)`;
(e) a direct call, `model(x)` (eager).

The pixels of (b) to (e) are those (a) decodes (`tfresnet.decode_for_eval`, done once,
untimed). Calls go round-robin over the five, so a change of load hits them alike. Batch 1:
the median (p50) and 99th percentile (p99) latency of single calls; batch 32: images per
second over whole calls. The model is `build_classifier(5, weights=None)`: the weights do not
change the speed.

Usage:
    python benchmarks/serving.py            # 224 px, 60 single-image calls, 3 calls of 32
    python benchmarks/serving.py --quick    # 64 px, 100 single-image calls, 5 calls of 32
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline import load_average, write_photos  # noqa: E402  (benchmarks/pipeline.py)
from training import device_description  # noqa: E402  (benchmarks/training.py)

from tfresnet import build_classifier, decode_for_eval, export_saved_model  # noqa: E402

VARIANTS = {
    "a": "(a) SavedModel serving_default, JPEG bytes",
    "b": "(b) SavedModel serve_images, pixels",
    "c": "(c) model.predict, pixels",
    "d": "(d) model.predict_on_batch, pixels",
    "e": "(e) model(x), pixels",
}
WARM_UP_CALLS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="64 px (about a minute on 2 cores)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224; 64 with --quick")
    parser.add_argument("--calls", type=int, default=None,
                        help="timed single-image calls of each variant (default: 60; 100 with --quick)")
    parser.add_argument("--batch-calls", type=int, default=None,
                        help="timed calls of a whole batch, each variant (default: 3; 5 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the JPEGs sent")
    return parser


def callers(served, model: keras.Model, jpegs: list[bytes], pixels: np.ndarray) -> dict:
    """One function per variant, each running a complete prediction of `len(jpegs)` images."""
    serving_default = served.signatures["serving_default"]
    serve_images = served.signatures["serve_images"]
    image_bytes = tf.constant(jpegs)
    images = tf.constant(pixels)
    return {
        "a": lambda: serving_default(image_bytes=image_bytes)["probabilities"].numpy(),
        "b": lambda: serve_images(images=images)["probabilities"].numpy(),
        "c": lambda: model.predict(pixels, verbose=0),
        "d": lambda: model.predict_on_batch(pixels),
        "e": lambda: model(images).numpy(),
    }


def time_round_robin(calls: dict, count: int) -> dict[str, list[float]]:
    """Seconds of each of `count` calls of every function, taken in turn after a warm-up."""
    for call in calls.values():
        for _ in range(WARM_UP_CALLS):
            call()
    seconds = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or (64 if args.quick else 224)
    args.calls = args.calls or (100 if args.quick else 60)
    args.batch_calls = args.batch_calls or (5 if args.quick else 3)
    width, height = args.photo_size
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}; {device_description()}")
    print(f"ResNet50 classifier, {args.image_size} px, {args.classes} classes; JPEGs of "
          f"{width}x{height} px; batch 1: {args.calls} timed calls each, batch "
          f"{args.batch_size}: {args.batch_calls} timed calls each, after {WARM_UP_CALLS} "
          f"warm-up calls")
    print(f"load average before: {load_average()}")

    model = build_classifier(args.classes, weights=None, image_size=args.image_size)
    with tempfile.TemporaryDirectory() as root:
        write_photos(os.path.join(root, "photos"), num_images=args.batch_size, classes=1,
                     width=width, height=height)
        jpegs = []
        for path in sorted(glob.glob(os.path.join(root, "photos", "*", "*.jpg"))):
            with open(path, "rb") as file:
                jpegs.append(file.read())
        start = time.perf_counter()
        export_dir = export_saved_model(model, os.path.join(root, "model", "1"),
                                        class_names=[f"class{i}" for i in range(args.classes)])
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        served = tf.saved_model.load(export_dir)
        load_seconds = time.perf_counter() - start
        pixels = np.stack([decode_for_eval(jpeg, args.image_size).numpy() for jpeg in jpegs])
        single = time_round_robin(callers(served, model, jpegs[:1], pixels[:1]), args.calls)
        batch = time_round_robin(callers(served, model, jpegs, pixels), args.batch_calls)
    print(f"load average after: {load_average()}")
    print(f"export_saved_model: {export_seconds:.1f} s; tf.saved_model.load: {load_seconds:.1f} s")

    p50 = {name: float(np.percentile(times, 50)) * 1e3 for name, times in single.items()}
    p99 = {name: float(np.percentile(times, 99)) * 1e3 for name, times in single.items()}
    rate = {name: args.batch_size / float(np.median(times)) for name, times in batch.items()}
    print(f"\n{'variant':<45} {'batch 1 p50 ms':>14} {'p99 ms':>8} "
          f"{f'batch {args.batch_size} images/s':>18}")
    for name, label in VARIANTS.items():
        print(f"{label:<45} {p50[name]:>14.1f} {p99[name]:>8.1f} {rate[name]:>18.1f}")

    print(f"\n(a) JPEG decoding in the graph, batch 1: {p50['a'] - p50['b']:+.1f} ms p50 over (b); "
          f"batch {args.batch_size}: (a)/(b) = {rate['a'] / rate['b']:.3f}x throughput")
    print(f"(a)/(c) serving_default on JPEGs / model.predict on pixels: batch 1 p50 latency "
          f"{p50['a'] / p50['c']:.3f}x, batch {args.batch_size} throughput {rate['a'] / rate['c']:.3f}x")
    print(f"(a)/(e) serving_default on JPEGs / model(x) on pixels: batch 1 p50 latency "
          f"{p50['a'] / p50['e']:.3f}x, batch {args.batch_size} throughput {rate['a'] / rate['e']:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
