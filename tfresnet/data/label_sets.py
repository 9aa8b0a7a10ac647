"""Several labels per image: multi-hot label rows, and the split that holds out a fraction of
every label (iterative stratification, Sechidis et al., 2011), as far as shared images allow."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The default separator of the labels in a CSV's label column, as Kaggle's and fastai's files use.
LABEL_DELIMITER = " "


def split_labels(text: str, delimiter: str = LABEL_DELIMITER) -> list[str]:
    """The labels written in one cell, in order, each once, blanks dropped.

    Example:
    >>> split_labels("clear  primary road primary")
    ['clear', 'primary', 'road']
    """
    labels = [label.strip() for label in text.split(delimiter)]
    return list(dict.fromkeys(label for label in labels if label))


def read_label_sets(cells: Sequence[str], delimiter: str, where: str, column: str) -> list[list[str]]:
    """The label set of each cell of a CSV's label column, checked: some cell holds a label, and
    the delimiter separates labels somewhere (else the column holds one label per image).

    Example:
    >>> read_label_sets(["cat dog", "", "dog"], " ", "labels.csv", "label")
    [['cat', 'dog'], [], ['dog']]
    """
    if not delimiter:
        raise ValueError("label_delimiter must not be empty. Pass the text between labels, e.g. ' ' or ';'.")
    if not any(cell.strip() for cell in cells):
        raise ValueError(
            f"The label column {column!r} of {where} is empty on every line. List each image's labels "
            f"there, separated by {delimiter!r} (e.g. 'clear primary road')."
        )
    if not any(len(split_labels(cell, delimiter)) > 1 for cell in cells):
        marks = [mark for mark in (";", "|", ",", " ") if mark != delimiter]
        seen = next((mark for mark in marks if any(mark in cell.strip() for cell in cells)), None)
        fix = "Drop multi_label (--multi-label) for one label per image."
        if seen:
            fix = f"Its labels seem separated by {seen!r}: pass label_delimiter={seen!r} (--label-delimiter)."
        raise ValueError(
            f"No line of {where} lists two labels separated by {delimiter!r} in column {column!r}, "
            f"so every image has at most one label. {fix}"
        )
    return [split_labels(cell, delimiter) for cell in cells]


def multi_hot(label_sets: Sequence[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """A `(images, labels)` float32 array: 1 where image `i` has label `class_names[j]`.

    Example:
    >>> multi_hot([["b"], [], ["a", "b"]], ["a", "b"]).tolist()
    [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    """
    index = {name: j for j, name in enumerate(class_names)}
    rows = np.zeros((len(label_sets), len(class_names)), dtype=np.float32)
    for i, labels in enumerate(label_sets):
        rows[i, [index[label] for label in labels]] = 1.0
    return rows


def iterative_split(labels: np.ndarray, val_split: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, validation)` holding out about `val_split` of every label's images.

    Iterative stratification: the label with the fewest images still to place goes first; each
    of its images goes to the set that most lacks that label (ties: the set that lacks most
    images, then at random). Images without labels are split at random in proportion. Every
    label keeps at least one training image where it has one. A seed of None splits as seed 0.

    Example:
    >>> labels = np.array([[1, 0], [1, 1], [0, 1], [1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1], [0, 0]])
    >>> train, validation = iterative_split(labels, 0.2, seed=0)
    >>> len(train), len(validation)
    (8, 2)
    """
    labels = np.asarray(labels) > 0
    rng = np.random.default_rng(0 if seed is None else seed)
    count = len(labels)
    wanted_images = np.array([count * (1 - val_split), count * val_split])
    wanted_labels = np.outer([1 - val_split, val_split], labels.sum(axis=0))
    in_validation = np.full(count, -1)
    remaining = labels.copy()
    order = rng.permutation(count)
    while remaining.any():
        per_label = remaining.sum(axis=0)
        label = np.flatnonzero(per_label == per_label[per_label > 0].min())
        label = int(rng.choice(label))
        for image in order[remaining[order, label]]:
            lacking = wanted_labels[:, label]
            sets = np.flatnonzero(lacking == lacking.max())
            if len(sets) > 1:
                sets = sets[wanted_images[sets] == wanted_images[sets].max()]
            chosen = int(rng.choice(sets))
            in_validation[image] = chosen
            wanted_images[chosen] -= 1
            wanted_labels[chosen] -= labels[image]
            remaining[image] = False
    for image in order[in_validation[order] < 0]:  # no label at all
        chosen = int(np.argmax(wanted_images))
        in_validation[image] = chosen
        wanted_images[chosen] -= 1
    _keep_one_training_image(labels, in_validation)
    validation = np.flatnonzero(in_validation == 1)
    if len(validation) == 0:
        raise ValueError(
            f"val_split={val_split} holds out no image of the {count}. Add images, raise val_split "
            f"or pass val_split=0."
        )
    return np.flatnonzero(in_validation == 0), validation


def _keep_one_training_image(labels: np.ndarray, in_validation: np.ndarray) -> None:
    """Moves into training one image of each label that has images but none there."""
    for label in np.flatnonzero(labels.any(axis=0)):
        members = np.flatnonzero(labels[:, label])
        if (in_validation[members] == 1).all():
            in_validation[members[0]] = 0
