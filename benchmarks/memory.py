"""Peak resident memory of a CPU fine-tuning run: `tfresnet.fine_tune` against a bare
`model.fit`.

Each variant runs in a fresh Python process, which reports its peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after importing TensorFlow and tfresnet, after
building its model and data, and after training:

(0) baseline: imports, the model and the in-memory data, no training;
(a) `tfresnet.fine_tune(data, weights=None, head_epochs=0, epochs=1, freeze_until=0)`, no
    output_dir, on in-memory images (`from_arrays`, augmentation "none");
(b) a bare `model.fit` of `build_classifier(..., weights=None, freeze_until=0)` compiled with
    Adam, categorical cross-entropy and accuracy, on the same batches, one-hot labelled.

The trained variants run in turn, their order reversed in every other round. Each process also
reports the wall-clock and CPU seconds (all threads) from its data being ready to the end of
training: building the model, tracing and the training steps, which with a step or two are
mostly the one-off costs, not the speed of training (benchmarks/training.py measures that).
The last line gives fine_tune / bare fit as costs: peak memory, wall time, CPU time (below 1:
fine_tune uses less).

Usage:
    python benchmarks/memory.py            # 224 px, batch 32, 2 steps, 1 round
    python benchmarks/memory.py --quick    # 64 px, batch 32, 1 step, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
    "baseline": "(0) imports, model and data, no training",
    "fine_tune": "(a) tfresnet fine_tune",
    "fit": "(b) bare model.fit",
}
CHECKPOINTS = ("imports", "model and data", "trained")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="64 px, 1 step (a few minutes on 2 cores)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224; 64 with --quick")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 2; 1 with --quick)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each trained variant, alternating their order")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    return parser


def peak_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args) -> dict:
    """Runs one variant in this process; returns the peak RSS at each checkpoint, and timings."""
    peaks, start = {}, time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    from tfresnet import build_classifier, fine_tune, from_arrays

    peaks["imports"] = peak_mib()
    count = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, args.image_size, args.image_size, 3), dtype=np.uint8)
    data = from_arrays(images, np.arange(count) % args.classes, image_size=args.image_size,
                       batch_size=args.batch_size, val_split=0, augmentation="none", seed=0)
    peaks["model and data"] = None  # fine_tune builds its model itself
    clock, cpu_clock = time.perf_counter(), time.process_time()
    if args.child != "fine_tune":
        model = build_classifier(args.classes, weights=None, image_size=args.image_size,
                                 freeze_until=0)
        peaks["model and data"] = peak_mib()
    if args.child == "fine_tune":
        fine_tune(data, weights=None, head_epochs=0, epochs=1, freeze_until=0, seed=0, verbose=0)
    elif args.child == "fit":
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(data.train.map(lambda x, y: (x, tf.one_hot(y, args.classes))), epochs=1,
                  verbose=0)
    peaks["trained"] = peak_mib()
    return {"peaks": peaks, "seconds": time.perf_counter() - start,
            "wall": time.perf_counter() - clock, "cpu": time.process_time() - cpu_clock}


def spawn(variant: str, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant,
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--classes", str(args.classes)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or (64 if args.quick else 224)
    args.steps = args.steps or (1 if args.quick else 2)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0

    from pipeline import describe_machine, load_average  # here, so that a child skips them

    print(describe_machine())
    print(f"ResNet50 (weights=None, whole backbone trained, BatchNorm frozen), {args.image_size} "
          f"px, batch {args.batch_size}, {args.steps} training step(s); each variant in its own "
          f"process, {args.rounds} round(s)")
    print(f"load average before: {load_average()}", flush=True)
    order = ["fine_tune", "fit"]
    runs = {"baseline": [spawn("baseline", args)], "fine_tune": [], "fit": []}
    for round_index in range(args.rounds):
        for variant in order if round_index % 2 == 0 else order[::-1]:
            runs[variant].append(spawn(variant, args))
    print(f"load average after: {load_average()}")

    print(f"\n{'variant':<42} " + " ".join(f"{name + ' MiB':>20}" for name in CHECKPOINTS)
          + f" {'process s':>9} {'build+train wall s':>18} {'CPU s':>7}")
    for variant, results in runs.items():
        for result in results:
            print(f"{VARIANTS[variant]:<42} "
                  + " ".join(f"{'-' if result['peaks'][name] is None else round(result['peaks'][name]):>20}"
                             for name in CHECKPOINTS)
                  + f" {result['seconds']:>9.0f} {result['wall']:>18.1f} {result['cpu']:>7.1f}")

    def peak(variant: str) -> float:
        return max(result["peaks"]["trained"] for result in runs[variant])

    base = runs["baseline"][0]["peaks"]["trained"]
    print(f"\ntraining adds: (a) {peak('fine_tune') - base:+.0f} MiB, (b) {peak('fit') - base:+.0f} MiB "
          f"over (0)")
    print(f"(a)/(b) peak RSS: {peak('fine_tune') / peak('fit'):.3f}x "
          f"({peak('fine_tune'):.0f} / {peak('fit'):.0f} MiB)")

    def median(variant: str, key: str) -> float:
        return statistics.median(result[key] for result in runs[variant])

    wall, cpu = (median("fine_tune", key) / median("fit", key) for key in ("wall", "cpu"))
    print(f"(a)/(b) build and train, median over rounds: {wall:.3f}x wall time "
          f"({median('fine_tune', 'wall'):.1f} / {median('fit', 'wall'):.1f} s), {cpu:.3f}x CPU time "
          f"({median('fine_tune', 'cpu'):.1f} / {median('fit', 'cpu'):.1f} s)")
    print(f"fine_tune / bare fit: {peak('fine_tune') / peak('fit'):.2f}x peak RSS; build and "
          f"{args.steps} step{'s' if args.steps > 1 else ''}: {wall:.1f}x wall time, {cpu:.1f}x CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
