"""Training images per second: `tfresnet.fine_tune` against a bare `model.fit` of the same model
on the same batches, and the tfresnet JPEG pipeline against images held in memory.

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
its epochs and then runs and times one epoch of (b) and one of (c). A round is one timed epoch
of each; a change of load hits the three alike within a round. Each round gives a wall ratio
(images per second) and a CPU ratio (images per CPU-second of this process, all threads); the
figures quoted are the medians over the rounds. Epochs are 20 steps by default, long enough
that a pause of a second or two moves a round by a few per cent, not by half.

Usage:
    python benchmarks/training.py            # 64 px, batch 32, 20 steps an epoch, 3 timed epochs
    python benchmarks/training.py --quick    # 32 px, batch 16, 20 steps an epoch, 3 timed epochs
    python benchmarks/training.py --image-size 224 --batch-size 256 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
from pipeline import describe_machine, headline, load_average, write_photos  # noqa: E402

from tfresnet import build_classifier, fine_tune, from_arrays, from_folder  # noqa: E402
from tfresnet.training.distribute import resolve_mixed_precision  # noqa: E402

VARIANTS = {
    "a": "(a) tfresnet fine_tune, in-memory images",
    "b": "(b) bare model.fit, in-memory images",
    "c": "(c) bare model.fit, from_folder JPEGs",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="32 px, batch 16, 20 steps an epoch, 3 timed epochs (about 2 to 3 "
                             "minutes on 2 cores)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 64; 32 with --quick")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32; 16 with --quick")
    parser.add_argument("--steps", type=int, default=None,
                        help="batches an epoch (default: 20 both ways)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs after one warm-up epoch (default: 3 both ways)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the generated JPEGs")
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto",
                        help="as fine_tune's (auto: float16 with a GPU); the bare model follows")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                        help="XLA, as Model.compile's jit_compile (auto: on with a GPU)")
    return parser


def device_description() -> str:
    """The CPU, cores, memory and GPUs of this machine, in one line (see `describe_machine`)."""
    return describe_machine().splitlines()[0].removeprefix("machine: ")


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


def rounds(timer: EpochTimer, images: int) -> dict[str, list[float]]:
    """Images per second and per CPU-second of each timed epoch (the first epoch left out)."""
    return {"wall": [images / seconds for seconds in timer.wall[1:]],
            "cpu": [images / seconds for seconds in timer.cpu[1:]]}


def print_rounds(rates: dict[str, dict[str, list[float]]], top: str, bottom: str) -> tuple[float, float]:
    """Prints the rounds of `top` against `bottom`, wall and CPU side by side; returns the median ratios."""
    wall = [x / y for x, y in zip(rates[top]["wall"], rates[bottom]["wall"])]
    cpu = [x / y for x, y in zip(rates[top]["cpu"], rates[bottom]["cpu"])]
    print(f"\n({top}) against ({bottom})   {'images/s':>19} {'':>8}   {'images/CPU-s':>19}")
    print(f"{'round':<17} {f'({top})':>9} {f'({bottom})':>9} {f'({top})/({bottom})':>8}   "
          f"{f'({top})':>9} {f'({bottom})':>9} {f'({top})/({bottom})':>8}")
    for index, values in enumerate(zip(rates[top]["wall"], rates[bottom]["wall"], wall,
                                       rates[top]["cpu"], rates[bottom]["cpu"], cpu), 1):
        print(f"{index:<17} {values[0]:>9.1f} {values[1]:>9.1f} {values[2]:>7.3f}x   "
              f"{values[3]:>9.1f} {values[4]:>9.1f} {values[5]:>7.3f}x")
    medians = [float(np.median(values)) for values in (rates[top]["wall"], rates[bottom]["wall"], wall,
                                                       rates[top]["cpu"], rates[bottom]["cpu"], cpu)]
    print(f"{'median':<17} {medians[0]:>9.1f} {medians[1]:>9.1f} {medians[2]:>7.3f}x   "
          f"{medians[3]:>9.1f} {medians[4]:>9.1f} {medians[5]:>7.3f}x")
    return medians[2], medians[5]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or (32 if args.quick else 64)
    args.batch_size = args.batch_size or (16 if args.quick else 32)
    args.steps = args.steps or 20
    args.epochs = args.epochs or 3
    jit_compile = {"auto": "auto", "on": True, "off": False}[args.jit_compile]
    mixed = resolve_mixed_precision(args.mixed_precision)
    count = args.steps * args.batch_size
    width, height = args.photo_size

    print(describe_machine())
    print(f"ResNet50 (weights=None, whole backbone trained, BatchNorm frozen), {args.image_size} "
          f"px, batch {args.batch_size}, {args.steps} steps ({count} images) an epoch, 1 warm-up + "
          f"{args.epochs} timed epochs each; {args.classes} classes; mixed precision "
          f"{'float16' if mixed else 'off'}, jit_compile={args.jit_compile}; JPEGs of "
          f"{width}x{height} px")
    print(f"load average before: {load_average()}", flush=True)

    images, labels = synthetic_images(count, args.image_size, args.classes)
    in_memory = from_arrays(images, labels, image_size=args.image_size,
                            batch_size=args.batch_size, val_split=0, augmentation="none", seed=0)
    bare = bare_model(args, mixed, jit_compile)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, num_images=count, classes=args.classes, width=width, height=height)
        jpegs = from_folder(root, image_size=args.image_size, batch_size=args.batch_size,
                            val_split=0, augmentation="standard", seed=0)
        timer = Interleaved({
            "b": (bare, in_memory.train.map(one_hot(args.classes))),
            "c": (bare, jpegs.train.map(one_hot(args.classes))),
        })
        with added_to_fit(timer, except_for=[bare]):
            fine_tune(in_memory, weights=None, head_epochs=0, epochs=1 + args.epochs,
                      freeze_until=0, mixed_precision="on" if mixed else "off",
                      jit_compile=jit_compile, seed=0, verbose=0)
    print(f"load average after: {load_average()}; {time.perf_counter() - start:.0f} s for all "
          f"epochs, warm-up included")

    timers = {"a": timer, **timer.timers}
    rates = {name: rounds(t, count) for name, t in timers.items()}
    print(f"\n{'variant':<42} {'warm-up epoch s':>15}")
    for name, t in timers.items():
        print(f"{VARIANTS[name]:<42} {t.wall[0]:>15.1f}")
    pipeline_ratios = print_rounds(rates, "c", "b")
    fine_tune_ratios = print_rounds(rates, "a", "b")
    print(f"\nmedians over {args.epochs} rounds:")
    print(f"(c)/(b) {headline('JPEG-fed fit', 'in-memory fit', *pipeline_ratios)}")
    print(headline("fine_tune", "bare fit", *fine_tune_ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
