"""Images whose label looks wrong: out-of-fold predictions on cached features, confident
learning, and the fixes a person decides, fed back as a labels CSV.

`find_label_issues(data)` gives every image a prediction from a head that never saw it:

1. the pooled backbone features of every image (the training images under the evaluation
   transform, and the validation images) come from the search's feature cache
   (`tfresnet.tuning.features`): computed once and kept in `cache_dir` under the key the
   search uses, so a search of the same data in that folder, or a second check, reads them;
2. `folds` heads (the search's default head, `HeadHyperModel`: `build_head` compiled by
   `compile_classifier`, without label smoothing, trained with balanced class weights) each
   learn from the other folds (stratified by label) and predict their own;
3. confident learning ranks the images on those out-of-fold probabilities
   (`cleanlab.filter.find_label_issues`, least self-confidence first). cleanlab is an optional
   package: `pip install 'tfresnet[cleanlab]'`.

`suspected_label_errors` is what every fine-tuning report lists: the validation images the
trained model contradicts with high confidence (its predictions there are out-of-sample already).

`tfresnet.insight.label_fixes` writes the findings as `label_issues.csv` for a person to decide
on, and turns the decisions into a labels CSV that `tfresnet.from_csv` (`--csv`) trains on.

Example:
    data = from_folder("flowers/", image_size=224, augmentation="none", seed=0)
    found = find_label_issues(data, cache_dir="runs/check")
    found["issues"][0]
    # {'path': '/data/flowers/roses/17.jpg', 'given': 'roses', 'suggested': 'tulips', ...}
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

FOLDS = 5
# Each head trains for at least this many steps of this batch size, in one epoch over its
# images repeated as often as that takes (a few dozen images need hundreds of passes).
HEAD_STEPS = 500
HEAD_BATCH_SIZE = 64
# A run's report suspects a label when the model predicts another class with at least this
# probability (and at least that class's mean probability on the images labelled with it).
CONFIDENT = 0.5
SUSPECTS_FILE = "label_errors.png"  # the report's picture of suspected label errors
INSTALL = "pip install 'tfresnet[cleanlab]'"


@dataclasses.dataclass(frozen=True)
class LabelIssueOptions:
    """How the dataset check looks for label issues (`check_dataset(..., label_issues=...)`).

    Attributes:
        backbone: The backbone the features come from (a name of `tfresnet.BACKBONES` or
            `"hub:<handle>"`).
        weights: Its weights: `"imagenet"`, None (random) or a weights file.
        image_size: The side the images are read at (None: the loaders' default, 224).
        folds: Heads trained, each predicting one fold, at least 2.
        cache_dir: The folder the features are kept in (the search's cache: a search with this
            `directory` reads them); None keeps them in memory.

    Example:
        check_dataset("flowers/", label_issues=LabelIssueOptions(cache_dir="runs/check"))
    """

    backbone: str = "resnet50"
    weights: str | None = "imagenet"
    image_size: int | None = None
    folds: int = FOLDS
    cache_dir: str | os.PathLike | None = None


def require_cleanlab():
    """`cleanlab.filter`, or an ImportError that says what to install.

    Example:
        require_cleanlab().find_label_issues
    """
    try:
        import cleanlab.filter
    except ImportError:
        raise ImportError(f"Finding label issues needs the cleanlab package: {INSTALL}") from None
    return cleanlab.filter


def find_label_issues(
    data,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    folds: int = FOLDS,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    head_steps: int = HEAD_STEPS,
) -> dict:
    """Ranks the images of `data` whose given label the out-of-fold predictions doubt.

    Args:
        data: An `ImageData` read from files (`from_folder` or `from_csv`), best loaded with
            `augmentation="none"` (only its evaluation batches are read).
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"`.
        weights: `"imagenet"`, None (random, from `seed`) or a weights file path.
        folds: Heads trained, each predicting the images of its fold, at least 2.
        seed: Seeds a random backbone, the folds and the heads.
        cache_dir: Where the features are kept (`features-<key>.npz`, the search's key); None
            keeps them in memory only.
        head_steps: The fewest training steps each head takes.

    Returns:
        A dict: `issues` (for each suspected image, most suspicious first: `path`, `given`,
        `suggested` (the most probable other class), `probability` (the given label's
        out-of-fold probability)), `num_images`, `out_of_fold_accuracy`, `folds`, `backbone`.

    Raises:
        ImportError: cleanlab is not installed.
        ValueError: `data` is not read from files, is multi-label (the search is single-label
            only), or `folds` is not an integer >= 2.

    Example:
        found = find_label_issues(data, backbone="resnet-tiny", weights=None)
        len(found["issues"]), found["out_of_fold_accuracy"]
        # (3, 0.94)
    """
    from tfresnet.tuning.features import load_or_extract

    if getattr(data, "multi_label", False):
        raise ValueError(
            "The search for label issues is single-label only: it ranks each image's one label, and "
            "this data has several labels per image (multi_label). Leave it out for multi-label data."
        )
    cleanlab_filter = require_cleanlab()
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2. Received: folds={folds!r}")
    if "train" not in data.files:
        raise ValueError(
            "Label issues are found in images read from files: load them with from_folder or from_csv."
        )
    features = load_or_extract(
        data, backbone=backbone, weights=weights, seed=seed, cache_dir=cache_dir, strategy=None
    )
    x = np.concatenate([features.train_features, features.validation_features])
    labels = np.concatenate([features.train_labels, features.validation_labels])
    paths = data.files["train"] + data.files.get("validation", [])
    counts = np.bincount(features.train_labels, minlength=len(data.class_names)).tolist()
    if len(paths) != len(labels) or counts != list(data.class_counts):
        raise RuntimeError(
            f"{len(labels)} feature rows for {len(paths)} files: the data changed while it was read."
        )
    probabilities = out_of_fold_probabilities(
        x, labels, len(data.class_names), folds=folds, seed=seed, steps=head_steps
    )
    ranked = cleanlab_filter.find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    others = probabilities.copy()
    others[np.arange(len(labels)), labels] = -1.0
    names = data.class_names
    return {
        "issues": [
            {
                "path": paths[i],
                "given": names[labels[i]],
                "suggested": names[others[i].argmax()],
                "probability": float(probabilities[i, labels[i]]),
            }
            for i in ranked
        ],
        "num_images": int(len(labels)),
        "out_of_fold_accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "folds": folds,
        "backbone": backbone,
    }


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of each image: every label's images dealt in turn over the folds, in random order.

    Example:
    >>> stratified_folds(np.array([0, 0, 0, 1, 1, 1]), 3).tolist()
    [1, 2, 0, 2, 1, 0]
    """
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)  # the next label starts where this one stopped: folds stay even
    return fold


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    folds: int = FOLDS,
    seed: int = 0,
    steps: int = HEAD_STEPS,
) -> np.ndarray:
    """Each image's class probabilities from a head trained on the other folds' features.

    The heads are the search's default head (`HeadHyperModel`, one model re-initialised for
    each fold, so its training step is traced once), compiled by `compile_classifier` without
    label smoothing (confident learning reads the probabilities themselves, which smoothing
    would cap) and trained with balanced class weights, as `fine_tune` trains (25 steps per call of the traced
    step: a head's step is tiny), for one epoch over its images
    repeated to make at least `steps` steps of `HEAD_BATCH_SIZE` (one epoch, so that a few dozen
    images do not pay Keras's per-epoch cost hundreds of times).

    Example:
        probabilities = out_of_fold_probabilities(features, labels, 3, folds=5)
        probabilities.shape
        # (300, 3)
    """
    import keras_tuner

    from tfresnet.training.settings import class_weights
    from tfresnet.tuning.hypermodels import HeadHyperModel

    fold = stratified_folds(labels, folds, seed)
    hypermodel = HeadHyperModel(
        num_classes,
        feature_dim=int(features.shape[-1]),
        seed=seed,
        label_smoothing=0.0,
        reuse_models=True,
        steps_per_execution=25,
    )
    hp = keras_tuner.HyperParameters()
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float32)
    for k in range(folds):
        held_out = fold == k
        if not held_out.any():
            continue
        model = hypermodel.build(hp)
        counts = np.bincount(labels[~held_out], minlength=num_classes)
        repeats = math.ceil(steps * HEAD_BATCH_SIZE / counts.sum())
        hypermodel.fit(
            hp,
            model,
            features[~held_out],
            labels[~held_out],
            batch_size=HEAD_BATCH_SIZE,
            repeats=repeats,
            epochs=1,
            class_weight=class_weights(counts.tolist()),
            verbose=0,
        )
        probabilities[held_out] = model.predict(features[held_out], batch_size=1024, verbose=0)
    return probabilities


def suspected_label_errors(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    *,
    paths: list[str] | None = None,
) -> list[dict]:
    """The images a trained model contradicts with high confidence, the least likely given
    label first.

    An image is suspected when the model predicts another class with a probability of at least
    `CONFIDENT` and at least that class's mean probability on the images labelled with it
    (confident learning's per-class threshold), so a class the model is unsure of everywhere
    does not flood the list.

    Example:
    >>> probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.3, 0.7]])
    >>> suspected_label_errors(probabilities, np.array([0, 0, 0, 1]), ["cat", "dog"])[0]["predicted"]
    'dog'
    """
    rows = np.arange(len(labels))
    predicted = probabilities.argmax(axis=1)
    given = probabilities[rows, labels]
    thresholds = np.array(
        [
            probabilities[labels == j, j].mean() if (labels == j).any() else 1.0
            for j in range(len(class_names))
        ]
    )
    score = probabilities[rows, predicted]
    suspected = np.flatnonzero(
        (predicted != labels) & (score >= np.maximum(thresholds[predicted], CONFIDENT))
    )
    return [
        {
            "index": int(i),
            **({"path": paths[i]} if paths is not None else {}),
            "given": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "score": float(score[i]),
            "given_probability": float(given[i]),
        }
        for i in suspected[np.argsort(given[suspected], kind="stable")]
    ]


def plot_suspected(suspects: list[dict], images: dict[int, np.ndarray], path: str, *, limit: int = 12) -> int:
    """Draws the first `limit` suspects whose image is in `images` (by index, raw [0, 255]
    pixels), titled given / predicted / score, into the PNG `path`; returns how many it drew
    (none: no file).

    Example:
        plot_suspected(report["suspected_label_errors"], kept_images, "runs/x/label_errors.png")
        # 4
    """
    from tfresnet.files import new_figure, save_figure

    shown = [suspect for suspect in suspects if suspect["index"] in images][:limit]
    if not shown:
        return 0
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    figure = new_figure(2.6 * columns, 2.9 * rows, needed_by="The report's plots")
    for axis, suspect in zip(figure.subplots(rows, columns, squeeze=False).flat, shown):
        axis.imshow(np.clip(images[suspect["index"]], 0, 255).astype("uint8"))
        axis.set_title(f"{suspect['given']} / {suspect['predicted']} / {suspect['score']:.2f}", fontsize=9)
    for axis in figure.axes:
        axis.axis("off")
    figure.suptitle("suspected label errors: given / predicted / probability")
    figure.tight_layout()
    save_figure(figure, path)
    return len(shown)
