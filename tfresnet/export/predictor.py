"""Classifying image files with an exported classifier: `load_predictor(MODEL).predict(...)`.

MODEL is a SavedModel folder, a LiteRT `.tflite` or an `.onnx` file, with its class names in
`labels.txt` inside the folder, in `<file>.labels.txt` beside a file (`runtime` runs each).
Every image is decoded, centre-cropped and resized by `tfresnet.decode_for_eval`, the
evaluation pipeline's own transform, so each format sees exactly what the model was evaluated
on. An image that cannot be read gets a row with its reason; the others are still classified.

A multi-label classifier's rows (the export records it and its thresholds: `tfresnet_config.json`
in the folder, `<file>.json` beside a file) hold the labels whose probability reaches their
threshold, in class order, with those probabilities, instead of the top-k labels.

Example:
    predictor = load_predictor("models/flowers/1")
    predictor.predict(["rose.jpg"], top_k=2)[0]["label"]
    # 'roses'
    load_predictor("models/scenes/1").predict(["beach.jpg"])[0]["labels"]
    # ['sea', 'sky']
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import sys
from typing import Iterable, Sequence

from tfresnet.data.image_size import MAX_IMAGE_PIXELS, image_pixels, size_error
from tfresnet.data.transforms import CROP_FRACTION, check_crop_fraction
from tfresnet.paths import isdir, read_bytes

DECODE_THREADS = 8


# === Listing and decoding ===


def list_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The image files among `paths`: files as given, and the image files under folders (local
    or on a store, `gs://bucket/photos`).

    Folders are searched recursively, in sorted order, skipping hidden files and folders and
    files without an image suffix (`tfresnet.data.IMAGE_EXTENSIONS`). A file named explicitly
    is kept whatever its suffix (a path that does not exist too: it gets an error row).

    Example:
        list_images(["photos/", "extra.jpg"])
        # ['photos/a.jpg', 'photos/trip/b.png', 'extra.jpg']
    """
    from tfresnet.data.file_check import IMAGE_EXTENSIONS
    from tfresnet.data.listing import files_under

    found: list[str] = []
    for path in map(os.fspath, paths):
        found += files_under(path, suffixes=IMAGE_EXTENSIONS) if isdir(path) else [path]
    return found


class ImageDecoder:
    """Decodes encoded images with the evaluation transform, in threads; reasons for failures."""

    def __init__(
        self, image_size: int, max_pixels: int = MAX_IMAGE_PIXELS, crop_fraction: float = CROP_FRACTION
    ):
        from tfresnet.data.transforms import eval_of_bytes

        self.image_size = image_size
        self.max_pixels = max_pixels
        self.crop_fraction = crop_fraction
        self._decode = eval_of_bytes(image_size, max_pixels, crop_fraction)  # traced here, once a process
        self._ran = False

    def decode(self, items: Sequence[str | bytes]) -> list:
        """For each path or bytes: float32 pixels `(size, size, 3)`, or the reason (a str) it failed."""
        if len(items) <= 1:
            return [self._one(item) for item in items]
        self._run_once()
        with concurrent.futures.ThreadPoolExecutor(min(DECODE_THREADS, len(items))) as pool:
            return list(pool.map(self._one, items))

    def _run_once(self) -> None:
        """Runs the transform on a 1-pixel PNG in this thread before threads call it: the first
        call of a traced function in a process builds its kernels, and threads that make that
        first call together each build them (8 threads: 2.5 s of CPU, against 0.3 s for one)."""
        if self._ran:
            return
        import tensorflow as tf

        self._decode(tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)))
        self._ran = True

    def _one(self, item: str | bytes):
        import tensorflow as tf

        if isinstance(item, str):
            try:
                encoded = read_bytes(item)
            except OSError as error:
                return f"unreadable: {error.strerror or error}"
            except tf.errors.OpError as error:  # a file on a store, read through tf.io.gfile
                return f"unreadable: {_message(error)}"
            too_large = size_error(image_pixels(item) or 0, self.max_pixels)
            if too_large:  # refused before decoding (bytes are checked in the graph)
                return too_large
        else:
            encoded = bytes(item)
        try:
            return self._decode(tf.constant(encoded)).numpy()
        except tf.errors.OpError as error:
            return _reason(item, error, self.max_pixels)


def _reason(item: str | bytes, error, max_pixels: int) -> str:
    """Why an image failed to decode: the folder check's reason for files, else TensorFlow's."""
    from tfresnet.data.file_check import check_file

    reason = check_file(item, max_pixels=max_pixels) if isinstance(item, str) else None
    return reason or _message(error) or "fails to decode"


def _message(error) -> str:
    """A TensorFlow error's message on one line, without its graph and op annotations."""
    message = re.sub(r"^\{\{.*?\}\}\s*|\s*\[\[.*$|\s*\[Op:.*$", "", error.message, flags=re.DOTALL)
    return " ".join(message.split())[:300]


# === The predictor ===


class Predictor:
    """Classifies images with an exported model (see `load_predictor`).

    Attributes:
        runtime: The model (`probabilities(images)`), a `tfresnet.export.runtime.Runtime`.
        class_names: Label `i` is `class_names[i]`.
        image_size: Side of the square images the model takes.
        batch_size: Images per call of the model.
        max_image_pixels: The largest image decoded, in pixels, read from its header first.
        crop_fraction: The evaluation transform's central crop, as a fraction of the shorter side.
        multi_label: Whether the model gives a sigmoid probability per label.
        thresholds: A multi-label model's decision threshold of each label (None: single-label).
    """

    def __init__(
        self,
        runtime,
        batch_size: int = 32,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        crop_fraction: float | None = None,
    ):
        self.runtime = runtime
        self.class_names = runtime.class_names
        self.image_size = runtime.image_size
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels
        self.crop_fraction = runtime.crop_fraction if crop_fraction is None else crop_fraction
        self.multi_label = runtime.multi_label
        self.thresholds = runtime.thresholds
        self._decoder = ImageDecoder(runtime.image_size, max_image_pixels, self.crop_fraction)

    def predict(self, paths_or_bytes, top_k: int = 1, *, progress: bool = False) -> list[dict]:
        """One row per image: `path`, `label`, `score`, `label_2`, `score_2`, ... and `error`;
        for a multi-label model `path`, `labels`, `scores` and `error`.

        Args:
            paths_or_bytes: Image file paths or folders, local or on a store (searched as
                `list_images` does), or encoded images (`bytes`); one of them alone, or a list.
            top_k: Labels per image, best first, at most the number of classes. Ignored for a
                multi-label model: its rows hold every label that reaches its threshold.
            progress: Show a progress bar on stderr (on a terminal, beyond one batch).

        Returns:
            Rows in input order. `path` is None for bytes; for an image that could not be read,
            `error` says why and the labels and scores are None; else `error` is None. A
            multi-label row's `labels` lists the names whose probability reaches their
            threshold, in class order (maybe none), and `scores` their probabilities.

        Example:
            load_predictor("models/flowers/model.tflite").predict(["rose.jpg"], top_k=2)
            # [{'path': 'rose.jpg', 'label': 'roses', 'score': 0.93, 'label_2': 'tulips',
            # 'score_2': 0.05, 'error': None}]
            load_predictor("models/scenes/model.onnx").predict(["beach.jpg"])
            # [{'path': 'beach.jpg', 'labels': ['sea', 'sky'], 'scores': [0.81, 0.97], 'error': None}]
        """
        items = self._items(paths_or_bytes)
        self._check_top_k(top_k)
        rows = []
        bar = _progress(len(items), enabled=progress and len(items) > self.batch_size)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            rows += self._predict_chunk(chunk, top_k)
            bar.update(len(chunk))
        bar.close()
        return rows

    def probabilities(self, images):
        """Probabilities `(batch, classes)` of raw pixels `(batch, size, size, 3)` in [0, 255]."""
        return self.runtime.probabilities(images)

    def columns(self, top_k: int) -> list[str]:
        """The keys of a row, in order (`top_k` is ignored for a multi-label model)."""
        if self.multi_label:
            return ["path", "labels", "scores", "error"]
        ranked = [key for rank in range(2, top_k + 1) for key in (f"label_{rank}", f"score_{rank}")]
        return ["path", "label", "score", *ranked, "error"]

    def _items(self, paths_or_bytes) -> list[str | bytes]:
        if isinstance(paths_or_bytes, (str, bytes, bytearray, os.PathLike)):
            paths_or_bytes = [paths_or_bytes]
        paths = [item for item in paths_or_bytes if not isinstance(item, (bytes, bytearray))]
        if not paths:
            return list(paths_or_bytes)
        items: list[str | bytes] = []
        for item in paths_or_bytes:
            items += [item] if isinstance(item, (bytes, bytearray)) else list_images([item])
        return items

    def _check_top_k(self, top_k: int) -> None:
        if self.multi_label:
            return  # its rows hold the labels over their thresholds, however many
        classes = len(self.class_names)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= classes:
            raise ValueError(
                f"top_k must be an integer from 1 to {classes}, the model's classes. "
                f"Received: top_k={top_k!r}"
            )

    def _predict_chunk(self, chunk: list, top_k: int) -> list[dict]:
        import numpy as np

        decoded = self._decoder.decode(chunk)
        good = [index for index, image in enumerate(decoded) if not isinstance(image, str)]
        probabilities = self.runtime.probabilities(np.stack([decoded[i] for i in good])) if good else []
        ranked = dict(zip(good, probabilities))
        rows = []
        for index, item in enumerate(chunk):
            row = dict.fromkeys(self.columns(top_k))
            row["path"] = item if isinstance(item, str) else None
            if index in ranked:
                row.update(self._labels(ranked[index], top_k))
            else:
                row["error"] = decoded[index]
            rows.append(row)
        return rows

    def _labels(self, probabilities, top_k: int) -> dict:
        """The label and score columns of one image's probabilities."""
        import numpy as np

        if self.multi_label:
            from tfresnet.models.thresholds import apply_thresholds

            (chosen,) = np.nonzero(apply_thresholds(probabilities[None], self.thresholds)[0])
            return {
                "labels": [self.class_names[label] for label in chosen],
                "scores": [float(probabilities[label]) for label in chosen],
            }
        columns = {}
        best = np.argsort(-probabilities, kind="stable")[:top_k]
        for rank, label in enumerate(best, start=1):
            suffix = "" if rank == 1 else f"_{rank}"
            columns[f"label{suffix}"] = self.class_names[label]
            columns[f"score{suffix}"] = float(probabilities[label])
        return columns


def load_predictor(
    model: str | os.PathLike,
    *,
    batch_size: int = 32,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    crop_fraction: float | None = None,
) -> Predictor:
    """Loads an exported classifier for `Predictor.predict`.

    Args:
        model: A SavedModel folder of `export_saved_model`, a `.tflite` or an `.onnx` file,
            with `labels.txt` inside the folder, `<file>.labels.txt` beside a file; local or
            on a store (`gs://...`: a file is read into memory, as its runtime takes bytes).
        batch_size: Images per call of the model.
        max_image_pixels: The largest image decoded, in pixels, read from its header before
            decoding (default PIL's cap, about 89 megapixels); a larger one gets an error row.
        crop_fraction: The central crop of the evaluation transform, as a fraction of the
            shorter side. None: the export's own (a SavedModel's `tfresnet_config.json`,
            `<file>.json` beside a LiteRT or ONNX file), else 0.875.

    A multi-label model (the export records it, with each label's threshold) gives rows of the
    labels that reach their thresholds (see `Predictor.predict`).

    Raises:
        FileNotFoundError: No model, or no class names.
        ValueError: An unknown format, or labels that do not fit the model.
        ImportError: The package that runs the format is missing.

    Example:
        predictor = tfresnet.load_predictor("models/flowers/1")
        predictor.predict(["rose.jpg", open("daisy.png", "rb").read()])[1]["label"]
        # 'daisy'
    """
    from tfresnet.export.runtime import load_runtime

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ValueError(
            f"max_image_pixels must be a positive integer. Received: max_image_pixels={max_image_pixels!r}"
        )
    if crop_fraction is not None:
        check_crop_fraction(crop_fraction)
    return Predictor(
        load_runtime(model),
        batch_size=batch_size,
        max_image_pixels=max_image_pixels,
        crop_fraction=crop_fraction,
    )


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, *, enabled: bool):
    """A tqdm bar on stderr when enabled and stderr is a terminal."""
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="image", file=sys.stderr, disable=None, leave=False)
