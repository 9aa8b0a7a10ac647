"""Small example images that any machine can make, with no download: a folder with one
sub-folder per class, each class a colour and a shape on a noisy background, or a multi-label
set whose images hold several shapes, listed in a CSV (the command:
`python -m tfresnet.examples DIR [--multi-label]`).

Example:
>>> write_shapes_folder("shapes/", num_classes=3, images_per_class=30)
['blue', 'green', 'red']
"""

from __future__ import annotations

import os

import numpy as np

from tfresnet import paths

# Class i is drawn in the i-th colour as the i-th shape; the names sort in another order.
CLASS_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 70, 230),
    "yellow": (235, 220, 40),
    "magenta": (220, 40, 220),
    "cyan": (40, 220, 230),
}
CLASS_SHAPES = ("ellipse", "rectangle", "triangle", "cross", "ring", "diamond")
# With mixed formats, image i of a class is written as FILE_VARIANTS[i]: (PIL mode, format,
# extension); the first images cover every format and colour mode tfresnet reads, the rest
# alternate JPEG and PNG.
FILE_VARIANTS = (
    ("RGB", "JPEG", ".jpg"),
    ("RGB", "PNG", ".png"),
    ("P", "PNG", ".png"),
    ("RGBA", "PNG", ".png"),
    ("L", "JPEG", ".jpeg"),
    ("RGB", "BMP", ".bmp"),
    ("P", "GIF", ".gif"),
)


def draw_shape(shape: str, color: tuple, size: int, rng: np.random.Generator):
    """One `size` px RGB PIL image: a jittered `shape` in `color` on a noisy dark background.

    Example:
    >>> draw_shape("ring", CLASS_COLORS["red"], 64, np.random.default_rng(0)).size
    (64, 64)
    """
    from PIL import Image, ImageDraw

    background = rng.integers(30, 90, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    half = size * rng.uniform(0.25, 0.4)
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    _draw(ImageDraw.Draw(image), shape, color, (cx, cy, half), max(size // 8, 2))
    return image


def _draw(draw, shape: str, color: tuple, where: tuple[float, float, float], width: int) -> None:
    """Draws `shape` centred at `(cx, cy)` with half-side `half` (`where`)."""
    cx, cy, half = where
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "ellipse":
        draw.ellipse(box, fill=color)
    elif shape == "rectangle":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=color)
    elif shape == "cross":
        draw.line([(cx - half, cy), (cx + half, cy)], fill=color, width=width)
        draw.line([(cx, cy - half), (cx, cy + half)], fill=color, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=color, width=width)
    else:
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=color)


def write_shapes_folder(
    directory: str,
    *,
    num_classes: int = 3,
    images_per_class: int = 30,
    size: int = 64,
    seed: int = 0,
    mixed_formats: bool = False,
) -> list[str]:
    """Writes `images_per_class` images for each of `num_classes` classes under `directory`
    (local or on a store, `gs://...`).

    Files are named `000.jpg`, `001.jpg`, ... With `mixed_formats`, the first seven of each
    class are JPEG, PNG, palette PNG, RGBA PNG, grayscale JPEG, BMP and GIF, and the rest
    alternate JPEG and PNG: a folder to check that a pipeline reads them all.

    Returns:
        The class names, sorted (the label map `tfresnet.from_folder` returns).

    Example:
    >>> write_shapes_folder("shapes", num_classes=3)
    ['blue', 'green', 'red']
    """
    if not 2 <= num_classes <= len(CLASS_COLORS):
        raise ValueError(
            f"num_classes must be in [2, {len(CLASS_COLORS)}]. Received: num_classes={num_classes}"
        )
    rng = np.random.default_rng(seed)
    names = list(CLASS_COLORS)[:num_classes]
    for name, shape in zip(names, CLASS_SHAPES):
        paths.makedirs(os.path.join(directory, name))
        for index in range(images_per_class):
            mode, file_format, extension = FILE_VARIANTS[0]
            if mixed_formats:
                mode, file_format, extension = FILE_VARIANTS[
                    index if index < len(FILE_VARIANTS) else index % 2
                ]
            image = draw_shape(shape, CLASS_COLORS[name], size, rng)
            if mode == "RGBA":
                image.putalpha(200)
            elif mode != "RGB":
                image = image.convert(mode)
            _save(image, os.path.join(directory, name, f"{index:03d}{extension}"), file_format)
    return sorted(names)


def _save(image, path: str, file_format: str, **options) -> None:
    """Writes a PIL image to `path`, local or on a store (`gs://...`)."""
    if paths.is_local(path):
        image.save(path, file_format, **options)
        return
    with paths.open_file(path, "wb") as file:
        image.save(file, file_format, **options)


# How often each label of `write_multi_label_set` is on an image: common and rare ones.
LABEL_FREQUENCIES = (0.5, 0.35, 0.25, 0.15, 0.1, 0.06)
MULTI_LABEL_CSV = "labels.csv"


def write_multi_label_set(
    directory: str, *, num_labels: int = 4, images: int = 120, size: int = 64, seed: int = 0
) -> list[list[str]]:
    """Writes `images` JPEGs under `directory/images/` holding several shapes each, and
    `directory/labels.csv` (`path,label`, an image's labels separated by spaces).

    Label `i` is the i-th colour drawn as the i-th shape in a quarter of the image, on an image
    with probability `LABEL_FREQUENCIES[i]` (so some labels are rare, and some images have none).

    Returns:
        Each image's label set, in the CSV's order.

    Example:
    >>> sets = write_multi_label_set("tags", num_labels=3, images=20)
    >>> len(sets), sorted({label for labels in sets for label in labels})
    (20, ['blue', 'green', 'red'])
    """
    import csv

    from PIL import Image, ImageDraw

    if not 2 <= num_labels <= len(CLASS_COLORS):
        raise ValueError(f"num_labels must be in [2, {len(CLASS_COLORS)}]. Received: num_labels={num_labels}")
    rng = np.random.default_rng(seed)
    names = list(CLASS_COLORS)[:num_labels]
    paths.makedirs(os.path.join(directory, "images"))
    label_sets, rows = [], []
    for index in range(images):
        image = Image.fromarray(rng.integers(30, 90, (size, size, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        present = [j for j in range(num_labels) if rng.uniform() < LABEL_FREQUENCIES[j]]
        for j, quarter in zip(present, rng.permutation(4)):
            cx, cy = (np.array([quarter % 2, quarter // 2]) + 0.5 + rng.uniform(-0.1, 0.1, 2)) * size / 2
            _draw(draw, CLASS_SHAPES[j], CLASS_COLORS[names[j]], (cx, cy, size * 0.18), max(size // 16, 2))
        path = os.path.join("images", f"{index:04d}.jpg")
        _save(image, os.path.join(directory, path), "JPEG", quality=92)
        label_sets.append([names[j] for j in present])
        rows.append((path, " ".join(label_sets[-1])))
    with paths.open_file(os.path.join(directory, MULTI_LABEL_CSV), "w", newline="") as file:
        csv.writer(file).writerows([("path", "label"), *rows])
    return label_sets
