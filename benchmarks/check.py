"""Images per minute of the dataset check against a plain decode of the same files.

(a) `tfresnet.check_dataset(folder)`: the loader's listing and file check, then every image read
    once with PIL at reduced size (JPEG scale-down while decoding), its perceptual hash and colour
    grid, the near-duplicate search and the exact-duplicate confirmation;
(b) PIL's full decode of every file (`Image.open(path).convert("RGB")`) in the same number of
    threads: what any check that looks at the pixels would at least cost without the scale-down.

The photo-like JPEGs (random colour fields at four scales, finer ones fainter, plus noise) are
all different; 1% more are planted copies of some of them, half resized and re-encoded, half
cropped by 2% on two sides and re-encoded, to count what the check finds (and what it finds that
is not there).

Usage:
    python benchmarks/check.py            # 5,000 JPEGs of 500x375 px
    python benchmarks/check.py --quick    # 1,000 JPEGs
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfresnet import check  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 images (about a minute on 2 cores)")
    parser.add_argument(
        "--num-images", type=int, default=None, help="distinct JPEGs (default 5000; 1000 quick)"
    )
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--classes", type=int, default=4, help="class sub-folders")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, alternating")
    return parser


def photo(seed: int, width: int, height: int) -> Image.Image:
    """A photo-like image: random colour fields at four scales, the finer the fainter, plus noise."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((3, 1.0), (6, 0.6), (12, 0.35), (24, 0.2)):
        field = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        channels = [
            Image.fromarray(field[..., k], mode="F").resize((width, height), Image.BICUBIC) for k in range(3)
        ]
        total += weight * np.stack([np.asarray(channel) for channel in channels], axis=-1)
    pixels = 128 + 60 * total + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_folder(
    root: str, *, num_images: int, classes: int, width: int, height: int
) -> list[tuple[str, str]]:
    """Writes the distinct JPEGs and the planted copies; returns the (original, copy) pairs."""
    for index in range(num_images):
        folder = os.path.join(root, f"class{index % classes}")
        os.makedirs(folder, exist_ok=True)
        photo(index, width, height).save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)
    planted = []
    for number, index in enumerate(range(0, num_images, 100)):
        original = os.path.join(f"class{index % classes}", f"{index:05d}.jpg")
        image = Image.open(os.path.join(root, original))
        if number % 2 == 0:
            copy = image.resize((width * 2 // 3, height * 2 // 3), Image.BILINEAR)
        else:
            copy = image.crop((round(0.02 * width), round(0.02 * height), width, height))
        name = os.path.join(f"class{index % classes}", f"{index:05d}_copy.jpg")
        copy.save(os.path.join(root, name), quality=75)
        planted.append((original, name))
    return planted


def full_decode(root: str) -> int:
    """(b): every image decoded in full by PIL, in the check's number of threads."""
    paths = [os.path.join(folder, name) for folder, _, names in os.walk(root) for name in sorted(names)]

    def decode(path: str) -> int:
        with Image.open(path) as image:
            return image.convert("RGB").size[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=check.THREADS) as pool:
        return len(list(pool.map(decode, paths)))


def timed(function) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - start_cpu


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    num_images = args.num_images or (1000 if args.quick else 5000)
    width, height = args.photo_size
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {check.THREADS} threads")
    print(f"load average before: {', '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min)")
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        planted = write_folder(root, num_images=num_images, classes=args.classes, width=width, height=height)
        total = num_images + len(planted)
        print(
            f"{total} JPEGs of {width}x{height} px ({len(planted)} planted copies), written in "
            f"{time.perf_counter() - start:.0f} s"
        )
        report = check.check_dataset(root, val_split=0.2, seed=0)  # warm-up: files in the page cache
        full_decode(root)
        times = {"check": [], "decode": []}
        for _ in range(args.repeats):
            times["check"].append(timed(lambda: check.check_dataset(root, val_split=0.2, seed=0)))
            times["decode"].append(timed(lambda: full_decode(root)))
        groups = [set(group) for group in report["near_duplicates"] + report["exact_duplicates"]]
        found = sum(any(set(pair) <= group for group in groups) for pair in planted)
        others = sum(not any(set(pair) <= group for pair in planted) for group in groups)
        print(f"planted copies found: {found} of {len(planted)}; groups of other images: {others}")
        print(f"load average after: {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    rates = {}
    for name, runs in times.items():
        wall = float(np.median([run[0] for run in runs]))
        cpu = float(np.mean([run[1] for run in runs]))
        rates[name] = (total / wall, total / cpu)
        print(
            f"{name:>6}: {wall:.2f} s wall (median of {len(runs)}), {cpu:.2f} CPU-s; "
            f"{60 * total / wall:,.0f} images/minute, {total / cpu:.0f} images/CPU-s"
        )
    (check_wall, check_cpu), (decode_wall, decode_cpu) = rates["check"], rates["decode"]
    print(
        f"check_dataset / PIL full decode: {check_wall / decode_wall:.1f}x wall, "
        f"{check_cpu / decode_cpu:.1f}x CPU; check_dataset {60 * check_wall:,.0f} images/minute "
        f"on {os.cpu_count()} CPUs (target 10,000)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
