"""Precision and recall of the dataset check's label issues on planted label errors, and what
the label part of the check costs next to the rest of it.

Method:

1. Two disjoint sets of generated images, from separate random streams: a clean set, on which
   a backbone is trained, and a check set (`--per-class` images of every class), written as PNG
   files in class folders. `--images digits` (the default): the grayscale hand-drawn-like
   digits of `benchmarks/duplicates.py` (ten classes, each image a digit of its own seed:
   slant, rotation, scale, position, thickness), in RGB; `--images shapes`: the 8 shape
   classes of `benchmarks/recipe.py` (random size, position, rotation and colour, on a noisy
   gradient). Images are drawn at `image_size / 0.875` px, so that the check's central crop
   keeps their pixels.
2. `resnet-tiny` (ResNet50's 175 layers at 4 to 32 channels; there are no ImageNet weights on
   this machine) is trained from random weights on the clean set with `tfresnet.fine_tune`
   (1 head epoch, then `--epochs` epochs with the whole backbone trained), its held-out
   accuracy measured on the clean check set, and its backbone saved with
   `model.get_layer("backbone").save_weights(...)` as a `.weights.h5` file; the script checks
   that `build_classifier(..., backbone="resnet-tiny", weights=PATH)` loads exactly those
   weights. tfresnet refuses a weights file for `resnet-tiny` (a network for tests, flagged
   `test_only`): the script says so, and lifts that flag in its own process while it runs, so
   that the check runs the code path of `weights=PATH` unchanged.
3. For each noise level (5% and 15%), a copy of the check set in which that fraction of the
   images, chosen at random (seeded), is moved into another class folder, chosen at random:
   a flipped label. `tfresnet.check_dataset(copy, seed=0, ...)` with label issues (backbone
   `resnet-tiny`, `weights=PATH`, the image size, `cache_dir=None`) ranks the images
   whose label looks wrong: pooled backbone features of every image (one forward pass each),
   `folds` small heads each trained on the other folds' features (out-of-fold
   probabilities), then cleanlab's `find_label_issues`. Precision: the reported paths that are
   flipped files, over the reported; recall: the flipped files reported, over the flipped.
4. Cost, on the 5% set: the check with and without label issues, taken in turn
   (`--repeats` rounds, the order alternating; wall clock: the median, CPU: the mean, process
   CPU time of all threads), then the label part's steps timed alone, as `find_label_issues`
   runs them without a cache folder: loading the folder, the feature pass
   (`tfresnet.tuning.features.load_or_extract`, building the backbone included; with a cache
   folder, a digest of every image for the cache key comes first), the K-fold heads
   (`out_of_fold_probabilities`) and cleanlab's ranking.
   With `--timing-backbone resnet50` (the default without `--quick`), the feature pass of a
   randomly initialised ResNet50 (`weights=None`: its cost is that of the ImageNet weights)
   at `--timing-size` px (224) on the same images, and the heads on its 2048-wide features:
   the check as it runs on real data.

Goals: precision and recall each at least 0.7 at 5% noise; the K-fold heads under 10% of the
feature pass (ResNet50's when it is timed). The output says whether each is met.

Usage:
    python benchmarks/label_issues.py            # 800 digits to check, ResNet50 timing, ~10 min
    python benchmarks/label_issues.py --quick    # a 1-3 minute smoke run: 300 digits, no ResNet50
    python benchmarks/label_issues.py --images shapes --epochs 30
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import warnings
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras warns on every fit that its shuffle argument does not apply to a tf.data dataset.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pipeline import describe_machine, load_average  # noqa: E402
from recipe import DIGITS, SHAPES, digit_images, shape_images  # noqa: E402

import tfresnet  # noqa: E402
from tfresnet.data.transforms import CROP_FRACTION  # noqa: E402
from tfresnet.models import backbones  # noqa: E402

BACKBONE = "resnet-tiny"
NOISE_LEVELS = (0.05, 0.15)
HEADLINE_NOISE = 0.05
GOAL_PRECISION_RECALL = 0.7
GOAL_HEADS_SHARE = 0.10
CHECK_SEED = 0
IMAGE_SETS = {  # name: (draw, class names, image size, augmentation while training)
    "digits": (digit_images, DIGITS, 32, "none"),
    "shapes": (shape_images, SHAPES, 64, "flip"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="150 training and 30 check images a class, 3 epochs, no ResNet50 "
                             "timing, 1 timed round: a 1-3 minute smoke run")
    parser.add_argument("--images", choices=tuple(IMAGE_SETS), default="digits",
                        help="the generated set (see above)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side the backbone sees (default: 32 for digits, 64 for shapes)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="clean training images per class (default: 600; 150 with --quick)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="check images per class (default: 80; 30 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs after the head epoch (default: 8; 3 with --quick)")
    parser.add_argument("--augmentation", choices=("none", "flip", "standard"), default=None,
                        help="augmentation while training the backbone (default: none for "
                             "digits, flip for shapes)")
    parser.add_argument("--folds", type=int, default=5, help="heads of the label check")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds of the check with and without label issues "
                             "(default: 2; 1 with --quick)")
    parser.add_argument("--timing-backbone", choices=("resnet50", "none"), default=None,
                        help="also time this backbone's feature pass against the heads "
                             "(default: resnet50; none with --quick)")
    parser.add_argument("--timing-size", type=int, default=224,
                        help="image side of the --timing-backbone feature pass")
    return parser


# === Machine, images, backbone ===


def cpu_flags() -> str:
    """Whether the CPU has AVX-512F and AVX2 (the `flags` line of /proc/cpuinfo)."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            flags = next((set(line.split(":", 1)[1].split()) for line in file
                          if line.startswith("flags")), set())
    return ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx512f", "avx2"))


def write_folder(root: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> None:
    """Writes `images` as `root/<class>/<index>.png` (indices unique over the whole set)."""
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(os.path.join(root, names[label], f"{index:05d}.png"))


@contextlib.contextmanager
def tiny_takes_weights_file():
    """Lifts `resnet-tiny`'s `test_only` flag, which refuses any `weights` but None, in this process."""
    row = backbones.BACKBONES[BACKBONE]
    with mock.patch.dict(backbones.BACKBONES, {BACKBONE: dataclasses.replace(row, test_only=False)}):
        yield


def train_backbone(args, draw, names) -> tuple[object, dict]:
    """`resnet-tiny` trained on the clean set; the model and what to print about it."""
    drawn = round(args.image_size / CROP_FRACTION)
    train_x, train_y = draw(args.train_per_class, drawn, seed=1)
    validation = draw(max(args.train_per_class // 10, 10), drawn, seed=3)
    data = tfresnet.from_arrays(train_x, train_y, validation=validation, image_size=args.image_size,
                                batch_size=32, augmentation=args.augmentation, seed=0)
    start = time.perf_counter(), time.process_time()
    result = tfresnet.fine_tune(
        data, backbone=BACKBONE, weights=None, head_epochs=1, epochs=args.epochs,
        learning_rate=2e-3, fine_tune_learning_rate=2e-3, freeze_until=0, patience=None,
        seed=0, verbose=0,
    )
    return result.model, {
        "images": len(train_y),
        "validation": len(validation[1]),
        "wall": time.perf_counter() - start[0],
        "cpu": time.process_time() - start[1],
        "best_epoch": result.config["best_epoch"],
    }


def save_backbone(model, path: str, num_classes: int, image_size: int) -> str:
    """Saves `model`'s backbone weights to `path` and checks that `weights=path` loads them."""
    model.get_layer("backbone").save_weights(path)
    try:
        tfresnet.build_classifier(num_classes, backbone=BACKBONE, weights=path, image_size=image_size)
        refused = "accepted"
    except ValueError as error:
        refused = f"refused ({str(error).split(':')[0]})"
    with tiny_takes_weights_file():
        loaded = tfresnet.build_classifier(num_classes, backbone=BACKBONE, weights=path,
                                           image_size=image_size)
    saved = model.get_layer("backbone").get_weights()
    read = loaded.get_layer("backbone").get_weights()
    equal = sum(np.array_equal(a, b) for a, b in zip(saved, read))
    if equal != len(saved) or len(read) != len(saved):
        raise RuntimeError(f"{path} loads {equal} of {len(saved)} backbone arrays unchanged")
    return (f"build_classifier(backbone={BACKBONE!r}, weights=PATH) without the flag lifted: "
            f"{refused}; with it: {equal} of {len(saved)} backbone arrays loaded unchanged")


# === Planted errors and the check ===


def plant_errors(source: str, target: str, fraction: float, names: tuple[str, ...],
                 seed: int) -> dict[str, str]:
    """Copies `source` to `target` and moves `fraction` of its images into another class
    folder; returns `{relative path after the move: original class}`."""
    shutil.copytree(source, target)
    files = sorted(os.path.join(name, file) for name in names
                   for file in os.listdir(os.path.join(source, name)))
    rng = np.random.default_rng(seed)
    flipped = {}
    for index in sorted(rng.choice(len(files), round(fraction * len(files)), replace=False)):
        given, file = os.path.split(files[index])
        other = str(rng.choice([name for name in names if name != given]))
        moved = os.path.join(other, file)
        os.replace(os.path.join(target, files[index]), os.path.join(target, moved))
        flipped[os.path.normpath(moved)] = given
    return flipped


def timed(function):
    """`function()`'s result, wall-clock seconds and process CPU seconds."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def label_issue_arguments(args, weights: str) -> dict:
    """`check_dataset`'s label-issue argument."""
    from tfresnet.insight.label_issues import LabelIssueOptions

    options = LabelIssueOptions(backbone=BACKBONE, weights=weights, image_size=args.image_size,
                                folds=args.folds, cache_dir=None)
    return {"label_issues": options}


def run_check(args, folder: str, weights: str, label_issues: bool = True):
    """The check of `folder`, with or without label issues; its report, wall and CPU seconds."""
    extra = label_issue_arguments(args, weights) if label_issues else {}
    return timed(lambda: tfresnet.check_dataset(folder, seed=CHECK_SEED, **extra))


def score(found: dict, flipped: dict[str, str]) -> dict:
    """Precision and recall of the reported paths against the flipped files."""
    reported = [os.path.normpath(issue["path"]) for issue in found["issues"]]
    hits = [path for path in reported if path in flipped]
    true_class = sum(issue["suggested"] == flipped.get(os.path.normpath(issue["path"]))
                     for issue in found["issues"])
    return {
        "flipped": len(flipped),
        "reported": len(reported),
        "hits": len(hits),
        "precision": len(hits) / len(reported) if reported else float("nan"),
        "recall": len(hits) / len(flipped) if flipped else float("nan"),
        "true_class": true_class,
        "accuracy": found["out_of_fold_accuracy"],
    }


# === The label part's steps, timed alone ===


def label_steps(folder: str, *, backbone: str, weights, image_size: int, folds: int) -> dict:
    """Wall and CPU seconds of each step `find_label_issues` takes, as the check runs it."""
    from tfresnet.data.folder import from_folder
    from tfresnet.insight.label_issues import out_of_fold_probabilities, require_cleanlab
    from tfresnet.models.backbones import eval_crop_fraction
    from tfresnet.tuning.features import load_or_extract

    steps = {}
    data, *steps["load folder"] = timed(lambda: from_folder(
        folder, val_split=0.2, image_size=image_size, seed=CHECK_SEED, augmentation="none",
        crop_fraction=eval_crop_fraction(backbone, weights)))
    features, *steps["feature pass"] = timed(lambda: load_or_extract(
        data, backbone=backbone, weights=weights, seed=CHECK_SEED, cache_dir=None,
        strategy=None))
    x = np.concatenate([features.train_features, features.validation_features])
    labels = np.concatenate([features.train_labels, features.validation_labels])
    probabilities, *steps[f"{folds}-fold heads"] = timed(lambda: out_of_fold_probabilities(
        x, labels, len(data.class_names), folds=folds, seed=CHECK_SEED))
    _, *steps["cleanlab ranking"] = timed(lambda: require_cleanlab().find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1))
    return {"steps": steps, "images": len(labels), "feature_dim": x.shape[1],
            "accuracy": float((probabilities.argmax(axis=1) == labels).mean())}


def print_steps(title: str, measured: dict, folds: int) -> tuple[float, float]:
    """Prints the steps; returns heads / feature pass, wall and CPU."""
    steps = measured["steps"]
    print(f"\n{title}: {measured['images']} images, features {measured['feature_dim']} wide, "
          f"out-of-fold accuracy {measured['accuracy']:.3f}")
    print(f"  {'step':<36} {'wall s':>8} {'CPU s':>8}")
    for name, (wall, cpu) in steps.items():
        print(f"  {name:<36} {wall:>8.2f} {cpu:>8.2f}")
    feature_wall, feature_cpu = steps["feature pass"]
    heads_wall, heads_cpu = steps[f"{folds}-fold heads"]
    print(f"  feature pass: {measured['images'] / feature_wall:.1f} images/s, "
          f"{measured['images'] / feature_cpu:.1f} images/CPU-s (one forward pass per image, "
          f"building the backbone included); heads / feature pass: "
          f"{heads_wall / feature_wall:.1%} wall, {heads_cpu / feature_cpu:.1%} CPU")
    return heads_wall / feature_wall, heads_cpu / feature_cpu


def measure(args, root: str, weights: str, names, check_x, check_y) -> dict:
    """Plants the errors, runs the checks and times the label steps; what the headlines need."""
    clean = os.path.join(root, "clean")
    write_folder(clean, check_x, check_y, names)

    scores, folders = {}, {}
    print(f"\ncheck_dataset(copy, seed={CHECK_SEED}, label issues with backbone={BACKBONE!r}, "
          f"weights=PATH, image_size={args.image_size}, folds={args.folds}, cache_dir=None)")
    print(f"{'noise':>6} {'flipped':>8} {'reported':>9} {'found':>6} {'precision':>10} "
          f"{'recall':>7} {'true class suggested':>21} {'out-of-fold acc':>16} {'wall s':>7}")
    for level, noise in enumerate(NOISE_LEVELS):
        folder = folders[noise] = os.path.join(root, f"noise{round(100 * noise)}")
        flipped = plant_errors(clean, folder, noise, names, seed=100 + level)
        report, wall, _ = run_check(args, folder, weights)
        result = scores[noise] = score(report["label_issues"], flipped)
        print(f"{noise:>6.0%} {result['flipped']:>8} {result['reported']:>9} "
              f"{result['hits']:>6} {result['precision']:>10.2f} {result['recall']:>7.2f} "
              f"{result['true_class']:>21} {result['accuracy']:>16.3f} {wall:>7.1f}",
              flush=True)

    folder = folders[HEADLINE_NOISE]
    runs = {True: [], False: []}
    for round_ in range(args.repeats):
        for label_issues in ((False, True) if round_ % 2 == 0 else (True, False)):
            runs[label_issues].append(run_check(args, folder, weights, label_issues)[1:])
    with_wall, without_wall = (float(np.median([wall for wall, _ in runs[side]]))
                               for side in (True, False))
    with_cpu, without_cpu = (float(np.mean([cpu for _, cpu in runs[side]]))
                             for side in (True, False))
    print(f"\ncost on the {HEADLINE_NOISE:.0%} set, {args.repeats} round(s) in turn: check "
          f"without label issues {without_wall:.2f} s wall, {without_cpu:.2f} CPU-s; with "
          f"label issues {with_wall:.2f} s wall, {with_cpu:.2f} CPU-s")
    share = print_steps(f"label steps, {BACKBONE} at {args.image_size} px",
                        label_steps(folder, backbone=BACKBONE, weights=weights,
                                    image_size=args.image_size, folds=args.folds), args.folds)
    share_name = f"{BACKBONE} {args.image_size} px"
    if args.timing_backbone != "none":
        share = print_steps(
            f"label steps, {args.timing_backbone} (weights=None) at {args.timing_size} px",
            label_steps(folder, backbone=args.timing_backbone, weights=None,
                        image_size=args.timing_size, folds=args.folds), args.folds)
        share_name = f"{args.timing_backbone} {args.timing_size} px"
    return {"scores": scores, "share": share, "share_name": share_name,
            "with": (with_wall, with_cpu), "without": (without_wall, without_cpu)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    draw, names, default_size, default_augmentation = IMAGE_SETS[args.images]
    args.image_size = args.image_size or default_size
    args.augmentation = args.augmentation or default_augmentation
    args.train_per_class = args.train_per_class or (150 if args.quick else 600)
    args.per_class = args.per_class or (30 if args.quick else 80)
    args.epochs = args.epochs or (3 if args.quick else 8)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.timing_backbone = args.timing_backbone or ("none" if args.quick else "resnet50")
    started = time.perf_counter()
    print(describe_machine())
    print(f"CPU flags: {cpu_flags()}")
    print(f"load average before: {load_average()}", flush=True)

    model, trained = train_backbone(args, draw, names)
    drawn = round(args.image_size / CROP_FRACTION)
    check_x, check_y = draw(args.per_class, drawn, seed=2)
    test = tfresnet.from_arrays(check_x, check_y, val_split=0, image_size=args.image_size,
                                batch_size=64, augmentation="none").train_evaluation
    held_out = tfresnet.evaluate(model, test)["accuracy"]
    best = trained["best_epoch"]
    print(f"images: {args.images}, {len(names)} classes; clean set {trained['images']} training + "
          f"{trained['validation']} validation images, check set {len(check_y)} images "
          f"({args.per_class} a class), separate random streams, drawn at {drawn} px, "
          f"{args.image_size} px in")
    print(f"backbone: {BACKBONE} from random weights, fine_tune 1 head epoch + {args.epochs} "
          f"epochs whole backbone, augmentation {args.augmentation}: {trained['wall']:.0f} s "
          f"wall, {trained['cpu']:.0f} CPU-s; best epoch {best['phase']} {best['epoch'] + 1}; "
          f"held-out accuracy on the clean check set {held_out:.3f}", flush=True)

    with tempfile.TemporaryDirectory() as root:
        weights = os.path.join(root, f"{BACKBONE}-{args.images}.weights.h5")
        loads = save_backbone(model, weights, len(names), args.image_size)
        print(f"weights file: {os.path.getsize(weights) / 1024:.0f} KiB; {loads}")
        with tiny_takes_weights_file():
            measured = measure(args, root, weights, names, check_x, check_y)
    print(f"\nload average after: {load_average()}; {time.perf_counter() - started:.0f} s in all")

    headline = measured["scores"][HEADLINE_NOISE]
    share, share_name = measured["share"], measured["share_name"]
    (with_wall, with_cpu), (without_wall, without_cpu) = measured["with"], measured["without"]
    met = min(headline["precision"], headline["recall"]) >= GOAL_PRECISION_RECALL
    print(f"goal precision and recall >= {GOAL_PRECISION_RECALL} at {HEADLINE_NOISE:.0%} noise: "
          f"{'met' if met else 'MISSED'} ({headline['precision']:.2f}, {headline['recall']:.2f})")
    print(f"goal heads < {GOAL_HEADS_SHARE:.0%} of the feature pass ({share_name}): "
          f"{'met' if share[0] < GOAL_HEADS_SHARE else 'MISSED'} ({share[0]:.1%} wall, "
          f"{share[1]:.1%} CPU)")
    print(f"check with --label-issues / without: {with_wall / without_wall:.1f}x wall, "
          f"{with_cpu / without_cpu:.1f}x CPU (time); heads / feature pass: {share[0]:.1%} wall, "
          f"{share[1]:.1%} CPU ({share_name}, {len(check_y)} images)")
    print(f"label issues: precision {headline['precision']:.2f}, recall {headline['recall']:.2f} "
          f"at {HEADLINE_NOISE:.0%} noise")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
