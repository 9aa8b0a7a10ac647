"""The duplicates the dataset check finds among the images it read (`check_images.ImageFacts`).

Near-duplicates. Each image has a 64-bit perceptual hash (`check_images.perceptual_hash`). Two
images are near-duplicates when their hashes differ in at most `hamming_threshold` bits
(default 8 of 64) and their average colours on a 4x4 grid differ by at most 10 of 255 on
average (not compared when either image is grayscale). Measured
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

The search compares only hashes that can be close: split into `threshold + 1` segments, two
hashes within `threshold` bits agree on at least one whole segment, so each segment's value
sorts the hashes into buckets and only hashes sharing a bucket are compared (multi-index
hashing, Norouzi et al., 2012): about a tenth of all pairs at the default threshold, a few
seconds for 100,000 images. Above a threshold of `64 // MIN_SEGMENT_BITS - 1` every pair is
compared.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tfresnet.insight.check_images import MODE_KEYS, ImageFacts, open_image

HAMMING_THRESHOLD = 8
COLOR_TOLERANCE = 10.0
# Candidate pairs with a grayscale image are confirmed on pixels: both images in grayscale at
# a common size, half the smaller one's and at most COMPARE_SIDE per side, each side of either image
# cropped by each fraction of CROP_STEPS in turn (the other image whole), and the best
# alignment's mean absolute difference at most PIXEL_TOLERANCE times the whole image's mean
# absolute deviation from its mean (its contrast).
COMPARE_SIDE = 32
CROP_STEPS = (0.0, 0.03)
PIXEL_TOLERANCE = 0.075
# The hash search compares all pairs where the threshold leaves segments under this many bits,
# and compares this many hashes at a time with the others.
MIN_SEGMENT_BITS = 4
PAIR_BLOCK = 256


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8).reshape(*values.shape, 8), axis=-1).sum(-1)


def hash_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """The index pairs `(i, j)`, `i < j`, of the uint64 `hashes` that differ in at most
    `threshold` bits, sorted, as an int64 array of shape `(pairs, 2)` (see the module's
    documentation for the search).

    Example:
    >>> hash_pairs(np.array([0b1011, 0b0011, 2**40], dtype=np.uint64), 1).tolist()
    [[0, 1]]
    """
    count = len(hashes)
    segments = threshold + 1
    if 64 // segments < MIN_SEGMENT_BITS:
        buckets = [np.arange(count)]
    else:
        buckets = []
        edges = np.linspace(0, 64, segments + 1).astype(int)
        for low, high in zip(edges[:-1], edges[1:]):
            keys = (hashes >> np.uint64(low)) & np.uint64((1 << int(high - low)) - 1)
            order = np.argsort(keys, kind="stable")  # each bucket's indices stay in increasing order
            starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
            buckets += [
                order[start:end] for start, end in zip(starts, np.r_[starts[1:], count]) if end - start > 1
            ]
    codes = [_close_pairs(hashes, members, threshold) for members in buckets]
    codes = np.unique(np.concatenate([np.zeros(0, np.int64), *codes]))
    return np.stack([codes // max(count, 1), codes % max(count, 1)], axis=1)


def _close_pairs(hashes: np.ndarray, members: np.ndarray, threshold: int) -> np.ndarray:
    """The pairs of `members` (increasing indices) whose hashes differ in at most `threshold`
    bits, each as `i * len(hashes) + j`, `i < j`: a block of rows at a time against the columns
    from the block's first (the upper triangle), located only in blocks that hold a pair."""
    chosen = hashes[members]
    found = [np.zeros(0, np.int64)]
    for start in range(0, len(members), PAIR_BLOCK):
        block = chosen[start : start + PAIR_BLOCK]
        close = _popcount(block[:, None] ^ chosen[None, start:]) <= threshold
        rows = np.flatnonzero(np.count_nonzero(close, axis=1) > 1)  # close to more than itself
        if not len(rows):
            continue
        first, second = np.nonzero(close[rows])
        first = rows[first]
        above = second > first
        found.append(members[first[above] + start] * len(hashes) + members[second[above] + start])
    return np.concatenate(found)


def _near_pairs(images: list[ImageFacts], threshold: int) -> list[tuple[int, int]]:
    """Index pairs `(i, j)`, `i < j`, of near-duplicates (see the module's documentation)."""
    if len(images) < 2:
        return []
    pairs = hash_pairs(np.array([image.hash for image in images], dtype=np.uint64), threshold)
    if not len(pairs):
        return []
    first, second = pairs[:, 0], pairs[:, 1]
    gray = np.array([_grayscale(image) for image in images])
    colors = np.stack([images[i].colors for i in np.unique(pairs)])
    at = {int(i): row for row, i in enumerate(np.unique(pairs))}
    left = colors[[at[int(i)] for i in first]].reshape(len(pairs), -1)
    right = colors[[at[int(j)] for j in second]].reshape(len(pairs), -1)
    close = np.abs(left - right).mean(axis=1) <= COLOR_TOLERANCE
    kept = gray[first] | gray[second] | close
    return [(int(i), int(j)) for i, j in pairs[kept]]


def _grayscale(*images: ImageFacts) -> bool:
    """Whether any of `images` is grayscale (its colour grid is then not compared)."""
    return any(MODE_KEYS.get(image.mode) == "grayscale" for image in images)


def _decoded(path: str):
    """An image decoded in grayscale for the pixel comparison (JPEGs at reduced size); None when
    it no longer decodes."""

    try:
        with open_image(path) as image:
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
    for i in sorted({i for pair in pairs for i in pair}):  # an image in no pair is alone
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

    try:
        with open_image(path) as image:
            pixels = image.convert("RGB")
    except Exception:  # noqa: BLE001 - read once already; a file changed since matches nothing
        return f"unreadable:{path}"
    return hashlib.sha1(repr(pixels.size).encode() + pixels.tobytes()).hexdigest()
