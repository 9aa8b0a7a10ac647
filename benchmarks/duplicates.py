"""Precision and recall of the dataset check's near-duplicates on small grayscale digits.

A digits-like set: 32 px grayscale hand-drawn digits (ten classes; each digit a few PIL strokes
with jittered points, random slant, rotation, scale, position and thickness, drawn at 4x and
scaled down), all distinct, many of them look-alikes (one class, one shape). Planted copies of
some of them: re-encodings (JPEG quality 70 to 95), resizes (to 24, 28, 40 or 48 px) and small
crops (2 to 3% per side, kept at their size or scaled back to 32 px). `tfresnet.check_dataset`
runs on the folder with the copies; a near-duplicate group found is correct when its members
are one original and planted copies of it; recall is the planted copies found in a group with
their original, over the planted copies. Then it runs on the clean set (no copies), where every
group, conflict and cross-split leak is a false alarm.

Usage:
    python benchmarks/duplicates.py               # 1,200 digits, 150 planted copies
    python benchmarks/duplicates.py --num-images 500 --copies 60
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from tfresnet import check  # noqa: E402

SIDE = 32
SCALE = 4  # digits are drawn at SCALE x SIDE px, then scaled down (antialiased, as MNIST's are)


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 9) -> list:
    angles = np.radians(np.linspace(start, end, points))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# Each digit: strokes, each a list of (x, y) points in a unit box (y down).
STROKES = {
    0: [_arc(0.5, 0.5, 0.3, 0.42, 0, 360, 17)],
    1: [[(0.38, 0.22), (0.52, 0.08), (0.52, 0.92)]],
    2: [_arc(0.5, 0.32, 0.28, 0.24, 200, 380) + [(0.22, 0.9), (0.82, 0.9)]],
    3: [_arc(0.48, 0.3, 0.26, 0.21, 210, 450), _arc(0.48, 0.7, 0.3, 0.22, 270, 510)],
    4: [[(0.68, 0.92), (0.68, 0.08), (0.16, 0.64), (0.86, 0.64)]],
    5: [[(0.78, 0.1), (0.3, 0.1), (0.26, 0.46)] + _arc(0.5, 0.66, 0.3, 0.26, 240, 510)],
    6: [[(0.7, 0.1), (0.34, 0.5)] + _arc(0.5, 0.68, 0.26, 0.24, 190, 550, 17)],
    7: [[(0.2, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    8: [_arc(0.5, 0.29, 0.22, 0.2, 90, 450, 13), _arc(0.5, 0.7, 0.27, 0.22, -90, 270, 13)],
    9: [_arc(0.5, 0.32, 0.25, 0.22, 0, 360, 13) + [(0.75, 0.32), (0.7, 0.92)]],
}


def digit(label: int, seed: int) -> Image.Image:
    """A 32 px grayscale hand-drawn-like digit: white strokes on black, unlike any other seed's."""
    rng = np.random.default_rng(seed)
    angle = np.radians(rng.uniform(-12, 12))
    slant, scale = rng.uniform(-0.3, 0.3), rng.uniform(0.62, 0.78)
    shift = rng.uniform(-0.06, 0.06, 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = scale * rotation @ np.array([[1.0, -slant], [0.0, 1.0]])
    canvas = Image.new("L", (SCALE * SIDE,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    width = round(SCALE * rng.uniform(1.6, 3.2))
    for stroke in STROKES[label]:
        points = np.array(stroke) - 0.5 + rng.normal(0, 0.025, (len(stroke), 2))
        points = (points @ transform.T + 0.5 + shift) * SCALE * SIDE
        xy = [tuple(point) for point in points]
        draw.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return canvas.resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def planted_copy(image: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A copy of `image` of one `kind` (jpeg, resize or crop) and the extension to save it with."""
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(70, 96)))
        return Image.open(buffer), ".jpg"
    if kind == "resize":
        side = int(rng.choice([24, 28, 40, 48]))
        return image.resize((side, side), Image.Resampling.BICUBIC), ".png"
    box = SIDE * np.array([0, 0, 1, 1]) + SIDE * rng.uniform(0.02, 0.03, 4) * np.array([1, 1, -1, -1])
    if rng.random() < 0.5:  # cropped by a whole pixel per side (3.1%), kept at its size
        return image.crop((1, 1, SIDE - 1, SIDE - 1)), ".png"
    return image.resize((SIDE, SIDE), Image.Resampling.BICUBIC, box=tuple(box)), ".png"


def write_digits(root: str, num_images: int, classes: int = 10) -> list[str]:
    """Writes the distinct digits, ten classes in turn; returns their paths relative to `root`."""
    names = []
    for index in range(num_images):
        label = index % classes
        folder = os.path.join(root, f"digit{label}")
        os.makedirs(folder, exist_ok=True)
        names.append(os.path.join(f"digit{label}", f"{index:05d}.png"))
        digit(label, 1000 + index).save(os.path.join(root, names[-1]))
    return names


def plant(root: str, names: list[str], copies: int, seed: int = 0) -> dict[str, str]:
    """Writes `copies` planted copies of distinct originals; returns copy -> original."""
    rng = np.random.default_rng(seed)
    planted = {}
    for number, index in enumerate(rng.choice(len(names), copies, replace=False)):
        kind = ("jpeg", "resize", "crop")[number % 3]
        copy, extension = planted_copy(Image.open(os.path.join(root, names[index])), kind, rng)
        name = names[index].replace(".png", f"_{kind}{extension}")
        copy.save(os.path.join(root, name))
        planted[name] = names[index]
    return planted


def scores(report: dict, planted: dict[str, str]) -> tuple[int, int, int]:
    """(correct groups, groups, planted copies found with their original) of a report."""
    groups = [set(group) for group in report["near_duplicates"] + report["exact_duplicates"]]
    correct = sum(len({planted.get(name, name) for name in group}) == 1 for group in groups)
    found = sum(any({copy, original} <= group for group in groups) for copy, original in planted.items())
    return correct, len(groups), found


def timed(function):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=1200, help="distinct digits")
    parser.add_argument("--copies", type=int, default=150, help="planted copies (a third of each kind)")
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {check.THREADS} threads")
    print(f"load average before: {', '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min)")
    with tempfile.TemporaryDirectory() as root:
        names = write_digits(root, args.num_images)
        clean, clean_wall, clean_cpu = timed(lambda: check.check_dataset(root, val_split=0.2, seed=0))
        print(
            f"clean set, {clean['num_images']} digits of {SIDE} px: {len(clean['near_duplicates'])} near "
            f"groups, {len(clean['exact_duplicates'])} exact groups, {len(clean['conflicting_labels'])} "
            f"conflicting_labels, {len(clean['cross_split'])} cross_split ({clean_wall:.1f} s wall, "
            f"{clean_cpu:.1f} CPU-s)"
        )
        planted = plant(root, names, args.copies)
        report, wall, cpu = timed(lambda: check.check_dataset(root, val_split=0.2, seed=0))
        correct, groups, found = scores(report, planted)
        for kind in ("jpeg", "resize", "crop"):
            of_kind = {copy: original for copy, original in planted.items() if f"_{kind}." in copy}
            print(f"  {kind:<7}copies found: {scores(report, of_kind)[2]} of {len(of_kind)}")
    print(f"load average after: {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    precision = correct / groups if groups else 1.0
    print(
        f"with {len(planted)} planted copies: precision {precision:.3f} ({correct} of {groups} groups), "
        f"recall {found / len(planted):.3f} ({found} of {len(planted)} copies); "
        f"{report['num_images']} images in {wall:.1f} s wall, {cpu:.1f} CPU-s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
