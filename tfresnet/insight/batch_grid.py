"""`show_batch`: the first batch of a dataset as a PNG grid, each image titled with its label.

Look at what the model will be fed before training on it: the crops, the flips, the labels.
A label is a class index, a one-hot vector, or a soft label (MixUp, CutMix, label smoothing),
titled with its two heaviest classes and their weights (`label_title`). With several labels per
image (`multi_label`), a multi-hot row is titled with its labels (`label_set_title`). matplotlib
is imported only when the grid is drawn.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from tfresnet import paths
from tfresnet.data.transforms import check_positive_int
from tfresnet.files import new_figure, save_figure

# A soft label's title names this many classes, heaviest first.
SOFT_LABEL_CLASSES = 2
# Inches per grid cell: width, and height with the title.
CELL_SIZE = (2.2, 2.5)
# A multi-label title names this many labels per line.
LABELS_PER_LINE = 3


def label_title(label, class_names: list[str]) -> str:
    """The title of one label: its class name, or a soft label's two heaviest classes.

    Args:
        label: A class index, a one-hot vector, or a soft label (weights over the classes).
        class_names: Label `i` is `class_names[i]`.

    Returns:
        The class name (index, one-hot), else e.g. `"cat 0.70 / dog 0.30"`.

    Example:
    >>> label_title(np.array([0.3, 0.7, 0.0]), ["dog", "cat", "fox"])
    'cat 0.70 / dog 0.30'
    """
    label = np.asarray(label)
    if label.ndim == 0 or (label.shape == (1,) and len(class_names) > 1):
        index = int(label.reshape(()))
        if not 0 <= index < len(class_names):
            raise ValueError(
                f"A label is a class index below len(class_names)={len(class_names)}. Received: label={index}"
            )
        return class_names[index]
    if label.shape != (len(class_names),):
        raise ValueError(
            f"A one-hot or soft label has one weight per class ({len(class_names)}). "
            f"Received: label of shape {label.shape}"
        )
    order = np.argsort(-label, kind="stable")
    if label[order[0]] >= 1 - 1e-6:
        return class_names[order[0]]
    return " / ".join(f"{class_names[i]} {label[i]:.2f}" for i in order[:SOFT_LABEL_CLASSES])


def label_set_title(label, class_names: list[str]) -> str:
    """The title of one multi-label row: the names of its labels; for a mixed row (MixUp,
    CutMix, label smoothing), the labels of weight at least 0.5 with their weights, else its two
    heaviest labels.

    Args:
        label: Weights over the labels: a multi-hot row, or a mixed one.
        class_names: Label `j` is `class_names[j]`.

    Returns:
        E.g. `"cat, dog"`, `"cat 0.70, dog 0.60"`, or `"no label"`; three labels a line.

    Example:
    >>> label_set_title(np.array([1.0, 0.0, 1.0]), ["dog", "cat", "fox"])
    'dog, fox'
    >>> label_set_title(np.array([0.3, 0.6, 0.9]), ["dog", "cat", "fox"])
    'fox 0.90, cat 0.60'
    """
    label = np.asarray(label, dtype=np.float64)
    if label.shape != (len(class_names),):
        raise ValueError(
            f"A multi-label row has one weight per label ({len(class_names)}). "
            f"Received: label of shape {label.shape}"
        )
    if np.isin(label, (0.0, 1.0)).all():
        names = [class_names[j] for j in np.flatnonzero(label)]
    else:
        order = np.argsort(-label, kind="stable")
        heavy = [j for j in order if label[j] >= 0.5]
        heavy = heavy or [j for j in order[:SOFT_LABEL_CLASSES] if label[j] > 0]
        names = [f"{class_names[j]} {label[j]:.2f}" for j in heavy]
    step = LABELS_PER_LINE
    lines = [", ".join(names[start : start + step]) for start in range(0, len(names), step)]
    return ",\n".join(lines) or "no label"


def show_batch(
    dataset: tf.data.Dataset,
    class_names: list[str],
    path: str,
    *,
    max_images: int = 16,
    multi_label: bool = False,
) -> str:
    """Writes a PNG grid of the first batch of `dataset`, each image titled with its label.

    Args:
        dataset: `(images, labels)` batches, e.g. `ImageData.train` (an unbatched dataset is
            batched by `max_images`); images raw [0, 255] pixels, labels class indices, one-hot
            or soft (see `label_title`).
        class_names: Label `i` is `class_names[i]`.
        path: The PNG file to write (its folder is created if needed), local or on a store
            (`gs://...`).
        max_images: Show at most this many images of the batch.
        multi_label: The labels are multi-hot (or mixed) rows of several labels per image
            (`ImageData.multi_label`), titled by `label_set_title`.

    Returns:
        `path`.

    Example:
        show_batch(data.train, data.class_names, "runs/flowers/batch.png")
        # 'runs/flowers/batch.png'
    """
    check_positive_int("max_images", max_images)
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2 or spec[0].shape.rank not in (3, 4):
        raise ValueError(
            "show_batch takes a dataset of (images, labels), e.g. ImageData.train. "
            f"Received: a dataset of {spec}"
        )
    if spec[0].shape.rank == 3:
        dataset = dataset.batch(max_images)
    batch = next(iter(dataset.take(1)), None)
    if batch is None:
        raise ValueError("The dataset is empty: show_batch found no batch to show.")
    images = np.clip(np.asarray(batch[0][:max_images], "float32"), 0, 255).astype("uint8")
    title = label_set_title if multi_label else label_title
    titles = [title(label, class_names) for label in np.asarray(batch[1][:max_images])]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    figure = new_figure(CELL_SIZE[0] * columns, CELL_SIZE[1] * rows, needed_by="show_batch's grid")
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles):
        axis.imshow(image)
        axis.set_title(title, fontsize=8)
    figure.tight_layout()
    paths.makedirs(os.path.dirname(paths.absolute(path)))
    save_figure(figure, path)
    return path
