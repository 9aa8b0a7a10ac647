"""Held-out mean average precision and F1 of multi-label training: tfresnet's thresholds chosen on
the validation set against fixed 0.5 thresholds, and against a plain Keras peer.

Method:

1. Generated multi-label images, drawn with `tfresnet.data.examples.draw_shape`: each of six
   labels is a shape (ellipse, rectangle, triangle, cross, ring, diamond) in any of six colours,
   so that colour tells nothing; an image holds each label independently with that label's
   frequency (from 40% for ellipses down to 4% for diamonds), at most three distinct shapes
   (three chosen at random when more come up), each pasted at a random place of its own quarter of
   the image on a noisy background; about a quarter of the images hold no shape at all. Images
   are drawn at `image_size / 0.875` px with every shape inside the central `image_size`
   square, which the evaluation crop keeps. The training set (split by
   `from_arrays(..., multi_label=True, val_split=0.2)` into training and validation images)
   and the held-out test set come from separate random streams; the test set is seen neither
   by training nor by the choice of thresholds.
2. The sides, both `resnet-tiny` (ResNet50's 175 layers at 4 to 32 channels; there are no
   ImageNet weights on this machine) from random weights, on the same batches (`from_arrays`,
   augmentation "flip", batch 32), for the same number of epochs in all:
   - tfresnet: `tfresnet.fine_tune(data, backbone="resnet-tiny", weights=None, head_epochs=1,
     epochs=N, freeze_until=0, ...)` with its multi-label defaults: binary cross-entropy with
     label smoothing 0.1 and each label's positives and negatives balanced
     (`class_weight="balanced"`), warm-up and cosine decay, the best epoch by validation mean
     average precision, then each label's threshold chosen on the validation set for its F1
     (`FineTuneResult.thresholds`). Measured on the test set (a) at those thresholds and (b) at
     0.5 for every label: the same model, the same probabilities.
   - (c) plain Keras: `build_classifier(..., multi_label=True, freeze_until=0)` (the same
     network and trainable layers) compiled with Adam at a constant rate and
     `keras.losses.BinaryCrossentropy()`, trained by `model.fit` for the same epochs (the
     weights of the last epoch: no best-epoch choice), at 0.5 thresholds; and, to tell the
     thresholds' share from the training's, (d) the same model at thresholds chosen on the
     same validation set by `tfresnet.models.choose_thresholds`.
3. Mean average precision (each label's AP as scikit-learn's `average_precision_score`,
   `tfresnet.insight.multi_label_metrics`), micro-F1 (every image-label decision counted
   together) and macro-F1 (the mean of the labels' F1), overall and per label. The training
   of each side is timed, wall clock and process CPU time (all threads); the sides train once
   each, tfresnet first, so on a shared machine the times are rough (the load average is
   printed before and after each).

Usage:
    python benchmarks/multilabel.py             # 2000 + 1000 images at 64 px, 20 epochs a side, ~5 min
    python benchmarks/multilabel.py --quick     # a 1-2 minute smoke run
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras warns on every fit that its shuffle argument does not apply to a tf.data dataset.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from label_issues import cpu_flags  # noqa: E402
from pipeline import describe_machine, load_average  # noqa: E402

import tfresnet  # noqa: E402
from tfresnet.data.examples import CLASS_COLORS, draw_shape  # noqa: E402
from tfresnet.data.transforms import CROP_FRACTION  # noqa: E402
from tfresnet.insight.evaluation import predict_probabilities  # noqa: E402
from tfresnet.insight.multi_label_metrics import label_scores  # noqa: E402
from tfresnet.models import THRESHOLD, choose_thresholds  # noqa: E402

BACKBONE = "resnet-tiny"
# Label: (shape drawn by tfresnet.data.examples.draw_shape, share of the images holding it).
LABELS = {
    "ellipse": 0.40,
    "rectangle": 0.30,
    "triangle": 0.20,
    "cross": 0.12,
    "ring": 0.07,
    "diamond": 0.04,
}
MAX_SHAPES = 3
TRAIN_SEED, TEST_SEED, SPLIT_SEED = 1, 2, 0
LEARNING_RATE = 2e-3
SIDES = {
    "a": "(a) tfresnet fine_tune, tuned thresholds",
    "b": "(b) tfresnet fine_tune, fixed 0.5",
    "c": "(c) plain Keras BCE model.fit, fixed 0.5",
    "d": "(d) plain Keras BCE, tuned thresholds",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="600 training and 400 test images, 5 epochs a side: a smoke run"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="training images, validation included (default: 2000; 600 with --quick)",
    )
    parser.add_argument(
        "--test-images", type=int, default=None, help="held-out test images (default: 1000; 400 with --quick)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="side the network sees")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of each side in all; tfresnet's first is its head epoch (default: 20; 5 with --quick)",
    )
    return parser


# === Images ===


def paste_shape(
    canvas: np.ndarray, shape: str, color: tuple, box: tuple[int, int, int], rng: np.random.Generator
) -> None:
    """Draws `shape` with `draw_shape` on a tile of side `box[2]` and pastes its shape pixels
    (those of exactly `color`; the tile's background stays out) at `box[:2]` of `canvas`."""
    left, top, side = box
    tile = np.asarray(draw_shape(shape, color, side, rng))
    mask = np.all(tile == np.asarray(color, np.uint8), axis=-1)
    canvas[top : top + side, left : left + side][mask] = tile[mask]


def shape_images(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` RGB images drawn at `size / CROP_FRACTION` px and their `(count, labels)`
    multi-hot rows (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    drawn = round(size / CROP_FRACTION)
    margin, cell = (drawn - size) // 2, size // 2
    colors = list(CLASS_COLORS.values())
    shapes, frequencies = list(LABELS), np.array(list(LABELS.values()))
    images = rng.integers(30, 90, (count, drawn, drawn, 3), dtype=np.uint8)
    rows = np.zeros((count, len(shapes)), np.float32)
    for index in range(count):
        chosen = np.flatnonzero(rng.random(len(shapes)) < frequencies)
        if len(chosen) > MAX_SHAPES:
            chosen = np.sort(rng.choice(chosen, MAX_SHAPES, replace=False))
        cells = rng.permutation(4)[: len(chosen)]
        for label, place in zip(chosen, cells):
            side = int(rng.integers(cell * 3 // 4, cell + 1))
            left = margin + (place % 2) * cell + int(rng.integers(0, cell - side + 1))
            top = margin + (place // 2) * cell + int(rng.integers(0, cell - side + 1))
            color = colors[int(rng.integers(len(colors)))]
            paste_shape(images[index], shapes[label], color, (left, top, side), rng)
            rows[index, label] = 1
    return images, rows


# === The sides ===


def timed(function):
    """`function()`'s result, wall-clock seconds and process CPU seconds."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def train_tfresnet(data, epochs: int):
    """tfresnet's side: `fine_tune` with its multi-label defaults."""
    return tfresnet.fine_tune(
        data,
        backbone=BACKBONE,
        weights=None,
        head_epochs=1,
        epochs=epochs - 1,
        learning_rate=LEARNING_RATE,
        fine_tune_learning_rate=LEARNING_RATE,
        freeze_until=0,
        patience=None,
        seed=0,
        verbose=0,
    )


def train_plain(data, epochs: int) -> keras.Model:
    """The plain Keras side: the same network, `BinaryCrossentropy()`, `model.fit`."""
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        len(data.class_names),
        backbone=BACKBONE,
        weights=None,
        image_size=data.image_size,
        multi_label=True,
        freeze_until=0,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(curve="PR", multi_label=True, name="map")],
    )
    model.fit(data.train, validation_data=data.validation, epochs=epochs, verbose=0)
    return model


# === Output ===


def print_per_label(names, train_rows, test_rows, scores: dict) -> None:
    """One line per label: its frequency, AP and F1 of every side, the tuned thresholds."""
    print(
        f"\n{'label':<10} {'train+val %':>11} {'test n':>6} {'AP tfresnet':>11} {'AP plain':>8} "
        f"{'thr (a)':>7} {'thr (d)':>7} {'F1 (a)':>7} {'F1 (b)':>7} {'F1 (c)':>7} {'F1 (d)':>7}"
    )
    for j, name in enumerate(names):
        a, b, c, d = (scores[side]["per_label"][j] for side in "abcd")
        print(
            f"{name:<10} {100 * train_rows[:, j].mean():>11.1f} {int(test_rows[:, j].sum()):>6} "
            f"{a['average_precision']:>11.3f} {c['average_precision']:>8.3f} "
            f"{a['threshold']:>7.3f} {d['threshold']:>7.3f} "
            + " ".join(f"{row['f1']:>7.3f}" for row in (a, b, c, d))
        )


def print_sides(scores: dict, costs: dict) -> None:
    """The held-out measures of every side and what its training cost."""
    print(
        f"\n{'side':<42} {'mAP':>6} {'micro-F1':>9} {'macro-F1':>9} {'train wall s':>12} {'train CPU s':>11}"
    )
    for side, title in SIDES.items():
        found = scores[side]
        wall, cpu = costs["a" if side in "ab" else "c"]
        print(
            f"{title:<42} {found['mean_average_precision']:>6.3f} {found['f1_micro']:>9.3f} "
            f"{found['f1_macro']:>9.3f} {wall:>12.1f} {cpu:>11.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.images = args.images or (600 if args.quick else 2000)
    args.test_images = args.test_images or (400 if args.quick else 1000)
    args.epochs = args.epochs or (5 if args.quick else 20)
    started = time.perf_counter()
    print(describe_machine())
    print(f"CPU flags: {cpu_flags()}")
    print(f"load average before: {load_average()}", flush=True)

    names = list(LABELS)
    train_x, train_y = shape_images(args.images, args.image_size, TRAIN_SEED)
    test_x, test_y = shape_images(args.test_images, args.image_size, TEST_SEED)
    data = tfresnet.from_arrays(
        train_x,
        train_y,
        class_names=names,
        multi_label=True,
        val_split=0.2,
        image_size=args.image_size,
        batch_size=32,
        augmentation="flip",
        seed=SPLIT_SEED,
    )
    test = tfresnet.from_arrays(
        test_x,
        test_y,
        class_names=names,
        multi_label=True,
        val_split=0,
        image_size=args.image_size,
        batch_size=64,
        augmentation="none",
    ).train_evaluation
    for dataset in (data.train, data.validation, test):  # fills the in-memory caches
        for _ in dataset:
            pass
    counts = train_y.sum(axis=1).astype(int)
    print(
        f"images: {len(names)} labels ({', '.join(f'{n} {100 * f:g}%' for n, f in LABELS.items())}"
        f" of the images, any of {len(CLASS_COLORS)} colours), 0 to {MAX_SHAPES} shapes an image "
        f"(training set: {np.bincount(counts, minlength=MAX_SHAPES + 1).tolist()} images with "
        f"0..{MAX_SHAPES}); drawn at {train_x.shape[1]} px, {args.image_size} px in"
    )
    print(
        f"sets: {data.num_train} training + {data.num_validation} validation images "
        f"(from_arrays val_split=0.2, seed {SPLIT_SEED}; random stream {TRAIN_SEED}), "
        f"{len(test_y)} held-out test images (random stream {TEST_SEED})"
    )
    print(
        f"training: {BACKBONE} from random weights, augmentation flip, batch 32, {args.epochs} "
        f"epochs a side, Adam {LEARNING_RATE:g}; tfresnet: fine_tune 1 head epoch + "
        f"{args.epochs - 1} whole backbone (freeze_until=0), its multi-label defaults (balanced "
        f"label weights, label smoothing 0.1, warm-up + cosine, best epoch by validation mAP), "
        f"thresholds chosen on the validation set; plain: build_classifier(multi_label=True, "
        f"freeze_until=0), BinaryCrossentropy(), model.fit {args.epochs} epochs at a constant "
        f"rate, last epoch's weights",
        flush=True,
    )

    result, *costs_a = timed(lambda: train_tfresnet(data, args.epochs))
    best = result.config["best_epoch"]
    print(
        f"(a/b) tfresnet trained: {costs_a[0]:.1f} s wall, {costs_a[1]:.1f} CPU-s; best epoch "
        f"{best['phase']} {best['epoch'] + 1}; load average {load_average()}",
        flush=True,
    )
    plain, *costs_c = timed(lambda: train_plain(data, args.epochs))
    print(
        f"(c) plain Keras trained: {costs_c[0]:.1f} s wall, {costs_c[1]:.1f} CPU-s; load "
        f"average {load_average()}",
        flush=True,
    )

    probabilities, labels = predict_probabilities(result.model, test)
    plain_probabilities, _ = predict_probabilities(plain, test)
    scores = {
        "a": label_scores(probabilities, labels, result.thresholds),
        "b": label_scores(probabilities, labels, [THRESHOLD] * len(names)),
        "c": label_scores(plain_probabilities, labels, [THRESHOLD] * len(names)),
        "d": label_scores(
            plain_probabilities, labels, choose_thresholds(*predict_probabilities(plain, data.validation))
        ),
    }
    print_per_label(names, train_y, labels, scores)
    print_sides(scores, {"a": costs_a, "c": costs_c})
    print(
        f"\nload average after: {load_average()}; {time.perf_counter() - started:.0f} s in all "
        f"(a shared machine: the training times are rough)"
    )
    a, b, c = (scores[side] for side in "abc")
    print(
        f"held-out mAP: tfresnet {a['mean_average_precision']:.3f}, plain Keras BCE "
        f"{c['mean_average_precision']:.3f}"
    )
    print(
        f"held-out plain Keras BCE at 0.5 thresholds: micro-F1 {c['f1_micro']:.3f}, macro-F1 "
        f"{c['f1_macro']:.3f}"
    )
    print(
        f"held-out macro-F1: tuned thresholds {a['f1_macro']:.3f}, fixed 0.5 thresholds {b['f1_macro']:.3f}"
    )
    print(
        f"held-out micro-F1: tuned thresholds {a['f1_micro']:.3f}, fixed 0.5 thresholds {b['f1_micro']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
