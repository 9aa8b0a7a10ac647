"""What the dataset check reports of images with several labels each (`check_csv(...,
multi_label=True)`): the images per label, the labels most often found together, and the
images without any label.

The search for duplicates filed under different classes is a single-label check: with several
labels per image, a duplicate's label sets are not compared (`not_checked` says so in the
report); duplicates and leakage across the split are found as for single-label data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The report lists this many pairs of labels, most frequent first, and this many unlabelled images.
LABEL_PAIRS = 10
UNLABELLED_EXAMPLES = 5
# The terminal summary names this many labels and pairs.
SUMMARY_LABELS = 8
SUMMARY_PAIRS = 3
NOT_CHECKED = (
    "Duplicates filed under different labels are a single-label check: with several labels per "
    "image, the label sets of duplicates are not compared."
)


def label_set_findings(
    class_names: Sequence[str],
    labels: np.ndarray,
    paths: Sequence[str],
    *,
    pairs: int = LABEL_PAIRS,
    examples: int = UNLABELLED_EXAMPLES,
) -> dict:
    """The label findings of multi-label images.

    Args:
        class_names: Label `j` is `class_names[j]`.
        labels: `(images, labels)` multi-hot rows of the readable images.
        paths: Their paths, as the report names them.
        pairs: List this many pairs of labels, most frequent first (ties: label order).
        examples: Name this many images without labels.

    Returns:
        `{"multi_label": True, "label_counts", "imbalance_ratio", "label_pairs", "unlabelled",
        "not_checked"}`: `label_counts` the images having each label; `imbalance_ratio` the
        most frequent label's count over the least frequent's (None when one has no image);
        `label_pairs` `[{"labels": [a, b], "count"}]`, pairs never together left out;
        `unlabelled` `{"count", "examples"}`.

    Example:
    >>> labels = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]])
    >>> found = label_set_findings(["a", "b", "c"], labels, ["x", "y", "z"])
    >>> found["label_counts"], found["label_pairs"][0], found["unlabelled"]
    ({'a': 2, 'b': 2, 'c': 1}, {'labels': ['a', 'b'], 'count': 2}, {'count': 1, 'examples': ['z']})
    """
    positives = np.asarray(labels).reshape(len(paths), len(class_names)) > 0
    counts = positives.sum(axis=0)
    together = positives.T.astype(np.int64) @ positives.astype(np.int64)
    first, second = np.triu_indices(len(class_names), k=1)
    shared = together[first, second]
    order = [k for k in np.argsort(-shared, kind="stable")[:pairs] if shared[k]]
    unlabelled = np.flatnonzero(~positives.any(axis=1))
    return {
        "multi_label": True,
        "label_counts": {name: int(count) for name, count in zip(class_names, counts)},
        "imbalance_ratio": float(counts.max() / counts.min()) if len(counts) and counts.min() else None,
        "label_pairs": [
            {"labels": [class_names[first[k]], class_names[second[k]]], "count": int(shared[k])}
            for k in order
        ],
        "unlabelled": {"count": int(len(unlabelled)), "examples": [paths[i] for i in unlabelled[:examples]]},
        "not_checked": {"conflicting_labels": NOT_CHECKED},
    }


def summary_rows(report: dict) -> list[tuple[str, str]]:
    """The terminal summary's rows of a multi-label check: images, labels, pairs, unlabelled.

    Example:
    >>> summary_rows({"num_images": 3, "imbalance_ratio": 2.0, "label_counts": {"a": 2, "b": 1},
    ...               "label_pairs": [{"labels": ["a", "b"], "count": 1}], "unlabelled": {"count": 1}})[1]
    ('labels', 'a 2, b 1')
    """
    counts = report["label_counts"]
    ratio = report["imbalance_ratio"]
    frequent = sorted(counts.items(), key=lambda item: -item[1])
    named = ", ".join(f"{name} {count}" for name, count in frequent[:SUMMARY_LABELS])
    if len(frequent) > SUMMARY_LABELS:
        named += f", ... ({len(frequent) - SUMMARY_LABELS} more)"
    pairs = ", ".join(
        f"{' + '.join(pair['labels'])} {pair['count']}" for pair in report["label_pairs"][:SUMMARY_PAIRS]
    )
    return [
        (
            "images",
            f"{report['num_images']} with {len(counts)} labels (most / least frequent: "
            + (f"{ratio:.1f})" if ratio is not None else "n/a)"),
        ),
        ("labels", named),
        ("label pairs", pairs or "none (no image has two labels)"),
        ("unlabelled", f"{report['unlabelled']['count']} images"),
    ]
