"""Training images per second on a GPU: precision x XLA x batch size, then JPEG-fed against
synthetic batches.

1. For each precision policy (float32, mixed_float16, mixed_bfloat16), XLA (`jit_compile`
   off, on) and batch size (growing until one does not fit in memory: larger ones are then
   skipped), trains `build_classifier(..., weights=None, freeze_until=0)` compiled as
   `tfresnet.fine_tune`'s phase 2 compiles it (Adam on its warm-up and cosine schedule,
   cross-entropy with label smoothing 0.1, accuracy, balanced class weights), on synthetic
   batches: one constant batch of random pixels, repeated, so the input costs nothing but its
   copy to the device. Images are channels-last (NHWC): Keras's default, the layout of the
   ImageNet weights, and the one Tensor Cores take in mixed precision.
2. The fastest setting of step 1, fed by `tfresnet.from_folder(..., augmentation="standard")`
   from JPEG files (random resized crop decoded from the crop window, flip), against the
   synthetic batches; epochs alternate between the two.

Each figure is the median images/s over timed epochs after one warm-up epoch (tracing, XLA
compilation, autotuning); images per CPU-second (this process, all threads) beside it. The
last line is JPEG-fed / synthetic, the medians of per-epoch ratios (with `--skip-pipeline`:
the fastest setting / float32 without XLA at its batch size). `--strategy one-device` runs
under `tf.distribute.OneDeviceStrategy`, which prefetches batches to the device; the default
strategy copies each batch inside the step.

Without a GPU it runs on the CPU, slowly: use `--quick` there, to check that the script works.

Usage:
    python benchmarks/gpu.py                 # the whole sweep at 224 px (about 30 min on an H100)
    python benchmarks/gpu.py --precisions mixed_float16 --jit on --batch-sizes 256 512
    python benchmarks/gpu.py --quick         # 64 px, float32 without XLA, batch 8, 2 steps (CPU)
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline import describe_machine, headline, load_average, write_photos  # noqa: E402
from training import EpochTimer, one_hot  # noqa: E402  (benchmarks/training.py)

from tfresnet import build_classifier, from_folder  # noqa: E402
from tfresnet.training.settings import class_weights, fine_tune_schedule  # noqa: E402

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Distinct JPEG files written; more files are hard links to them (decoding costs the same).
UNIQUE_PHOTOS = 256
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "OOM")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="64 px, float32 without XLA, batch 8, 2 steps an epoch, 1 timed "
                             "epoch (a few minutes on 2 CPU cores)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224; 64 with --quick")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None,
                        help="default: all three; float32 with --quick")
    parser.add_argument("--jit", nargs="+", choices=("off", "on"), default=None,
                        help="XLA settings to try (default: off on; off with --quick)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="tried in increasing order until one runs out of memory "
                             "(default: 64 128 256 512; 8 with --quick)")
    parser.add_argument("--steps", type=int, default=None,
                        help="batches an epoch (default: 20; 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs after the warm-up (default: 2; 1 with --quick)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the generated JPEGs")
    parser.add_argument("--strategy", choices=("default", "one-device"), default="default")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the synthetic sweep")
    return parser


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    device = "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)


def synthetic_batches(batch_size: int, size: int, classes: int, steps: int) -> tf.data.Dataset:
    """One batch of random pixels and labels, repeated `steps` times, labels one-hot."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    labels = (np.arange(batch_size) % classes).astype(np.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(steps)
    return dataset.map(one_hot(classes)).prefetch(tf.data.AUTOTUNE)


def compiled_model(precision: str, jit: bool, args, steps: int) -> keras.Model:
    """The model and compile settings of fine_tune's phase 2, under `precision`."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_classifier(args.classes, weights=None, image_size=args.image_size,
                                 freeze_until=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    schedule = fine_tune_schedule(1e-4, steps=(1 + args.epochs) * steps, warmup_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
    )
    return model


def release_memory() -> None:
    keras.backend.clear_session()
    gc.collect()


def gpu_peak_gib() -> float | None:
    """Peak memory TensorFlow allocated on the first GPU since the last reset, in GiB."""
    if not tf.config.list_physical_devices("GPU"):
        return None
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    tf.config.experimental.reset_memory_stats("GPU:0")
    return peak


def is_out_of_memory(error: Exception) -> bool:
    return isinstance(error, tf.errors.ResourceExhaustedError) or any(
        marker in str(error) for marker in OOM_MARKERS)


def sweep_one(precision: str, jit: bool, batch_size: int, args, strategy) -> dict:
    """Images/s of one setting on synthetic batches, or why there is none."""
    release_memory()
    gpu_peak_gib()
    weights = class_weights([1] * args.classes)
    timer = EpochTimer()
    try:
        with strategy.scope():
            model = compiled_model(precision, jit, args, args.steps)
            model.fit(synthetic_batches(batch_size, args.image_size, args.classes, args.steps),
                      epochs=1 + args.epochs, class_weight=weights, verbose=0, callbacks=[timer])
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        reason = "out of memory" if is_out_of_memory(error) else (
            f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:100]}")
        return {"status": reason}
    finally:
        release_memory()
    rates = [batch_size * args.steps / seconds for seconds in timer.wall[1:]]
    cpu_rates = [batch_size * args.steps / seconds for seconds in timer.cpu[1:]]
    return {"status": "ok", "rates": rates, "median": float(np.median(rates)),
            "cpu_median": float(np.median(cpu_rates)), "warm_up": timer.wall[0],
            "peak_gib": gpu_peak_gib()}


def write_jpeg_folder(root: str, count: int, args) -> None:
    """`count` JPEGs in class folders: `UNIQUE_PHOTOS` distinct ones, the rest hard links."""
    width, height = args.photo_size
    unique = min(count, UNIQUE_PHOTOS)
    write_photos(root, num_images=unique, classes=args.classes, width=width, height=height)
    for index in range(unique, count):
        source = index % unique
        folder = os.path.join(root, f"class{source % args.classes}")
        target = os.path.join(folder, f"{index:05d}.jpg")
        try:
            os.link(os.path.join(folder, f"{source:05d}.jpg"), target)
        except OSError:
            shutil.copyfile(os.path.join(folder, f"{source:05d}.jpg"), target)


def pipeline_against_synthetic(precision: str, jit: bool, batch_size: int, args,
                               strategy) -> dict[str, dict[str, list[float]]]:
    """Images/s and images/CPU-s per timed epoch of one model fed JPEGs and synthetic batches,
    alternately."""
    release_memory()
    with tempfile.TemporaryDirectory() as root:
        write_jpeg_folder(root, batch_size * args.steps, args)
        jpegs = from_folder(root, image_size=args.image_size, batch_size=batch_size, val_split=0,
                            augmentation="standard", seed=0, drop_remainder=True)
        feeds = {
            "synthetic": synthetic_batches(batch_size, args.image_size, args.classes, args.steps),
            "JPEG": jpegs.train.map(one_hot(args.classes)),
        }
        timers = {name: EpochTimer() for name in feeds}
        weights = class_weights([1] * args.classes)
        with strategy.scope():
            model = compiled_model(precision, jit, args, args.steps)
            for _ in range(1 + args.epochs):
                for name, dataset in feeds.items():
                    model.fit(dataset, epochs=1, class_weight=weights, verbose=0,
                              callbacks=[timers[name]])
    release_memory()
    images = batch_size * args.steps
    return {name: {"wall": [images / s for s in timer.wall[1:]], "cpu": [images / s for s in timer.cpu[1:]]}
            for name, timer in timers.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or (64 if args.quick else 224)
    args.precisions = args.precisions or (["float32"] if args.quick else list(PRECISIONS))
    jits = [setting == "on" for setting in args.jit or (["off"] if args.quick else ["off", "on"])]
    args.batch_sizes = sorted(args.batch_sizes or ([8] if args.quick else [64, 128, 256, 512]))
    args.steps = args.steps or (2 if args.quick else 20)
    args.epochs = args.epochs or (1 if args.quick else 2)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    strategy = make_strategy(args.strategy)

    print(describe_machine())
    if not has_gpu:
        print("NO GPU VISIBLE: running on the CPU. These figures check that the script works; "
              "they say nothing of GPU throughput.")
    print(f"ResNet50 (weights=None, whole backbone trained, BatchNorm frozen), {args.image_size} "
          f"px, channels-last, {args.classes} classes, {args.steps} steps an epoch, 1 warm-up + "
          f"{args.epochs} timed epochs; strategy {args.strategy}")
    print(f"load average before: {load_average()}", flush=True)

    results = {}
    for precision in args.precisions:
        for jit in jits:
            for batch_size in args.batch_sizes:
                result = sweep_one(precision, jit, batch_size, args, strategy)
                results[precision, jit, batch_size] = result
                print(f"  {precision:<15} XLA {'on ' if jit else 'off'} batch {batch_size:>4}: "
                      + (f"{result['median']:.1f} images/s" if result["status"] == "ok"
                         else result["status"]), flush=True)
                if result["status"] == "out of memory":
                    break

    fed = None
    measured = {key: result for key, result in results.items() if result["status"] == "ok"}
    if measured and not args.skip_pipeline:
        best = max(measured, key=lambda key: measured[key]["median"])
        fed = best, pipeline_against_synthetic(*best, args, strategy)
    print(f"load average after: {load_average()}")

    print(f"\n{'precision':<15} {'XLA':<4} {'batch':>5} {'warm-up s':>9} {'images/s per epoch':>22} "
          f"{'median':>8} {'images/CPU-s':>12} {'peak GiB':>8}")
    for (precision, jit, batch_size), result in results.items():
        head = f"{precision:<15} {'on' if jit else 'off':<4} {batch_size:>5}"
        if result["status"] != "ok":
            print(f"{head} {result['status']}")
            continue
        epochs = " ".join(f"{rate:.1f}" for rate in result["rates"])
        peak = "-" if result["peak_gib"] is None else f"{result['peak_gib']:.1f}"
        print(f"{head} {result['warm_up']:>9.1f} {epochs:>22} {result['median']:>8.1f} "
              f"{result['cpu_median']:>12.1f} {peak:>8}")
    if fed:
        (precision, jit, batch_size), rates = fed
        print(f"\nfastest setting ({precision}, XLA {'on' if jit else 'off'}, batch {batch_size}), "
              f"epochs alternating:")
        for name, per_epoch in rates.items():
            print(f"  {name:<10} {' '.join(f'{rate:.1f}' for rate in per_epoch['wall'])} images/s, "
                  f"median {np.median(per_epoch['wall']):.1f}; median {np.median(per_epoch['cpu']):.1f} "
                  f"images/CPU-s")

    print()
    if not measured:
        print("no setting ran")
        return 1
    best = max(measured, key=lambda key: measured[key]["median"])
    baseline = ("float32", False, best[2])
    fastest = None
    if baseline in measured and baseline != best:
        fastest = (measured[best]["median"] / measured[baseline]["median"],
                   measured[best]["cpu_median"] / measured[baseline]["cpu_median"])
        print(f"fastest ({best[0]}, XLA {'on' if best[1] else 'off'}) / float32 without XLA at batch "
              f"{best[2]}: {fastest[0]:.2f}x wall, {fastest[1]:.2f}x CPU")
    mixed_xla = [key for key in measured if key[0] != "float32" and key[1]]
    if mixed_xla:
        top = max(mixed_xla, key=lambda key: measured[key]["median"])
        print(f"best mixed precision + XLA: {measured[top]['median']:.0f} images/s ({top[0]}, batch "
              f"{top[2]}); target on one H100: >= 4000 {'' if has_gpu else '(no GPU here)'}")
    if fed:
        rates = fed[1]
        rounds = {clock: [jpeg / synthetic for jpeg, synthetic in zip(rates["JPEG"][clock],
                                                                     rates["synthetic"][clock])]
                  for clock in ("wall", "cpu")}
        print(f"JPEG-fed / synthetic per epoch: wall {', '.join(f'{r:.3f}' for r in rounds['wall'])}; "
              f"CPU {', '.join(f'{r:.3f}' for r in rounds['cpu'])}; target >= 0.90 wall on 16 cores")
        print(headline("JPEG-fed", f"synthetic ({fed[0][0]}, XLA {'on' if fed[0][1] else 'off'}, batch "
                       f"{fed[0][2]})", float(np.median(rounds["wall"])), float(np.median(rounds["cpu"]))))
    elif fastest:
        print(headline(f"fastest ({best[0]}, XLA {'on' if best[1] else 'off'})",
                       f"float32 without XLA (batch {best[2]})", *fastest))
    else:
        print("one setting measured, nothing to compare: no headline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
