"""What the dataset check reads of each image, and the duplicates it finds among them.

Near-duplicates. Each image gets a 64-bit perceptual hash (pHash): its 32x32 grayscale
thumbnail goes through a 2-D DCT, and each of the 8x8 lowest frequencies gives a bit, set when
the coefficient is above their median. Two images are near-duplicates when their hashes differ
in at most `hamming_threshold` bits (default 8 of 64) and their average colours on a 4x4 grid
differ by at most 10 of 255 on average (not compared when either image is grayscale). Measured
on photographs and generated images: re-encoding (JPEG quality 50 and up) and resizing move a
hash by 0 to 8 bits and the colours by at most 2; crops of 2 to 3% move the hash by 2 to 10
bits and the colours by up to 7; unrelated photographs differ by about 32 bits. Raise the
threshold to catch larger crops, at the cost of false matches between images that merely look
alike (pictures of one simple shape on a plain background do). When either image is grayscale
the colour grid says nothing, and on small images the hash matches look-alikes (32 px
hand-drawn digits of one class), so such a pair is confirmed on pixels: both in grayscale at
half the smaller image's size (at most `COMPARE_SIDE`), either one cropped by 0 or 3% on each
side, and the best mean absolute difference at most `PIXEL_TOLERANCE` (0.075) of the image's
contrast (its mean absolute deviation). Measured on 32 px digits (benchmarks/duplicates.py):
re-encodings, resizes and crops of 2 to 3% differ by 0.005 to 0.09, look-alikes that pass the
hash by 0.058 and up (1% under 0.075); noisy photographs re-encoded differ by up to 0.26,
which is why colour pairs keep the colour grid's rule. Groups are the connected
components of the near-duplicate pairs. Exact duplicates are found among them and confirmed on
the full-size decoded RGB pixels.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib

import numpy as np

HAMMING_THRESHOLD = 8
HASH_SIDE = 8  # the hash keeps the HASH_SIDE x HASH_SIDE lowest DCT frequencies: 64 bits
THUMBNAIL_SIDE = 32
COLOR_GRID = 4
COLOR_TOLERANCE = 10.0
# Candidate pairs with a grayscale image are confirmed on pixels: both images in grayscale at
# a common size, half the smaller one's and at most COMPARE_SIDE per side, each side of either image
# cropped by each fraction of CROP_STEPS in turn (the other image whole), and the best
# alignment's mean absolute difference at most PIXEL_TOLERANCE times the whole image's mean
# absolute deviation from its mean (its contrast).
COMPARE_SIDE = 32
CROP_STEPS = (0.0, 0.03)
PIXEL_TOLERANCE = 0.075
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
class ImageFacts:
    """What the check keeps of one readable image: its size, PIL mode, perceptual hash and
    average colours on a `COLOR_GRID` x `COLOR_GRID` grid."""

    width: int
    height: int
    mode: str
    hash: int
    colors: np.ndarray


# === Reading the images ===


def describe_images(paths: list[str]) -> list[ImageFacts | str]:
    """Each path's `ImageFacts`, or the reason PIL cannot read it, read in threads.

    Example:
        facts = describe_images(["photos/cat.jpg"])
        facts[0].width, facts[0].mode
        # (500, 'RGB')
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(_describe, paths))


def _describe(path: str) -> ImageFacts | str:
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
    return ImageFacts(width, height, mode, perceptual_hash(gray), colors)


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


def _near_pairs(images: list[ImageFacts], threshold: int) -> list[tuple[int, int]]:
    """Index pairs `(i, j)`, `i < j`, of near-duplicates (see the module's documentation)."""
    count = len(images)
    if count < 2:
        return []
    hashes = np.array([image.hash for image in images], dtype=np.uint64)
    colors = np.stack([image.colors for image in images])
    gray = np.array([_grayscale(image) for image in images])
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


def _grayscale(*images: ImageFacts) -> bool:
    """Whether any of `images` is grayscale (its colour grid is then not compared)."""
    return any(MODE_KEYS.get(image.mode) == "grayscale" for image in images)


def _decoded(path: str):
    """An image decoded in grayscale for the pixel comparison (JPEGs at reduced size); None when
    it no longer decodes."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft(None, (2 * COMPARE_SIDE,) * 2)
            return image.convert("L")
    except Exception:  # noqa: BLE001 - read once already; a file changed since matches nothing
        return None


def _crop_boxes(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Every box of an image of `width` x `height` cropped by a fraction of `CROP_STEPS` per side."""
    fractions = np.array(np.meshgrid(*[CROP_STEPS] * 4)).reshape(4, -1).T
    return [
        (left * width, top * height, (1 - right) * width, (1 - bottom) * height)
        for left, top, right, bottom in fractions
    ]


def pixel_difference(first, second, size: tuple[int, int]) -> float:
    """The smallest mean absolute difference between two PIL images of one mode at `size`, over
    the alignments of `CROP_STEPS` (either image cropped, the other whole), relative to the
    whole image's mean absolute deviation from its mean (at least 1 of 255).

    Example:
        from PIL import Image
        image = Image.effect_noise((64, 64), 60)
        pixel_difference(image, image.crop((2, 2, 62, 62)), (32, 32)) < PIXEL_TOLERANCE
        # True
    """
    from PIL import Image

    best = np.inf
    for cropped, whole in ((first, second), (second, first)):
        target = np.asarray(whole.resize(size, Image.Resampling.BILINEAR), np.float32)
        for box in _crop_boxes(cropped.width, cropped.height):
            moved = np.asarray(cropped.resize(size, Image.Resampling.BILINEAR, box=box), np.float32)
            best = min(best, float(np.abs(moved - target).mean()))
    return best / max(float(np.abs(target - target.mean()).mean()), 1.0)


def _confirmed(
    pairs: list[tuple[int, int]], paths: list[str], images: list[ImageFacts]
) -> list[tuple[int, int]]:
    """The `pairs` of colour images, and those with a grayscale image that match on pixels
    (see the module's documentation)."""
    decoded: dict[int, object] = {}

    def pixels(i: int):
        if i not in decoded:
            decoded[i] = _decoded(paths[i])
        return decoded[i]

    kept = []
    for i, j in pairs:
        if not _grayscale(images[i], images[j]):
            kept.append((i, j))  # the colour grid confirmed it
            continue
        first, second = pixels(i), pixels(j)
        if first is None or second is None:
            continue
        size = (
            max(1, min(2 * COMPARE_SIDE, images[i].width, images[j].width) // 2),
            max(1, min(2 * COMPARE_SIDE, images[i].height, images[j].height) // 2),
        )
        if pixel_difference(first, second, size) <= PIXEL_TOLERANCE:
            kept.append((i, j))
    return kept


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


def find_duplicates(
    paths: list[str], images: list[ImageFacts], threshold: int = HAMMING_THRESHOLD
) -> tuple[list[list[int]], list[list[int]]]:
    """`(exact, near)` groups of duplicates among `paths`, described by `images`, as sorted
    lists of indices: the pixel-identical images, and the groups of near-duplicates that are
    more than one exact group (see the module's documentation; `threshold` is the most bits
    two hashes differ in). A path listed twice is a duplicate of itself.

    Example:
        paths = ["a.png", "a_copy.png", "b.png"]
        find_duplicates(paths, describe_images(paths))
        # ([[0, 1]], [])
    """
    exact, near = [], []
    pairs = _confirmed(_near_pairs(images, threshold), paths, images)
    for component in _components(pairs, len(images)):
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in component:
            by_size.setdefault((images[i].width, images[i].height), []).append(i)
        same: dict[str, list[int]] = {}
        for members in by_size.values():
            for i in members if len(members) > 1 else ():
                same.setdefault(_pixel_digest(paths[i]), []).append(i)
        identical = [members for members in same.values() if len(members) > 1]
        exact += identical
        if not (len(identical) == 1 and len(identical[0]) == len(component)):
            near.append(component)
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


def size_summary(images: list[ImageFacts]) -> dict:
    """The min, median and max of the images' widths and heights.

    Example:
        size_summary(describe_images(["a.png"]))["width"]
        # {'min': 48, 'median': 48.0, 'max': 48}
    """
    summary = {}
    for name in ("width", "height"):
        values = np.array([getattr(image, name) for image in images] or [0])
        summary[name] = {
            "min": int(values.min()),
            "median": float(np.median(values)),
            "max": int(values.max()),
        }
    return summary


def mode_counts(images: list[ImageFacts]) -> dict[str, int]:
    """How many images have each kind of colour mode in `MODES`.

    Example:
        mode_counts(describe_images(["a.png"]))
        # {'grayscale': 0, 'rgba': 0, 'cmyk': 0, 'palette': 0, 'rgb': 1, 'other': 0}
    """
    counts = dict.fromkeys(MODES, 0)
    for image in images:
        counts[MODE_KEYS.get(image.mode, "other")] += 1
    return counts
