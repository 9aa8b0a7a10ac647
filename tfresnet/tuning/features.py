"""Pooled backbone features, computed once for the search's fast path and cached on disk.

While the backbone stays frozen, every trial would push the same images through the same
backbone: `extract_features` does it once, and `HeadHyperModel` trains heads on the result.
This module also describes the data and the weights a search ran on (`describe_data`,
`describe_weights`), for the settings file and the cache's key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfresnet import paths
from tfresnet.data import ImageData
from tfresnet.files import save_arrays
from tfresnet.models.backbones import TORCHVISION_PREFIX, get_backbone
from tfresnet.models.classifier import build_classifier
from tfresnet.tuning.tuner import check_strategy, scope

# The cached features of one key, in the cache folder.
CACHE_FILE = "features-{key}.npz"


@dataclasses.dataclass
class Features:
    """Pooled backbone features of a training and a validation set.

    Attributes:
        train_features: `(num_train, feature_dim)` float32.
        train_labels: `(num_train,)` int32 class indices, or `(num_train, num_labels)` float32
            multi-hot rows for multi-label data.
        validation_features: `(num_validation, feature_dim)` float32.
        validation_labels: `(num_validation,)` int32, or `(num_validation, num_labels)` float32.
        batch_size: The batch size of the data they were computed from.

    Example:
        features = extract_features(data, backbone="resnet-tiny", weights=None)
        features.train_features.shape
        # (80, 128)
    """

    train_features: np.ndarray
    train_labels: np.ndarray
    validation_features: np.ndarray
    validation_labels: np.ndarray
    batch_size: int

    @property
    def feature_dim(self) -> int:
        return int(self.train_features.shape[-1])


def extract_features(
    data: ImageData,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    distribution_strategy: tf.distribute.Strategy | None = None,
) -> Features:
    """Computes the pooled backbone features of `data`'s training and validation sets once.

    The features are the output of `build_classifier`'s `"pooler"` layer (a Hub module's own
    output), computed by the same layers in inference mode, so a head trained on them computes
    what it would on top of the frozen backbone. The training features are those of
    `data.train_evaluation` (the training images under the evaluation transform, whatever
    augmentation `data.train` has): one fixed view of each image.
    Building the backbone calls `keras.utils.set_random_seed(seed)` (as every trial's build
    does), so a random backbone is the one the trials would build.

    Args:
        data: An `ImageData` with a validation set.
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"`.
        weights: `"imagenet"`, None (random, drawn from `seed`) or a weights file path.
        seed: Seeds a random backbone (`weights=None`), as `ClassifierHyperModel` does.
        cache_dir: A folder to keep the features in (`features-<key>.npz`, the key naming the
            data (multi-label or not), backbone, weights (a file by the SHA-256 of its bytes),
            seed and dtype policy); a later call finds them there. Any file system TensorFlow
            has (`gs://bucket/tuning`). None keeps them in memory only.
        distribution_strategy: Computes the features under this strategy (default: the
            active one).

    Returns:
        A `Features`.

    Example:
        data = from_folder("flowers/", image_size=224, augmentation="none", seed=0)
        features = extract_features(data, cache_dir="runs/tuning")
        features.feature_dim
        # 2048
    """
    check_data(data)
    strategy = check_strategy(distribution_strategy)
    return load_or_extract(
        data, backbone=backbone, weights=weights, seed=seed, cache_dir=cache_dir, strategy=strategy
    )


def features_key(description: dict, backbone: str, weights, seed: int) -> str:
    """The cache key of the features of the data `description` (`describe_data`) names.

    Example:
        features_key(describe_data(data), "resnet50", "imagenet", 0)
        # '3f2a9c0d41b7e655'
    """
    policy = keras.mixed_precision.dtype_policy().name
    weights = describe_weights(weights)
    if isinstance(weights, dict):  # the file's bytes, wherever it lies
        weights = {"sha256": weights["sha256"]}
    return _digest([description, backbone, weights, seed, policy])


def load_or_extract(
    data: ImageData, *, backbone: str, weights, seed: int, cache_dir, strategy, key: str | None = None
) -> Features:
    """`extract_features` with the strategy given: the cached file, else computed.

    `key` is `features_key` of the data's description (computed here when None); a set
    without validation images gets empty validation arrays.

    Example:
        load_or_extract(data, key=key, backbone="resnet50", weights="imagenet", seed=0,
                        cache_dir="runs/tuning", strategy=None).feature_dim
        # 2048
    """
    if key is None and cache_dir is not None:
        key = features_key(describe_data(data), backbone, weights, seed)
    path = None if cache_dir is None else paths.join(cache_dir, CACHE_FILE.format(key=key))
    if path is not None and paths.exists(path):
        with paths.open_file(path, "rb") as file, np.load(file) as stored:
            return Features(
                **{name: stored[name] for name in stored.files if name != "batch_size"},
                batch_size=int(stored["batch_size"]),
            )

    with scope(strategy):
        extractor = _feature_extractor(
            len(data.class_names),
            backbone=backbone,
            weights=weights,
            image_size=data.image_size,
            seed=seed,
        )
    images = data.train if data.train_evaluation is None else data.train_evaluation
    train, *validation = _extract(
        extractor, [images] + [data.validation] * (data.validation is not None), strategy
    )
    # Without a validation set (the label check of a set without a split): empty arrays.
    validation = validation[0] if validation else (train[0][:0], train[1][:0], 0)
    features = Features(
        train_features=train[0],
        train_labels=train[1],
        validation_features=validation[0],
        validation_labels=validation[1],
        batch_size=train[2],
    )
    del extractor
    if path is not None:
        paths.makedirs(os.path.dirname(path))
        save_arrays(path, **dataclasses.asdict(features))  # workers sharing it never read half a file
    return features


def _feature_extractor(num_classes: int, *, backbone, weights, image_size, seed) -> keras.Model:
    """Maps images to the pooled features of `build_classifier`'s backbone."""
    keras.utils.set_random_seed(seed)
    classifier = build_classifier(
        num_classes, backbone=backbone, weights=weights, image_size=image_size, dropout=0.0
    )
    pooled = classifier.get_layer("backbone" if get_backbone(backbone)[0].pools_itself else "pooler").output
    return keras.Model(classifier.input, pooled, name="feature_extractor")


def _extract(
    extractor: keras.Model, datasets: list[tf.data.Dataset], strategy: tf.distribute.Strategy | None
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """`(features, labels, largest batch)` of each dataset of `(images, labels)` batches, in the
    order the batches come (one pass over a shuffled set keeps features and labels aligned).

    One graph serves every batch size (and both sets, when their elements match):
    `extractor.predict` would trace a second one for a partial last batch, about 1 s for a
    ResNet50 on a CPU, a tenth of a small search.
    """
    strategy = strategy or tf.distribute.get_strategy()
    distributed = [strategy.experimental_distribute_dataset(dataset) for dataset in datasets]

    @tf.function(reduce_retracing=True, autograph=False)
    def step(images, labels):
        features = strategy.run(functools.partial(extractor, training=False), args=(images,))
        return strategy.gather(features, axis=0), strategy.gather(labels, axis=0)

    step.get_concrete_function(*distributed[0].element_spec)  # traced for any batch size
    results = []
    for dataset in distributed:
        batches = [tuple(keras.ops.convert_to_numpy(x) for x in step(*batch)) for batch in dataset]
        every_label = np.concatenate([labels for _, labels in batches])
        results.append(
            (
                np.concatenate([features for features, _ in batches]).astype(np.float32),
                every_label.astype(np.int32 if every_label.ndim == 1 else np.float32),  # multi-hot: float
                max(len(labels) for _, labels in batches),
            )
        )
    return results


# === Descriptions ===


def check_data(data) -> None:
    """Refuses anything but an `ImageData` with a validation set.

    Example:
        check_data(from_folder("flowers/", val_split=0.2, seed=0))
    """
    if not isinstance(data, ImageData):
        raise ValueError(
            f"data must be a tfresnet.data.ImageData (from from_folder, from_arrays or "
            f"from_tfds). Received: data of type {type(data).__name__}"
        )
    if data.validation is None:
        raise ValueError(
            "The search scores trials on a validation set, and data has none. Load it with "
            "val_split > 0 or a validation_directory."
        )


def describe_data(data: ImageData) -> dict:
    """Class names and counts, sizes and digests of the training and validation images, and
    `"multi_label": True` for multi-label data (single-label data is described as it always
    was, so that its searches and cached features stay valid).

    The training images are digested as `data.train_evaluation` yields them (the same on
    every pass), so a changed training image, not only a changed count, changes the cache key,
    and single- and multi-label data never share one.

    Example:
        describe_data(data)["class_counts"]
        # [80, 80, 80]
    """
    digests = {}
    for name, dataset in (("train_digest", data.train_evaluation), ("validation_digest", data.validation)):
        if dataset is None:
            continue
        digest = hashlib.sha1()
        for images, labels in dataset:
            digest.update(np.asarray(images).tobytes())
            digest.update(np.asarray(labels).tobytes())
        digests[name] = digest.hexdigest()[:16]
    return {
        "class_names": list(data.class_names),
        "class_counts": [int(count) for count in data.class_counts],
        "num_train": int(data.num_train),
        "num_validation": int(data.num_validation),
        "image_size": int(data.image_size),
        **digests,
        **({"multi_label": True} if data.multi_label else {}),
    }


def describe_weights(weights):
    """`weights` as the settings record them: a name, or a file's absolute path (a store's URL,
    `gs://...`, as it is) and the SHA-256 of its bytes (another file at the same path, even of
    the same size, is other weights).

    Example:
    >>> describe_weights(None), describe_weights("imagenet")
    (None, 'imagenet')
    """
    if weights is None or weights == "imagenet" or str(weights).startswith(TORCHVISION_PREFIX):
        return weights
    path = paths.absolute(weights)
    return {"path": path, "sha256": file_digest(path) if paths.isfile(path) else None}


def file_digest(path: str) -> str:
    """The SHA-256 of a file's bytes (local or on a store), in hexadecimal.

    Example:
        file_digest("resnet50_notop.h5")[:12]
        # '4d473c1dd8be'
    """
    digest = hashlib.sha256()
    with paths.open_file(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
