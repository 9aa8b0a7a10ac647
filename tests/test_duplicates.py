"""Tests of tfresnet.insight.duplicates: the hash search finds exactly the pairs that comparing
every pair finds, at every threshold."""

import numpy as np
import pytest

from tfresnet.insight.check_images import COLOR_GRID, ImageFacts
from tfresnet.insight.duplicates import (
    COLOR_TOLERANCE,
    HAMMING_THRESHOLD,
    MIN_SEGMENT_BITS,
    _near_pairs,
    _popcount,
    hash_pairs,
)


def clustered_hashes(count: int, seed: int = 0) -> np.ndarray:
    """Random 64-bit hashes, half of them copies of the others with a few bits flipped, and a
    tenth repeated exactly."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, count // 2 + 1, dtype=np.uint64, endpoint=True)
    flips = np.zeros(len(base), np.uint64)
    for bits in rng.integers(0, 64, (6, len(base))):
        flips |= np.left_shift(np.uint64(1), bits.astype(np.uint64))
    hashes = np.concatenate([base, base ^ flips])[:count]
    hashes[: count // 10] = hashes[count // 10 : 2 * (count // 10)]
    return hashes


def every_pair(hashes: np.ndarray, threshold: int) -> np.ndarray:
    distances = _popcount(hashes[:, None] ^ hashes[None, :])
    first, second = np.nonzero(np.triu(distances <= threshold, 1))
    return np.stack([first, second], axis=1)


@pytest.mark.parametrize("threshold", [0, 3, HAMMING_THRESHOLD, 64 // MIN_SEGMENT_BITS, 40])
def test_the_hash_search_finds_the_pairs_every_comparison_finds(threshold):
    hashes = clustered_hashes(1500)
    found = hash_pairs(hashes, threshold)
    np.testing.assert_array_equal(found, every_pair(hashes, threshold))
    assert len(found) > 0


def test_a_few_hashes_or_none():
    assert hash_pairs(np.zeros(0, np.uint64), 8).shape == (0, 2)
    assert hash_pairs(np.zeros(1, np.uint64), 8).shape == (0, 2)
    assert hash_pairs(np.array([5, 4], np.uint64), 1).tolist() == [[0, 1]]


def test_colour_pairs_need_close_colours_and_grayscale_pairs_do_not():
    colors = np.zeros((COLOR_GRID, COLOR_GRID, 3), np.float32)
    images = [
        ImageFacts(8, 8, "RGB", 0b1, colors),
        ImageFacts(8, 8, "RGB", 0b11, colors + 9.5),  # near in colour: a pair
        ImageFacts(8, 8, "RGB", 0b111, colors + 30),  # far in colour from both
        ImageFacts(8, 8, "L", 0b1111, colors + 90),  # grayscale: its colours are not compared
    ]
    assert _near_pairs(images, 3) == [(0, 1), (0, 3), (1, 3), (2, 3)]


def test_near_pairs_follow_the_rule_pair_by_pair():
    rng = np.random.default_rng(1)
    hashes = clustered_hashes(400)
    images = [
        ImageFacts(
            8,
            8,
            "L" if i % 7 == 0 else "RGB",
            int(h),
            rng.uniform(0, 30, (COLOR_GRID, COLOR_GRID, 3)).astype(np.float32),
        )
        for i, h in enumerate(hashes)
    ]
    expected = [
        (int(i), int(j))
        for i, j in every_pair(hashes, HAMMING_THRESHOLD)
        if "L" in (images[i].mode, images[j].mode)
        or float(np.abs(images[i].colors - images[j].colors).mean()) <= COLOR_TOLERANCE
    ]
    assert _near_pairs(images, HAMMING_THRESHOLD) == expected
    assert 0 < len(expected) < len(every_pair(hashes, HAMMING_THRESHOLD))
