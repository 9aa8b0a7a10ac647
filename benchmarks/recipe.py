"""Held-out accuracy of the training recipes at one budget: standard augmentation, RandAugment,
MixUp, a moving average of the weights (EMA), all three together with test-time augmentation
(TTA), which is what a user turns on for "the stronger recipe", and TTA on the best.

Data (`--images shapes`, the default): generated images of 8 classes, each a shape (circle,
ring, square, triangle, plus, cross, three horizontal bars, three vertical bars) of random
size, position, rotation (up to 15 degrees either way) and colour, on a random two-colour
gradient with 1 to 4 small blobs and Gaussian noise of a random strength. Every class is
left-right symmetric, so a flip keeps its label; plus and cross, and the two bar classes, differ
only in orientation. Three sets from separate random streams: training, validation (picks the
best epoch, as `fine_tune` does) and test, which neither training nor the choice of epoch ever
sees. Images are drawn at `image_size / 0.875` px, so that the evaluation transform's central
crop keeps their pixels. `--images digits`: the grayscale hand-drawn-like digits of
`benchmarks/duplicates.py` (ten classes; each image a digit of its own seed: slant, rotation,
scale, position, thickness), drawn at 32 px, then scaled to the same `image_size / 0.875` px,
in RGB. The digits are not left-right symmetric: the flip of the standard augmentation is
what a user gets by default, and the recipes here all keep it.

Training: `tfresnet.fine_tune` from random weights (`weights=None`: no ImageNet weights here),
1 head epoch then `--epochs` epochs with the whole backbone trained (`freeze_until=0`), the
same backbone, learning rates, epochs and seed for every recipe, no early stopping:

- `standard`: `augmentation="standard"` (random resized crop and flip);
- `randaugment`: `augmentation="randaugment"` (those, then RandAugment at timm's magnitude 9,
  two operations: the command's defaults);
- `standard + mixup`: `standard`, then MixUp (alpha `--mixup`) on the training batches;
- `standard + ema`: `standard`, with a moving average of the weights (`--ema-momentum`, by
  default the command's 0.999, which warms up);
- `randaugment + mixup + ema + tta`: all of them together, evaluated with TTA;
- then the recipe with the best mean test accuracy, its models evaluated again with
  `tfresnet.evaluate(..., tta=True)` (6 views per image).

Backbone: `--backbone auto` times a few ResNet50 training steps at this image size first and
takes `resnet50` if every run would fit in `--budget-minutes` at that speed, else
`resnet-tiny` (ResNet50's 175 layers at 4 to 32 channels); the output says which and why.

Time per epoch: wall-clock seconds, the median over the epochs of the fine-tuning phase
(validation included); CPU: CPU-seconds of this process (all threads) per epoch, their mean.
With `--repeats N`, every recipe runs with seeds 0 to N-1 (initial weights, data order,
augmentation draws; the images stay the same), the recipes' order rotated every repeat so that
a change of load on a shared machine hits them alike; accuracy is given per seed, with the
mean and the standard deviation.

Usage:
    python benchmarks/recipe.py              # 2,000 training images of 64 px, 16 epochs, 2 seeds
    python benchmarks/recipe.py --quick      # a 1-2 minute smoke run: 320 images, 2 epochs, 1 seed
    python benchmarks/recipe.py --images digits --image-size 32 --epochs 40
    python benchmarks/recipe.py --repeats 3 --backbone resnet50   # on a faster machine
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras warns on every fit that its shuffle argument does not apply to a tf.data dataset.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from duplicates import digit  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from pipeline import describe_machine, load_average, resnet50_training_rate  # noqa: E402

import tfresnet  # noqa: E402
from tfresnet.data.transforms import CROP_FRACTION  # noqa: E402

SHAPES = ("circle", "ring", "square", "triangle", "plus", "cross", "bars", "columns")
DIGITS = tuple(str(label) for label in range(10))
HEAD_EPOCHS = 1
TTA_SUFFIX = " + tta"
COMBINED = "randaugment + mixup + ema"  # evaluated with TTA: the options a user turns on together


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="40 training images a class, 2 epochs, 1 seed, a budget of half a "
                             "minute: a 1-2 minute smoke run")
    parser.add_argument("--per-class", type=int, default=None,
                        help="training images per class (default: 250; 40 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs after the head epoch (default: 16; 2 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="seeds per recipe (default: 2; 1 with --quick)")
    parser.add_argument("--images", choices=("shapes", "digits"), default="shapes",
                        help="the generated set (see above)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3,
                        help="Adam's learning rate in both phases (the fine-tuning phase's peak)")
    parser.add_argument("--mixup", type=float, default=0.2, help="MixUp's alpha")
    parser.add_argument("--ema-momentum", type=float, default=0.999,
                        help="the moving average's momentum per step")
    parser.add_argument("--backbone", choices=("auto", "resnet50", "resnet-tiny"), default="auto")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training time that --backbone auto allows ResNet50 "
                             "(default: 12; 0.5 with --quick)")
    return parser


# === The images ===


def _polygon(points, angle: float, center) -> list[tuple[float, float]]:
    """`points` around the origin, turned by `angle` (radians) and moved to `center`."""
    cos, sin = np.cos(angle), np.sin(angle)
    turned = np.asarray(points, float) @ np.array([[cos, sin], [-sin, cos]]) + center
    return [tuple(point) for point in turned]


def _box(half_width: float, half_height: float, dy: float = 0.0) -> list[tuple[float, float]]:
    return [(-half_width, dy - half_height), (half_width, dy - half_height),
            (half_width, dy + half_height), (-half_width, dy + half_height)]


def draw_shape(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One `size` x `size` RGB image of the shape `SHAPES[label]` (see the module docstring)."""
    y, x = np.mgrid[0:size, 0:size] / size
    start, end = rng.uniform(0, 255, (2, 3))
    mix = np.clip(rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y + 0.5, 0, 1)[..., None]
    image = Image.fromarray((start * (1 - mix) + end * mix).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 5)):
        (bx, by), radius = rng.uniform(0, size, 2), rng.uniform(2, 5)
        draw.ellipse([bx - radius, by - radius * rng.uniform(0.5, 1.5), bx + radius, by + radius],
                     fill=tuple(rng.integers(0, 256, 3).tolist()))
    colour = tuple(rng.integers(0, 256, 3).tolist())
    radius = rng.uniform(0.2, 0.34) * size
    center = rng.uniform(0.35, 0.65, 2) * size
    angle = np.deg2rad(rng.uniform(-15, 15))
    stroke = rng.uniform(0.15, 0.3) * radius
    shape = SHAPES[label]
    cx, cy = center
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    elif shape == "ring":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour,
                     width=max(int(stroke), 2))
    elif shape == "square":
        draw.polygon(_polygon(_box(0.85 * radius, 0.85 * radius), angle, center), fill=colour)
    elif shape == "triangle":
        corners = [(0, -radius), (0.87 * radius, 0.5 * radius), (-0.87 * radius, 0.5 * radius)]
        draw.polygon(_polygon(corners, angle, center), fill=colour)
    elif shape in ("plus", "cross"):
        turn = angle + (np.pi / 4 if shape == "cross" else 0.0)
        for half_width, half_height in ((radius, stroke), (stroke, radius)):
            draw.polygon(_polygon(_box(half_width, half_height), turn, center), fill=colour)
    else:
        turn = angle + (np.pi / 2 if shape == "columns" else 0.0)
        for dy in (-0.6 * radius, 0.0, 0.6 * radius):
            draw.polygon(_polygon(_box(radius, 0.5 * stroke, dy), turn, center), fill=colour)
    noise = rng.normal(0, rng.uniform(5, 30), (size, size, 3))
    return np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)


def shape_images(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` images of each of `SHAPES`, in random order, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(SHAPES)), per_class))
    return np.stack([draw_shape(rng, int(label), size) for label in labels]), labels


def digit_images(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` digits of each class, in random order, RGB at `size` px, and their labels;
    every image drawn from its own seed (`seed` picks a range no other set shares)."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(DIGITS)), per_class))
    images = [
        np.asarray(digit(int(label), seed=seed * 1_000_000 + index).convert("RGB").resize(
            (size, size), Image.Resampling.LANCZOS))
        for index, label in enumerate(labels)
    ]
    return np.stack(images), labels


# === Training and timing ===


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and process CPU seconds of every epoch, one list per `fit` call."""

    def __init__(self):
        super().__init__()
        self.fits: list[list[tuple[float, float]]] = []

    def on_train_begin(self, logs=None):
        self.fits.append([])

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.fits[-1].append((time.perf_counter() - wall, time.process_time() - cpu))


@contextlib.contextmanager
def timed_fits(timer: EpochTimer):
    """Adds `timer` to the callbacks of every `keras.Model.fit` call (`fine_tune` takes none)."""
    fit = keras.Model.fit

    def timed_fit(model, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), timer]
        return fit(model, *args, **kwargs)

    with mock.patch.object(keras.Model, "fit", timed_fit):
        yield


def recipes(args) -> dict[str, dict]:
    """Each recipe's loader augmentation and `fine_tune` arguments; the rest is shared."""
    return {
        "standard": {"augmentation": "standard"},
        "randaugment": {"augmentation": "randaugment"},
        f"standard + mixup {args.mixup:g}": {"augmentation": "standard", "mixup": args.mixup},
        f"standard + ema {args.ema_momentum:g}": {"augmentation": "standard", "ema": True,
                                                  "ema_momentum": args.ema_momentum},
        COMBINED: {"augmentation": "randaugment", "mixup": args.mixup, "ema": True,
                   "ema_momentum": args.ema_momentum},
    }


def train_once(args, arrays, test, backbone: str, recipe: dict, seed: int) -> dict:
    """Trains one recipe with one seed; its test accuracy, best epoch and epoch times."""
    recipe = dict(recipe)
    (train_x, train_y), validation = arrays
    data = tfresnet.from_arrays(train_x, train_y, validation=validation,
                                image_size=args.image_size, batch_size=args.batch_size,
                                augmentation=recipe.pop("augmentation"), seed=seed)
    timer = EpochTimer()
    with timed_fits(timer):
        result = tfresnet.fine_tune(
            data, backbone=backbone, weights=None, head_epochs=HEAD_EPOCHS, epochs=args.epochs,
            learning_rate=args.learning_rate, fine_tune_learning_rate=args.learning_rate,
            freeze_until=0, patience=None, seed=seed, verbose=0, **recipe,
        )
    start = time.perf_counter()
    accuracy = tfresnet.evaluate(result.model, test)["accuracy"]
    fine_tune_epochs = timer.fits[-1]
    return {
        "accuracy": accuracy,
        "model": result.model,
        "best_epoch": _epoch_name(result.config["best_epoch"]),
        "epoch_s": float(np.median([wall for wall, _ in fine_tune_epochs])),
        "epoch_cpu_s": float(np.mean([cpu for _, cpu in fine_tune_epochs])),
        "eval_s": time.perf_counter() - start,
    }


def _epoch_name(best_epoch: dict) -> str:
    """`h` for the head epoch, else the fine-tuning epoch counted from 1."""
    return "h" if best_epoch["phase"] == "head" else str(best_epoch["epoch"] + 1)


def choose_backbone(args, runs: int, num_train: int) -> tuple[str, str]:
    """`--backbone`, or for `auto` ResNet50 if `runs` runs fit the budget at its measured speed."""
    if args.backbone != "auto":
        return args.backbone, "asked for (--backbone)"
    rate, _ = resnet50_training_rate(args.image_size, args.batch_size, steps=2 if args.quick else 3,
                                     classes=args.classes)
    minutes = runs * (HEAD_EPOCHS + args.epochs) * num_train / rate / 60
    work = f"{runs} runs x {HEAD_EPOCHS + args.epochs} epochs x {num_train} images"
    if minutes <= args.budget_minutes:
        return "resnet50", (f"ResNet50 (weights=None) trains {rate:.0f} images/s here: {work} "
                            f"take about {minutes:.0f} min, within the {args.budget_minutes:g} min budget")
    return "resnet-tiny", (f"ResNet50's 175 layers at 4-32 channels; ResNet50 (weights=None) trains "
                           f"{rate:.0f} images/s here, so {work} would take about {minutes:.0f} min, "
                           f"over the {args.budget_minutes:g} min budget")


# === Report ===


def print_table(rows: dict[str, dict], repeats: int) -> None:
    print(f"\n{'recipe':<32} {'test accuracy per seed':>24} {'mean':>6} {'sd':>6} "
          f"{'best epochs':>12} {'s/epoch':>8} {'CPU-s/epoch':>12} {'test eval s':>12}")
    for name, row in rows.items():
        accuracies = row["accuracy"]
        sd = f"{np.std(accuracies, ddof=1):.3f}" if repeats > 1 else "-"
        epochs = ",".join(row.get("best_epoch", [])) or "-"
        wall = f"{np.median(row['epoch_s']):.1f}" if "epoch_s" in row else "-"
        cpu = f"{np.mean(row['epoch_cpu_s']):.1f}" if "epoch_cpu_s" in row else "-"
        print(f"{name:<32} {' '.join(f'{a:.3f}' for a in accuracies):>24} "
              f"{np.mean(accuracies):>6.3f} {sd:>6} {epochs:>12} {wall:>8} {cpu:>12} "
              f"{np.mean(row['eval_s']):>12.1f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.per_class = args.per_class or (40 if args.quick else 250)
    args.epochs = args.epochs or (2 if args.quick else 16)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.budget_minutes = args.budget_minutes or (0.5 if args.quick else 12.0)
    held_out = max(args.per_class // 3, 10)
    size = round(args.image_size / CROP_FRACTION)
    started = time.perf_counter()
    print(describe_machine())
    print(f"load average before: {load_average()}", flush=True)
    draw, classes = (digit_images, DIGITS) if args.images == "digits" else (shape_images, SHAPES)
    args.classes = len(classes)
    arrays = (draw(args.per_class, size, seed=1), draw(max(held_out // 2, 5), size, seed=2))
    test_x, test_y = draw(held_out, size, seed=3)
    test = tfresnet.from_arrays(test_x, test_y, val_split=0, image_size=args.image_size,
                                batch_size=64, augmentation="none").train_evaluation
    table = recipes(args)
    backbone, why = choose_backbone(args, len(table) * args.repeats, len(arrays[0][1]))
    print(f"images: {args.images}, {len(classes)} classes ({', '.join(classes)}); "
          f"{len(arrays[0][1])} training, "
          f"{len(arrays[1][1])} validation, {len(test_y)} test, drawn at {size} px, "
          f"{args.image_size} px in")
    print(f"backbone: {backbone} ({why})")
    print(f"recipe: weights=None, {HEAD_EPOCHS} head epoch + {args.epochs} epochs whole backbone "
          f"(freeze_until=0), batch {args.batch_size}, Adam {args.learning_rate:g} in both phases, "
          f"no early stopping; {args.repeats} seed(s) per recipe, order rotated per seed",
          flush=True)

    names = list(table)
    rows: dict[str, dict] = {name: {} for name in names}
    for seed in range(args.repeats):
        for name in names[seed % len(names):] + names[:seed % len(names)]:
            run = train_once(args, arrays, test, backbone, table[name], seed)
            for key, value in run.items():
                rows[name].setdefault(key, []).append(value)
            print(f"seed {seed} {name}: test accuracy {run['accuracy']:.3f}, best epoch "
                  f"{run['best_epoch']}, {run['epoch_s']:.1f} s/epoch "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)

    single = [name for name in names if name != COMBINED]
    best = max(single, key=lambda name: np.mean(rows[name]["accuracy"]))
    for name in (best, COMBINED):
        tta = {"accuracy": [], "eval_s": []}
        for model in rows[name]["model"]:
            start = time.perf_counter()
            tta["accuracy"].append(tfresnet.evaluate(model, test, tta=True)["accuracy_tta"])
            tta["eval_s"].append(time.perf_counter() - start)
        rows[name + TTA_SUFFIX] = tta
    print(f"load average after: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    print_table(rows, args.repeats)

    def mean(name: str) -> float:
        return float(np.mean(rows[name]["accuracy"]))

    other = "standard" if best != "standard" else max(
        (name for name in single if name != best), key=mean)
    print(f"best single option: {best} {mean(best):.3f} vs {other} {mean(other):.3f} held-out "
          f"accuracy; tta {mean(best + TTA_SUFFIX) - mean(best):+.3f}")
    combined = COMBINED + TTA_SUFFIX
    print(f"{combined} {mean(combined):.3f} vs standard {mean('standard'):.3f} held-out accuracy "
          f"at the same budget: {mean(combined) - mean('standard'):+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
