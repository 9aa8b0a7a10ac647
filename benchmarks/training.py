"""Training images per second: `tfresnet.fine_tune` against a bare `model.fit`, and the tfresnet
JPEG pipeline against images held in memory, feeding one model.

(a) `tfresnet.fine_tune(data, weights=None, head_epochs=0, epochs=N, freeze_until=0)`, no
    output_dir, its other defaults as users get them (label smoothing 0.1, balanced class
    weights, Adam on a warm-up and cosine schedule, an accuracy metric), on in-memory images
    (`from_arrays`, augmentation "none": cached after the first epoch);
(b) a bare `model.fit` of `build_classifier(..., weights=None, freeze_until=0)` (the same
    trainable set: the backbone but its BatchNormalization, and the head), compiled with Adam,
    categorical cross-entropy and accuracy, on the same in-memory batches, one-hot labelled;
(c) the model of (b) fed by `from_folder(..., augmentation="standard")` from JPEG files:
    random resized crop decoded from the crop window, flip.

Only steady-state epochs count: the first epoch of each variant (graph tracing, optimisation,
first-touch allocation) is left out. Epochs alternate a, b, c, a, c, b, ...: `fine_tune` takes
no callbacks, so for its duration `keras.Model.fit` is wrapped to add one that times each of
its epochs and then runs and times one epoch of (b) and one of (c). A change of load on a
shared machine thus hits the three alike, and each ratio is the median of per-round ratios.

Usage:
    python benchmarks/training.py            # 64 px, batch 32, 4 steps an epoch, 3 timed epochs
    python benchmarks/training.py --quick    # 32 px, batch 16, 2 steps an epoch, 2 timed epochs
    python benchmarks/training.py --image-size 224 --batch-size 256 --steps 8   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
import warnings
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras warns on every fit that its shuffle argument does not apply to a tf.data dataset.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pipeline import load_average, write_photos  # noqa: E402  (benchmarks/pipeline.py)

from tfresnet import build_classifier, fine_tune, from_arrays, from_folder  # noqa: E402
from tfresnet.distribute import resolve_mixed_precision  # noqa: E402

VARIANTS = {
    "a": "(a) tfresnet fine_tune, in-memory images",
    "b": "(b) bare model.fit, in-memory images",
    "c": "(c) bare model.fit, from_folder JPEGs",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="32 px, batch 16, 2 steps an epoch, 2 timed epochs (under 3 minutes "
                             "on 2 cores)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 64; 32 with --quick")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32; 16 with --quick")
    parser.add_argument("--steps", type=int, default=None,
                        help="batches an epoch (default: 4; 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs after one warm-up epoch (default: 3; 2 with --quick)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the generated JPEGs")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                        help="as fine_tune's (auto: float16 with a GPU); the bare model follows")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="XLA, as Model.compile's jit_compile (auto: on with a GPU)")
    return parser


def device_description() -> str:
    """The GPUs TensorFlow sees, or the CPU model and core count when there is none."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                 for gpu in gpus]
        return f"{len(gpus)} GPU: {', '.join(names)}; {os.cpu_count()} CPUs"
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file
                          if line.startswith("model name")), model)
    return f"no GPU; CPU {model}, {os.cpu_count()} cores"


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and process CPU seconds of every epoch of the `fit` it is given to."""

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


class Interleaved(EpochTimer):
    """Times each epoch of its own `fit`, then runs and times one epoch of each other fit.

    Args:
        others: name -> `(compiled model, dataset)`, run after every epoch, their order
            rotated by one each epoch.
    """

    def __init__(self, others: dict[str, tuple[keras.Model, tf.data.Dataset]]):
        super().__init__()
        self.others = others
        self.timers = {name: EpochTimer() for name in others}

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        names = list(self.others)
        shift = epoch % len(names)  # so that no variant always runs right after the same one
        for name in names[shift:] + names[:shift]:
            model, dataset = self.others[name]
            model.fit(dataset, epochs=1, verbose=0, callbacks=[self.timers[name]])


@contextlib.contextmanager
def added_to_fit(callback: keras.callbacks.Callback, *, except_for: list[keras.Model]):
    """Adds `callback` to every `Model.fit` call in the block, but those of `except_for`."""
    fit = keras.Model.fit

    def fit_with_callback(model, *args, callbacks=None, **kwargs):
        if not any(model is other for other in except_for):
            callbacks = [*(callbacks or []), callback]
        return fit(model, *args, callbacks=callbacks, **kwargs)

    with mock.patch.object(keras.Model, "fit", fit_with_callback):
        yield


def synthetic_images(count: int, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), np.arange(count) % classes


def one_hot(classes: int):
    return lambda images, labels: (images, tf.one_hot(labels, classes))


def bare_model(args, mixed: bool, jit_compile) -> keras.Model:
    """The model fine_tune builds, compiled the plain Keras way."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        model = build_classifier(args.classes, weights=None, image_size=args.image_size,
                                 freeze_until=0)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def summarise(wall: list[float], cpu: list[float], images: int) -> tuple[list[float], float]:
    """Per-epoch images/s of the timed epochs (the first left out), and images per CPU-second."""
    return [images / seconds for seconds in wall[1:]], images * len(cpu[1:]) / sum(cpu[1:])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or (32 if args.quick else 64)
    args.batch_size = args.batch_size or (16 if args.quick else 32)
    args.steps = args.steps or (2 if args.quick else 4)
    args.epochs = args.epochs or (2 if args.quick else 3)
    jit_compile = {"auto": "auto", "on": True, "off": False}[args.jit_compile]
    mixed = resolve_mixed_precision(args.mixed_precision)
    count = args.steps * args.batch_size
    width, height = args.photo_size

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}; {device_description()}")
    print(f"ResNet50 (weights=None, whole backbone trained, BatchNorm frozen), {args.image_size} "
          f"px, batch {args.batch_size}, {args.steps} steps ({count} images) an epoch, 1 warm-up + "
          f"{args.epochs} timed epochs each; {args.classes} classes; mixed precision "
          f"{'float16' if mixed else 'off'}, jit_compile={args.jit_compile}; JPEGs of "
          f"{width}x{height} px")
    print(f"load average before: {load_average()}")

    images, labels = synthetic_images(count, args.image_size, args.classes)
    in_memory = from_arrays(images, labels, image_size=args.image_size,
                            batch_size=args.batch_size, val_split=0, augmentation="none", seed=0)
    bare = bare_model(args, mixed, jit_compile)
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, num_images=count, classes=args.classes, width=width, height=height)
        jpegs = from_folder(root, image_size=args.image_size, batch_size=args.batch_size,
                            val_split=0, augmentation="standard", seed=0)
        timer = Interleaved({
            "b": (bare, in_memory.train.map(one_hot(args.classes))),
            "c": (bare, jpegs.train.map(one_hot(args.classes))),
        })
        start = time.perf_counter()
        with added_to_fit(timer, except_for=[bare]):
            fine_tune(in_memory, weights=None, head_epochs=0, epochs=1 + args.epochs,
                      freeze_until=0, mixed_precision="on" if mixed else "off",
                      jit_compile=jit_compile, seed=0, verbose=0)
        elapsed = time.perf_counter() - start
    print(f"load average after: {load_average()}")

    timers = {"a": timer, **timer.timers}
    rates = {name: summarise(t.wall, t.cpu, count) for name, t in timers.items()}
    first = {name: t.wall[0] for name, t in timers.items()}
    print(f"\n{'variant':<42} {'warm-up s':>9} {'images/s (timed epochs)':>28} {'median':>7} "
          f"{'images/CPU-s':>12}")
    for name, (per_epoch, per_cpu) in rates.items():
        epochs = " ".join(f"{rate:.1f}" for rate in per_epoch)
        print(f"{VARIANTS[name]:<42} {first[name]:>9.1f} {epochs:>28} "
              f"{np.median(per_epoch):>7.1f} {per_cpu:>12.1f}")
    print(f"all three, warm-up included: {elapsed:.0f} s")

    def ratio(top: str, bottom: str) -> str:
        rounds = [x / y for x, y in zip(rates[top][0], rates[bottom][0])]
        return (f"median {np.median(rounds):.3f}x wall (rounds: "
                f"{', '.join(f'{r:.3f}' for r in rounds)}), {rates[top][1] / rates[bottom][1]:.3f}x CPU")

    print(f"\n(a)/(b) fine_tune / bare fit (target >= 0.97):   {ratio('a', 'b')}")
    print(f"(c)/(b) JPEG pipeline / in memory (target >= 0.95): {ratio('c', 'b')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
