"""Wall and CPU time of one hyper-parameter search, run two ways on the same images and trials.

(a) plain keras-tuner: `keras_tuner.RandomSearch` over the models of
    `tfresnet.tuning.ClassifierHyperModel`, the full model with its backbone frozen, trained on
    the images in every trial (keras-tuner also saves the model's weights at each improving
    epoch, as it always does);
(b) `tfresnet.tuning.search(..., tuner="random")`, the fast path: backbone features computed
    once, then each trial trains the head alone on them.

Both are random searches with one seed over one space (head units, dropout, learning rate), so
they run the same trials, with the same initial weights and dropout masks. They also see the
same batches: the same training images (`data.train_evaluation`, the images the features are
computed from) and validation images, each trial shuffling the training set afresh from the
seed, as `HeadHyperModel.fit` does (a search fed `data.train` would see another order in every
trial, and a different one from the fast path's). What differs is arithmetic: the backbone
computed on shuffled batches against features computed once. The images are generated: each
class a colour and a position, with noise. The backbone is random (`weights=None`) unless
`--weights` names a file or "imagenet".

`--repeats N` runs both sides N times in one process, alternating which goes first (a, b, then
b, a, ...), each in a fresh directory (the fast path computes its features every time). One
line per repeat gives both times, the ratios and both best trials; the last line gives the
median ratios and the median best validation accuracies over the repeats:

    fast path / plain keras-tuner: 16.2x wall, 15.0x CPU; best val_accuracy 0.93 vs 0.93

Usage:
    python benchmarks/tuning.py               # 600 images of 48 px, 12 trials of 3 epochs
    python benchmarks/tuning.py --quick       # 300 images of 32 px, 6 trials of 2 epochs
    python benchmarks/tuning.py --repeats 3   # both sides three times, alternating
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# keras-tuner passes shuffle=True to fit, which Keras ignores for datasets, with a warning.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfresnet import tuning  # noqa: E402
from tfresnet.data import ImageData, from_arrays  # noqa: E402

# The plain side retraces its model for the last, partial batch of each set; TensorFlow says so.
tf.get_logger().setLevel("ERROR")

CLASS_COLORS = ((220, 40, 40), (40, 200, 60), (40, 70, 230), (235, 220, 40), (220, 40, 220),
                (40, 220, 230))
SIDES = {"plain": "(a) plain keras-tuner, full model", "fast": "(b) tfresnet fast path"}


@dataclasses.dataclass
class Run:
    """One search: its trials (values and score, in order), best values and times."""

    trials: list
    best: dict
    wall: float
    cpu: float

    @property
    def best_score(self) -> float:
        return max(score for _, score in self.trials)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="300 images of 32 px, 6 trials of 2 epochs (under 3 minutes on 2 cores)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run both sides this many times, alternating which goes first")
    parser.add_argument("--num-images", type=int, default=None, help="default: 600; 300 with --quick")
    parser.add_argument("--image-size", type=int, default=None, help="default: 48; 32 with --quick")
    parser.add_argument("--trials", type=int, default=None, help="default: 12; 6 with --quick")
    parser.add_argument("--epochs", type=int, default=None, help="default: 3; 2 with --quick")
    parser.add_argument("--classes", type=int, default=4, choices=range(2, len(CLASS_COLORS) + 1))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default=None, help="'imagenet' or a weights file (default: random)")
    parser.add_argument("--seed", type=int, default=1,
                        help="a positive integer (keras-tuner reads 0 as no seed)")
    return parser


def generate_images(num_images: int, classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images in which class k is a square of colour k in the k-th quadrant."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_images) % classes
    images = rng.integers(20, 100, (num_images, size, size, 3)).astype(np.float32)
    for image, label in zip(images, labels):
        side = int(size * rng.uniform(0.3, 0.45))
        top = (label // 2 % 2) * size // 2 + rng.integers(0, size // 2 - side + 1)
        left = (label % 2) * size // 2 + rng.integers(0, size // 2 - side + 1)
        color = np.array(CLASS_COLORS[label]) + rng.normal(0, 15, 3)
        image[top:top + side, left:left + side] = color
    return np.clip(images, 0, 255).astype(np.uint8), labels


class ShuffledHyperModel(tuning.ClassifierHyperModel):
    """`ClassifierHyperModel`'s models, each trial fed the training images shuffled afresh from
    the seed: the `HyperModel.fit` a Keras user writes to make a search's trials comparable."""

    def fit(self, hp, model, images, labels, *, batch_size: int = 32, **kwargs):
        one_hot = np.eye(self.num_classes, dtype="float32")[labels]
        train = tf.data.Dataset.from_tensor_slices((images, one_hot))
        train = train.shuffle(len(labels), seed=self.seed, reshuffle_each_iteration=True)
        return super().fit(hp, model, train.batch(batch_size), **kwargs)


def training_arrays(data: ImageData) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels under the evaluation transform, in source order."""
    batches = list(data.train_evaluation.as_numpy_iterator())
    images, labels = zip(*batches)
    return np.concatenate(images), np.concatenate(labels)


def plain_search(data: ImageData, args, directory: str) -> tuple[dict, list]:
    hypermodel = ShuffledHyperModel(
        len(data.class_names), backbone=args.backbone, weights=args.weights,
        image_size=data.image_size, seed=args.seed,
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=args.trials,
        seed=args.seed, directory=directory, project_name="plain", overwrite=True,
    )
    images, labels = training_arrays(data)
    tuner.search(images, labels, validation_data=data.validation, epochs=args.epochs,
                 batch_size=args.batch_size, verbose=0)
    best = searched_values(tuner.get_best_hyperparameters()[0].values)
    trials = [tuner.oracle.trials[trial_id] for trial_id in tuner.oracle.start_order]
    return best, [(searched_values(trial.hyperparameters.values), trial.score) for trial in trials]


def fast_search(data: ImageData, args, directory: str) -> tuple[dict, list]:
    best = tuning.search(
        data, backbone=args.backbone, weights=args.weights, tuner="random", max_trials=args.trials,
        tune_epochs=args.epochs, directory=directory, seed=args.seed, verbose=0,
    )
    with open(os.path.join(directory, "trials.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    return best, [(searched_values(row), float(row["val_accuracy"])) for row in rows]


def run_side(side: str, data: ImageData, args) -> Run:
    search = plain_search if side == "plain" else fast_search
    with tempfile.TemporaryDirectory() as root:
        start, start_cpu = time.perf_counter(), time.process_time()
        best, trials = search(data, args, os.path.join(root, side))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    keras.backend.clear_session()
    return Run(trials, best, wall, cpu)


def searched_values(values: dict) -> dict:
    """The values as `search` returns them (a hidden layer of 0 units is None)."""
    return {"head_units": int(values["head_units"]) or None,
            "dropout": round(float(values["dropout"]), 6),
            "learning_rate": float(values["learning_rate"])}


def same_values(a: dict, b: dict) -> bool:
    return (a["head_units"], a["dropout"]) == (b["head_units"], b["dropout"]) and np.isclose(
        a["learning_rate"], b["learning_rate"], rtol=1e-6)


def describe(values: dict) -> str:
    units = f"{values['head_units']} units" if values["head_units"] else "no hidden layer"
    return f"{units}, dropout {values['dropout']:.1f}, lr {values['learning_rate']:.2e}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)"


def print_trials(plain: Run, fast: Run) -> None:
    print(f"\n{'trial':>5} {'head_units':>10} {'dropout':>7} {'learning_rate':>13} "
          f"{'(a) val_acc':>11} {'(b) val_acc':>11}")
    for number, ((values, plain_score), (fast_values, fast_score)) in enumerate(
            zip(plain.trials, fast.trials)):
        same = "" if same_values(values, fast_values) else "  (other values!)"
        print(f"{number:>5} {values['head_units'] or 0:>10} {values['dropout']:>7.1f} "
              f"{values['learning_rate']:>13.2e} {plain_score:>11.3f} {fast_score:>11.3f}{same}")
    if len(plain.trials) != len(fast.trials):
        print(f"(other trial counts: {len(plain.trials)} against {len(fast.trials)}!)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 1:
        parser.error(f"--seed must be a positive integer. Received: {args.seed}")
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer. Received: {args.repeats}")
    args.num_images = args.num_images or (300 if args.quick else 600)
    args.image_size = args.image_size or (32 if args.quick else 48)
    args.trials = args.trials or (6 if args.quick else 12)
    args.epochs = args.epochs or (2 if args.quick else 3)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpu_model()}, {cores} cores available ({os.cpu_count()} CPUs); "
          f"{len(tf.config.list_physical_devices('GPU'))} GPUs")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras-tuner "
          f"{keras_tuner.__version__}, Python {platform.python_version()}")
    print(f"settings: {args.num_images} images of {args.image_size} px in {args.classes} classes "
          f"(20% for validation), batch {args.batch_size}; {args.backbone}, weights={args.weights}; "
          f"random search, seed {args.seed}: {args.trials} trials of {args.epochs} epochs; "
          f"{args.repeats} repeat(s), alternating which side goes first")
    print(f"load average before: {load_average()}", flush=True)

    images, labels = generate_images(args.num_images, args.classes, args.image_size, args.seed)
    data = from_arrays(images, labels, image_size=args.image_size, batch_size=args.batch_size,
                       val_split=0.2, augmentation="none", seed=args.seed)
    repeats = []
    for repeat in range(args.repeats):
        order = ("plain", "fast") if repeat % 2 == 0 else ("fast", "plain")
        runs = {side: run_side(side, data, args) for side in order}
        plain, fast = runs["plain"], runs["fast"]
        repeats.append(runs)
        if repeat == 0:
            print_trials(plain, fast)
            for side in SIDES:
                print(f"{SIDES[side]:34s} {runs[side].wall:7.1f} s wall, {runs[side].cpu:7.1f} s CPU, "
                      f"best: {describe(runs[side].best)}")
            print()
        print(f"repeat {repeat + 1} ({order[0]} first; load {os.getloadavg()[0]:.2f}): "
              f"plain {plain.wall:.1f} s wall / {plain.cpu:.1f} s CPU, fast {fast.wall:.1f} / "
              f"{fast.cpu:.1f}: {plain.wall / fast.wall:.1f}x wall, {plain.cpu / fast.cpu:.1f}x CPU; "
              f"best val_accuracy {fast.best_score:.3f} vs {plain.best_score:.3f}; same best head: "
              f"{'yes' if same_values(plain.best, fast.best) else 'no'}", flush=True)

    print(f"load average after: {load_average()}")
    same = sum(same_values(runs["plain"].best, runs["fast"].best) for runs in repeats)
    print(f"same best head (units, dropout, learning rate) in {same} of {len(repeats)} repeat(s)")
    wall = np.median([runs["plain"].wall / runs["fast"].wall for runs in repeats])
    cpu = np.median([runs["plain"].cpu / runs["fast"].cpu for runs in repeats])
    fast_score = np.median([runs["fast"].best_score for runs in repeats])
    plain_score = np.median([runs["plain"].best_score for runs in repeats])
    print(f"fast path / plain keras-tuner: {wall:.1f}x wall, {cpu:.1f}x CPU; "
          f"best val_accuracy {fast_score:.2f} vs {plain_score:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
