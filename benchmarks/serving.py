"""Latency and throughput of the exported SavedModel against the same Keras model called in
process, on the same decoded pixels.

(a) `serving_default` of `tfresnet.export_saved_model`'s SavedModel (reloaded with
    `tf.saved_model.load`), given JPEG bytes: decoding, central crop, resize and the
    normalisation run in the graph;
(b) its `serve_images` signature, given the decoded pixels: (a) without the decoding;
(c) `model.predict(x)` on the decoded pixels (builds a dataset and an iterator, runs
    callbacks: made for large arrays, not single requests);
(d) `model.predict_on_batch(x)`;
(e) `tf.function(lambda x: model(x, training=False), jit_compile=False)`: a compiled call of
    the same Keras model, what a Python server would run. (b) and (e) do the same work, one
    from a SavedModel, one from the live model: (e) is the fair peer of the export.

The pixels of (b) to (e) are those (a) decodes (`tfresnet.decode_for_eval`, done once,
untimed). Calls go round-robin over the five, the order rotated every round, so a change of
load hits them alike. Batch 1: the median (p50) and 99th percentile (p99) latency of single
calls, and their median CPU time (process, all threads); batch 32: images per second over
whole calls (the median call), and images per CPU-second. Each image size gets its own model
(`build_classifier(5, weights=None)`: the weights do not change the speed) and export.

Usage:
    python benchmarks/serving.py            # 64 and 224 px, 200 single-image calls, 10 of 32
    python benchmarks/serving.py --quick    # 64 and 224 px, 30 single-image calls, 3 of 32
    python benchmarks/serving.py --sizes 224 --calls 500
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline import describe_machine, headline, load_average, write_photos  # noqa: E402

from tfresnet import build_classifier, decode_for_eval, export_saved_model  # noqa: E402

VARIANTS = {
    "a": "(a) SavedModel serving_default, JPEG bytes",
    "b": "(b) SavedModel serve_images, pixels",
    "c": "(c) model.predict, pixels",
    "d": "(d) model.predict_on_batch, pixels",
    "e": "(e) tf.function(model) call, pixels",
}
WARM_UP_CALLS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer calls (about 2 minutes on 2 cores)")
    parser.add_argument("--sizes", "--image-size", type=int, nargs="+", default=[64, 224],
                        help="image sizes, each its own model and export (default: 64 224)")
    parser.add_argument("--calls", type=int, default=None,
                        help="timed single-image calls of each variant (default: 200; 30 with --quick)")
    parser.add_argument("--batch-calls", type=int, default=None,
                        help="timed calls of a whole batch, each variant (default: 10; 3 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the JPEGs sent")
    return parser


def callers(served, model: keras.Model, jpegs: list[bytes], pixels: np.ndarray) -> dict:
    """One function per variant, each running a complete prediction of `len(jpegs)` images."""
    serving_default = served.signatures["serving_default"]
    serve_images = served.signatures["serve_images"]
    compiled = tf.function(lambda x: model(x, training=False), jit_compile=False)
    image_bytes = tf.constant(jpegs)
    images = tf.constant(pixels)
    return {
        "a": lambda: serving_default(image_bytes=image_bytes)["probabilities"].numpy(),
        "b": lambda: serve_images(images=images)["probabilities"].numpy(),
        "c": lambda: model.predict(pixels, verbose=0),
        "d": lambda: model.predict_on_batch(pixels),
        "e": lambda: compiled(images).numpy(),
    }


def time_round_robin(calls: dict, count: int, warm_up: int) -> dict[str, dict[str, list[float]]]:
    """Wall-clock and CPU seconds of each of `count` calls of every function, taken in turn."""
    for call in calls.values():
        for _ in range(warm_up):
            call()
    names = list(calls)
    seconds = {name: {"wall": [], "cpu": []} for name in names}
    for index in range(count):
        shift = index % len(names)  # so that no variant always runs right after the same one
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            seconds[name]["wall"].append(time.perf_counter() - start)
            seconds[name]["cpu"].append(time.process_time() - start_cpu)
    return seconds


def measure_size(image_size: int, jpegs: list[bytes], root: str, args) -> dict:
    """Exports a model of `image_size`, then times the five variants at batch 1 and batch 32."""
    model = build_classifier(args.classes, weights=None, image_size=image_size)
    start = time.perf_counter()
    export_dir = export_saved_model(model, os.path.join(root, f"model{image_size}", "1"),
                                    class_names=[f"class{i}" for i in range(args.classes)])
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    served = tf.saved_model.load(export_dir)
    load_seconds = time.perf_counter() - start
    pixels = np.stack([decode_for_eval(jpeg, image_size).numpy() for jpeg in jpegs])
    single = time_round_robin(callers(served, model, jpegs[:1], pixels[:1]), args.calls, WARM_UP_CALLS)
    batch = time_round_robin(callers(served, model, jpegs, pixels), args.batch_calls, 1)
    keras.backend.clear_session()
    return {
        "export": export_seconds,
        "load": load_seconds,
        "p50": {name: np.percentile(times["wall"], 50) * 1e3 for name, times in single.items()},
        "p99": {name: np.percentile(times["wall"], 99) * 1e3 for name, times in single.items()},
        "cpu_ms": {name: np.median(times["cpu"]) * 1e3 for name, times in single.items()},
        "rate": {name: len(jpegs) / np.median(times["wall"]) for name, times in batch.items()},
        "cpu_rate": {name: len(jpegs) / np.median(times["cpu"]) for name, times in batch.items()},
    }


def print_size(image_size: int, result: dict, batch_size: int) -> None:
    print(f"\n{image_size} px (export_saved_model {result['export']:.1f} s, tf.saved_model.load "
          f"{result['load']:.1f} s)")
    print(f"{'variant':<45} {'batch 1 p50 ms':>14} {'p99 ms':>8} {'CPU ms':>8} "
          f"{f'batch {batch_size} images/s':>18} {'images/CPU-s':>13}")
    for name, label in VARIANTS.items():
        print(f"{label:<45} {result['p50'][name]:>14.1f} {result['p99'][name]:>8.1f} "
              f"{result['cpu_ms'][name]:>8.1f} {result['rate'][name]:>18.1f} "
              f"{result['cpu_rate'][name]:>13.1f}")


def print_ratios(image_size: int, result: dict, batch_size: int) -> None:
    """Speed ratios (above 1: the first is faster) at batch 1 (inverse p50 latency) and batch 32."""
    p50, cpu_ms, rate, cpu_rate = result["p50"], result["cpu_ms"], result["rate"], result["cpu_rate"]
    pairs = (("b", "e", "serve_images / tf.function call"),
             ("b", "d", "serve_images / predict_on_batch"),
             ("a", "e", "serving_default on JPEGs / tf.function call on pixels"),
             ("a", "c", "serving_default on JPEGs / model.predict on pixels"))
    for top, bottom, label in pairs:
        print(f"{image_size} px ({top})/({bottom}) {label}: batch 1 {p50[bottom] / p50[top]:.2f}x wall "
              f"(p50 {p50[top]:.1f} against {p50[bottom]:.1f} ms), {cpu_ms[bottom] / cpu_ms[top]:.2f}x CPU; "
              f"batch {batch_size} {rate[top] / rate[bottom]:.2f}x wall, "
              f"{cpu_rate[top] / cpu_rate[bottom]:.2f}x CPU")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.calls = args.calls or (30 if args.quick else 200)
    args.batch_calls = args.batch_calls or (3 if args.quick else 10)
    width, height = args.photo_size
    print(describe_machine())
    print(f"ResNet50 classifier, {', '.join(map(str, args.sizes))} px, {args.classes} classes; JPEGs "
          f"of {width}x{height} px; batch 1: {args.calls} timed calls each after {WARM_UP_CALLS} "
          f"warm-up calls; batch {args.batch_size}: {args.batch_calls} timed calls each after 1")
    print(f"load average before: {load_average()}", flush=True)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as root:
        write_photos(os.path.join(root, "photos"), num_images=args.batch_size, classes=1,
                     width=width, height=height)
        jpegs = []
        for path in sorted(glob.glob(os.path.join(root, "photos", "*", "*.jpg"))):
            with open(path, "rb") as file:
                jpegs.append(file.read())
        for image_size in args.sizes:
            results[image_size] = measure_size(image_size, jpegs, root, args)
            print(f"  {image_size} px done, load average {load_average()}", flush=True)
    print(f"load average after: {load_average()}; {time.perf_counter() - started:.0f} s in all")

    for image_size, result in results.items():
        print_size(image_size, result, args.batch_size)
    print("\nspeed ratios, above 1: the first is faster (batch 1: inverse p50 latency and median "
          "CPU per call; batch 32: images/s and images/CPU-s)")
    for image_size, result in results.items():
        print_ratios(image_size, result, args.batch_size)
    size = max(results)
    rate, cpu_rate = results[size]["rate"], results[size]["cpu_rate"]
    print(headline("SavedModel serve_images", f"tf.function model call ({size} px, batch {args.batch_size})",
                   rate["b"] / rate["e"], cpu_rate["b"] / cpu_rate["e"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
