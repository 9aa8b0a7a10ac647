"""A health check of an image folder: `check_dataset(...)` and `python -m tfresnet.check DATA_DIR`.

It lists the folder exactly as `tfresnet.from_folder` does (the same files, the same unreadable
ones with the same reasons, the same stratified train/validation split for a `val_split` and
`seed`), then reads every readable image once with PIL, at reduced size (JPEGs are scaled down
by libjpeg while they decode), and reports: the class counts and their imbalance, exact and
near duplicates, duplicates filed under different classes, duplicates on both sides of the
split (validation images the model has seen in training), the image sizes and colour modes.

Near-duplicates. Each image gets a 64-bit perceptual hash (pHash): its 32x32 grayscale
thumbnail goes through a 2-D DCT, and each of the 8x8 lowest frequencies gives a bit, set when
the coefficient is above their median. Two images are near-duplicates when their hashes differ
in at most `hamming_threshold` bits (default 8 of 64) and their average colours on a 4x4 grid
differ by at most 10 of 255 on average (not compared when either image is grayscale). Measured
on photographs and generated images: re-encoding (JPEG quality 50 and up) and resizing move a
hash by 0 to 8 bits and the colours by at most 2; crops of 2 to 3% move the hash by 2 to 10
bits and the colours by up to 7; unrelated photographs differ by about 32 bits. Raise the
threshold to catch larger crops, at the cost of false matches between images that merely look
alike (pictures of one simple shape on a plain background do). Groups are the connected
components of the near-duplicate pairs. Exact duplicates are found among them and confirmed on
the full-size decoded RGB pixels.

Example:
    python -m tfresnet.check flowers/ --val-split 0.2 --seed 0 --strict
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import os
import sys
import warnings

import numpy as np

from tfresnet import console

REPORT_FILE = "dataset_report.json"
HAMMING_THRESHOLD = 8
HASH_SIDE = 8  # the hash keeps the HASH_SIDE x HASH_SIDE lowest DCT frequencies: 64 bits
THUMBNAIL_SIDE = 32
COLOR_GRID = 4
COLOR_TOLERANCE = 10.0
# JPEGs decode at the smallest libjpeg scale (1/2, 1/4, 1/8) that keeps this size.
DRAFT_SIZE = (64, 64)
THREADS = 16
# PIL modes counted under each key of `modes`; every other mode is "rgb" or "other".
MODE_KEYS = {
    "1": "grayscale",
    "L": "grayscale",
    "LA": "grayscale",
    "I": "grayscale",
    "I;16": "grayscale",
    "F": "grayscale",
    "RGBA": "rgba",
    "RGBa": "rgba",
    "CMYK": "cmyk",
    "P": "palette",
    "PA": "palette",
    "RGB": "rgb",
}
MODES = ("grayscale", "rgba", "cmyk", "palette", "rgb", "other")


@dataclasses.dataclass
class _Image:
    """What the check keeps of one readable image."""

    width: int
    height: int
    mode: str
    hash: int
    colors: np.ndarray


def check_dataset(
    directory: str | os.PathLike,
    *,
    val_split: float = 0.2,
    seed: int | None = None,
    hamming_threshold: int = HAMMING_THRESHOLD,
) -> dict:
    """Checks a folder of class sub-folders for duplicates, leakage, bad files and odd images.

    Args:
        directory: The folder `tfresnet.from_folder` would load.
        val_split: The validation fraction training uses (0: no split, no leakage to find).
        seed: The seed training uses: with `val_split`, it decides the split checked for leakage.
        hamming_threshold: Most bits (of 64) two near-duplicates' perceptual hashes differ in.

    Returns:
        A dict: `directory`, `num_images` (readable), `class_counts`, `imbalance_ratio`
        (largest class / smallest), `exact_duplicates` and `near_duplicates` (lists of groups
        of paths relative to `directory`), `conflicting_labels` and `cross_split` (the groups,
        exact or near, spanning several classes or both sides of the split), `unreadable`
        (path: reason), `image_sizes` (min, median, max of width and height), `modes`
        (counts of grayscale, rgba, cmyk, palette, rgb and other images) and the settings.

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: A folder `from_folder` refuses (no class folders, a single class, a class
            without readable images, a `val_split` that holds out nothing).

    Example:
    >>> report = check_dataset("flowers/", val_split=0.2, seed=0)
    >>> report["num_images"], report["cross_split"]
    (300, [])
    """
    from tfresnet.data.folder import list_folder
    from tfresnet.data.pipeline import stratified_split

    if not (isinstance(val_split, (int, float)) and 0 <= val_split < 1):
        raise ValueError(f"val_split must be in [0, 1). Received: val_split={val_split!r}")
    if isinstance(hamming_threshold, bool) or not isinstance(hamming_threshold, int):
        raise ValueError(f"hamming_threshold must be an integer. Received: {hamming_threshold!r}")
    if not 0 <= hamming_threshold < HASH_SIDE**2:
        raise ValueError(f"hamming_threshold must be in [0, {HASH_SIDE**2}). Received: {hamming_threshold}")
    directory = os.fspath(directory)
    with warnings.catch_warnings():  # the bad files are reported below, not warned about
        warnings.simplefilter("ignore")
        class_names, paths, labels, skipped = list_folder(directory, strict=False)
        images = _describe_all(list(paths))
    in_validation = np.zeros(len(paths), bool)
    if val_split:
        in_validation[stratified_split(labels, val_split, seed)[1]] = True

    unreadable = dict(skipped)
    unreadable.update({path: found for path, found in zip(paths, images) if isinstance(found, str)})
    kept = [i for i, found in enumerate(images) if not isinstance(found, str)]
    described = [images[i] for i in kept]
    components = _components(_near_pairs(described, hamming_threshold), len(kept))
    exact, near = _duplicate_groups(components, [paths[i] for i in kept], described)

    def relative(path: str) -> str:
        return os.path.relpath(path, directory)

    where = {paths[i]: (class_names[labels[i]], bool(in_validation[i])) for i in kept}
    groups = [("exact", group) for group in exact] + [("near", group) for group in near]
    counts = np.bincount(labels[kept], minlength=len(class_names))
    return {
        "directory": os.path.abspath(directory),
        "num_images": len(kept),
        "class_counts": {name: int(count) for name, count in zip(class_names, counts)},
        "imbalance_ratio": float(counts.max() / counts.min()) if counts.min() else None,
        "exact_duplicates": [[relative(path) for path in group] for group in exact],
        "near_duplicates": [[relative(path) for path in group] for group in near],
        "conflicting_labels": [
            {
                "kind": kind,
                "paths": [relative(p) for p in group],
                "classes": sorted({where[p][0] for p in group}),
            }
            for kind, group in groups
            if len({where[p][0] for p in group}) > 1
        ],
        "cross_split": [
            {
                "kind": kind,
                "train": [relative(p) for p in group if not where[p][1]],
                "validation": [relative(p) for p in group if where[p][1]],
            }
            for kind, group in groups
            if len({where[p][1] for p in group}) > 1
        ],
        "unreadable": {relative(path): reason for path, reason in sorted(unreadable.items())},
        "image_sizes": _size_summary(described),
        "modes": _mode_counts(described),
        "val_split": val_split,
        "seed": seed,
        "hamming_threshold": hamming_threshold,
    }


# === Reading the images ===


def _describe_all(paths: list[str]) -> list[_Image | str]:
    """Each path's `_Image`, or the reason PIL cannot read it, read in threads."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(_describe, paths))


def _describe(path: str) -> _Image | str:
    """Reads one image at reduced size: its size, mode, perceptual hash and colour grid."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height, mode = image.width, image.height, image.mode
            image.draft(None, DRAFT_SIZE)  # JPEG: decode at 1/2, 1/4 or 1/8 of the size
            thumbnail = image.convert("RGB").resize(
                (THUMBNAIL_SIDE,) * 2, Image.Resampling.LANCZOS, reducing_gap=3.0
            )
    except Exception as error:  # noqa: BLE001 - PIL's decoders raise many kinds of errors
        return f"cannot be decoded by PIL: {error}"
    colors = np.asarray(thumbnail.resize((COLOR_GRID,) * 2, Image.Resampling.BOX), np.float32)
    gray = np.asarray(thumbnail.convert("L"), np.float64)
    return _Image(width, height, mode, perceptual_hash(gray), colors)


def _dct_matrix(size: int) -> np.ndarray:
    """The (unnormalised) DCT-II matrix: `matrix @ x` transforms the columns of `x`."""
    frequency, position = np.arange(size)[:, None], np.arange(size)[None, :]
    return np.cos(np.pi * (2 * position + 1) * frequency / (2 * size))


_DCT = _dct_matrix(THUMBNAIL_SIDE)[:HASH_SIDE]


def perceptual_hash(thumbnail: np.ndarray) -> int:
    """The 64-bit pHash of a 32x32 grayscale thumbnail: the 8x8 lowest DCT frequencies, each
    bit set when its coefficient is above their median.

    Example:
    >>> pixels = np.random.default_rng(0).uniform(0, 255, (32, 32))
    >>> perceptual_hash(pixels) == perceptual_hash(0.5 * pixels + 40)  # contrast and brightness aside
    True
    """
    low = _DCT @ thumbnail @ _DCT.T
    bits = (low > np.median(low)).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


# === Duplicates ===


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(*values.shape, 8), axis=-1).sum(-1)


def _near_pairs(images: list[_Image], threshold: int) -> list[tuple[int, int]]:
    """Index pairs `(i, j)`, `i < j`, of near-duplicates (see the module's documentation)."""
    count = len(images)
    if count < 2:
        return []
    hashes = np.array([image.hash for image in images], dtype=np.uint64)
    colors = np.stack([image.colors for image in images])
    gray = np.array([MODE_KEYS.get(image.mode) == "grayscale" for image in images])
    rows = max(1, 2**22 // count)  # a block of rows x count distances at a time
    pairs = []
    for start in range(0, count, rows):
        distances = _popcount(hashes[start : start + rows, None] ^ hashes[None, :])
        for offset, row in enumerate(distances):
            i = start + offset
            for j in np.flatnonzero(row[i + 1 :] <= threshold) + i + 1:
                difference = float(np.abs(colors[i] - colors[j]).mean())
                if gray[i] or gray[j] or difference <= COLOR_TOLERANCE:
                    pairs.append((i, int(j)))
    return pairs


def _components(pairs: list[tuple[int, int]], count: int) -> list[list[int]]:
    """Connected components (of two or more) of the graph of `pairs`, each sorted."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    found: dict[int, list[int]] = {}
    for i in range(count):
        found.setdefault(root(i), []).append(i)
    return sorted(group for group in found.values() if len(group) > 1)


def _duplicate_groups(
    components: list[list[int]], paths: list[str], images: list[_Image]
) -> tuple[list[list[str]], list[list[str]]]:
    """`(exact, near)` groups of paths: pixel-identical sets inside the components, and the
    components that are more than one exact set."""
    exact, near = [], []
    for component in components:
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in component:
            by_size.setdefault((images[i].width, images[i].height), []).append(i)
        same: dict[str, list[int]] = {}
        for members in by_size.values():
            for i in members if len(members) > 1 else ():
                same.setdefault(_pixel_digest(paths[i]), []).append(i)
        identical = [members for members in same.values() if len(members) > 1]
        exact += [[paths[i] for i in members] for members in identical]
        if not (len(identical) == 1 and len(identical[0]) == len(component)):
            near.append([paths[i] for i in component])
    return sorted(exact), sorted(near)


def _pixel_digest(path: str) -> str:
    """SHA-1 of the full-size RGB pixels of an image (unreadable: a digest of its own)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = image.convert("RGB")
    except Exception:  # noqa: BLE001 - read once already; a file changed since matches nothing
        return f"unreadable:{path}"
    return hashlib.sha1(repr(pixels.size).encode() + pixels.tobytes()).hexdigest()


# === Summaries ===


def _size_summary(images: list[_Image]) -> dict:
    summary = {}
    for name in ("width", "height"):
        values = np.array([getattr(image, name) for image in images] or [0])
        summary[name] = {
            "min": int(values.min()),
            "median": float(np.median(values)),
            "max": int(values.max()),
        }
    return summary


def _mode_counts(images: list[_Image]) -> dict[str, int]:
    counts = dict.fromkeys(MODES, 0)
    for image in images:
        counts[MODE_KEYS.get(image.mode, "other")] += 1
    return counts


def summary_table(report: dict) -> str:
    """The check's findings as a few aligned lines for a terminal.

    Example:
    >>> print(summary_table(check_dataset("flowers/")))
    images              300 in 3 classes (largest / smallest: 1.2)
    ...
    """
    counts = report["class_counts"]
    ratio = report["imbalance_ratio"]
    sizes = report["image_sizes"]
    modes = ", ".join(f"{name} {count}" for name, count in report["modes"].items() if count) or "none"

    def groups(key: str) -> str:
        found = report[key]
        files = f" ({sum(map(len, found))} files)" if key.endswith("duplicates") and found else ""
        return f"{len(found)} groups{files}"

    rows = [
        (
            "images",
            f"{report['num_images']} in {len(counts)} classes (largest / smallest: "
            + (f"{ratio:.1f})" if ratio is not None else "n/a)"),
        ),
        ("exact duplicates", groups("exact_duplicates")),
        ("near duplicates", groups("near_duplicates")),
        ("conflicting labels", groups("conflicting_labels")),
        ("cross-split leaks", groups("cross_split") + ("" if report["val_split"] else " (no split)")),
        ("unreadable", f"{len(report['unreadable'])} files"),
        (
            "sizes",
            f"width {sizes['width']['min']}-{sizes['width']['max']}, "
            f"height {sizes['height']['min']}-{sizes['height']['max']}",
        ),
        ("modes", modes),
    ]
    return "\n".join(f"{name:<20}{value}" for name, value in rows)


def has_problems(report: dict) -> bool:
    """Whether the check found leakage across the split or a label conflict (`--strict`)."""
    return bool(report["cross_split"] or report["conflicting_labels"])


# === The command ===


def build_parser() -> argparse.ArgumentParser:
    """The command's flags; `--help` documents each."""
    parser = console.Parser(
        prog="python -m tfresnet.check",
        description="Check an image folder: duplicates, leakage across the split, bad files, sizes, modes.",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder with one sub-folder of images per class")
    parser.add_argument("--output", default=REPORT_FILE, help="the JSON report to write")
    parser.add_argument(
        "--val-split", type=console.fraction, default=0.2, help="the validation fraction training uses"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the seed training uses (it decides the split)"
    )
    parser.add_argument(
        "--hamming-threshold",
        type=console.non_negative_int,
        default=HAMMING_THRESHOLD,
        help="most differing bits (of 64) of near-duplicates' perceptual hashes",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 on leakage across the split or a label conflict"
    )
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done, 1 problems with `--strict`, 2 bad input).

    Example:
    >>> main(["flowers/", "--output", "flowers_report.json", "--strict"])
    0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    with console.quiet_output(verbose=console.wants_verbose(argv)):
        from tfresnet.checkpoints import write_json

        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            if os.path.isdir(args.output):
                raise ValueError(f"--output {args.output!r} is a folder. Pass the path of a JSON file.")
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            with console.native_stderr_captured(enabled=not args.verbose):
                report = check_dataset(
                    args.data_dir,
                    val_split=args.val_split,
                    seed=args.seed,
                    hamming_threshold=args.hamming_threshold,
                )
            write_json(args.output, report)
        except (ValueError, OSError) as error:
            return console.print_bad_input(parser.prog, error)
    print(summary_table(report))
    print(f"{'report':<20}{os.path.abspath(args.output)}")
    return 1 if args.strict and has_problems(report) else 0


if __name__ == "__main__":
    sys.exit(main())
