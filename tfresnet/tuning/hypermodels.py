"""The search space and the two hypermodels that build and train a trial's model.

`ClassifierHyperModel` builds the full classifier of `build_classifier`; `HeadHyperModel` builds
its head alone (`build_head`) on pooled backbone features. Both compile with
`compile_classifier`, the recipe of `fine_tune`, for single-label data (one-hot labels: `fit`
maps integer labels to them) or multi-label data (`multi_label`: multi-hot labels as they are).
"""

from __future__ import annotations

from typing import Sequence

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfresnet.models.classifier import (
    HEAD_LAYERS,
    LABEL_SMOOTHING,
    build_classifier,
    build_head,
    check_label_smoothing,
    compile_classifier,
    one_hot_labels,
)
from tfresnet.tuning.label_kinds import has_int_labels

HEAD_UNITS = (0, 128, 256, 512)
DROPOUT_RANGE = (0.0, 0.5)
DROPOUT_STEP = 0.1
LEARNING_RATE_RANGE = (1e-5, 1e-2)
# Defaults of the space: build_classifier's head, and Adam's usual rate.
DEFAULT_HEAD_UNITS = 0
DEFAULT_DROPOUT = 0.2
DEFAULT_LEARNING_RATE = 1e-3
# Validation features are scored in one batch of up to this many: one graph to trace, not two.
VALIDATION_BATCH = 4096
# `freeze_until=None` (the whole backbone frozen) travels through keras-tuner as this string.
FROZEN = "none"
# The head's Dense layers, initialised from `seed + position`, and its Dropout layer.
DENSE_LAYERS = (HEAD_LAYERS[0], HEAD_LAYERS[2])
DROPOUT_LAYER = HEAD_LAYERS[1]


# === Search space ===


def declare_space(hp: keras_tuner.HyperParameters, freeze_until_choices: Sequence[str] = ()) -> dict:
    """Declares the space in `hp` (always in this order, so seeded tuners sample alike).

    Args:
        hp: The hyperparameters to declare the space in.
        freeze_until_choices: Encoded choices (`encode_freeze_choices`); empty: not searched.

    Returns:
        The values `hp` holds for each parameter.

    Example:
    >>> declare_space(keras_tuner.HyperParameters())
    {'head_units': 0, 'dropout': 0.2, 'learning_rate': 0.001}
    """
    values = {
        "head_units": hp.Choice("head_units", list(HEAD_UNITS), default=DEFAULT_HEAD_UNITS),
        "dropout": hp.Float("dropout", *DROPOUT_RANGE, step=DROPOUT_STEP, default=DEFAULT_DROPOUT),
        "learning_rate": hp.Float(
            "learning_rate", *LEARNING_RATE_RANGE, sampling="log", default=DEFAULT_LEARNING_RATE
        ),
    }
    if freeze_until_choices:
        values["freeze_until"] = hp.Choice(
            "freeze_until", list(freeze_until_choices), default=freeze_until_choices[0]
        )
    return values


def encode_freeze_choices(choices: Sequence[int | str | None] | None) -> tuple[str, ...]:
    """The `freeze_until` choices as keras-tuner strings: `FROZEN` for None, indices as digits.

    Example:
    >>> encode_freeze_choices([None, "conv5", -10])
    ('none', 'conv5', '-10')
    """
    if not choices:
        return ()
    if isinstance(choices, (str, int)) or not isinstance(choices, Sequence):
        raise ValueError(
            f"freeze_until_choices must be a list of layer indices, layer or stage names, or "
            f"None (whole backbone frozen), e.g. [None, 'conv5', 'conv4']. "
            f"Received: freeze_until_choices={choices!r}"
        )
    encoded = []
    for choice in choices:
        if choice is None:
            encoded.append(FROZEN)
        elif isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            encoded.append(str(int(choice)))
        elif isinstance(choice, str) and choice and choice != FROZEN and not _is_index(choice):
            encoded.append(choice)
        else:
            raise ValueError(
                f"Each freeze_until choice must be a layer index, a layer or stage name, or "
                f"None. Received: {choice!r} in freeze_until_choices={list(choices)!r}"
            )
    if len(set(encoded)) != len(encoded):
        raise ValueError(f"freeze_until_choices repeats a choice. Received: {list(choices)!r}")
    return tuple(encoded)


def _is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def decode_freeze(value: str) -> int | str | None:
    """The `freeze_until` argument that an encoded choice stands for.

    Example:
    >>> decode_freeze("none"), decode_freeze("143"), decode_freeze("conv5")
    (None, 143, 'conv5')
    """
    if value == FROZEN:
        return None
    return int(value) if _is_index(value) else value


def _initialize_head(model: keras.Model, seed: int) -> None:
    """Draws the head's weights and dropout masks from `seed` alone.

    The full model and the head on features then start identical, whatever was built before.
    """
    for offset, name in enumerate(DENSE_LAYERS):
        layer = _find_layer(model, name)
        if layer is None:
            continue
        initializer = keras.initializers.GlorotUniform(seed=seed + offset)
        layer.kernel.assign(initializer(layer.kernel.shape, layer.kernel.dtype))
        layer.bias.assign(keras.ops.zeros(layer.bias.shape, layer.bias.dtype))
    dropout = _find_layer(model, DROPOUT_LAYER)
    if dropout is not None:
        state = dropout.seed_generator.state
        state.assign(keras.ops.convert_to_tensor([seed, 0], dtype=state.dtype))


def _find_layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    return next((layer for layer in model.layers if layer.name == name), None)


def _seed_shuffles(seed: int) -> None:
    """Sets TensorFlow's global seed to `seed` unless it is `seed` already.

    A head's weights and dropout masks come from `seed` alone (`_initialize_head`); only the
    order of `tf.data`'s shuffle also reads the global seed. Setting it clears TensorFlow's
    kernel caches, which the next steps of every trial would rebuild.
    """
    if tf.compat.v1.get_seed(seed)[0] != seed:
        tf.random.set_seed(seed)


def _loss_options(hypermodel) -> dict:  # compile_classifier's arguments of the loss
    return {name: getattr(hypermodel, name) for name in ("label_smoothing", "multi_label", "label_weights")}


# === Hypermodels ===


class ClassifierHyperModel(keras_tuner.HyperModel):
    """The full classifier of `build_classifier`, its head, learning rate and freezing tuned.

    Every build seeds Keras with `seed` first (`keras.utils.set_random_seed`), so a randomly
    initialised backbone (`weights=None`) is the same in every trial and in `extract_features`,
    and the head starts from weights drawn from `seed` alone. Models come compiled with
    `compile_classifier`, fine_tune's recipe for the kind of labels, at `learning_rate`.

    Args:
        num_classes: Number of classes, at least 2.
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"`.
        weights: `"imagenet"`, None or the path of a weights file (see `build_classifier`).
        image_size: Side of the input images, in pixels.
        freeze_until_choices: Where the backbone may start to train: layer indices, layer or
            stage names (`"conv4"`, `"conv5"`; ResNet50 stages start at 39, 81 and 143), None
            for the whole backbone frozen. None or empty: always frozen, not tuned.
        seed: Seeds the backbone's random initialisation, the head's and the dropout masks.
        label_smoothing: Label smoothing of the loss, in [0, 1).
        multi_label: Several labels per image: a sigmoid per label, multi-hot labels.
        label_weights: With `multi_label`, each label's weights in the loss (`compile_classifier`).
        **kwargs: Passed to `keras_tuner.HyperModel` (`name`, `tunable`).

    Example:
        hypermodel = ClassifierHyperModel(3, backbone="resnet-tiny", weights=None, image_size=32)
        model = hypermodel.build(keras_tuner.HyperParameters())
        [layer.name for layer in model.layers][-2:], model.loss.label_smoothing
        # (['output_dropout', 'predictions'], 0.1)
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet50",
        weights: str | None = "imagenet",
        image_size: int = 224,
        freeze_until_choices: Sequence[int | str | None] | None = None,
        seed: int = 0,
        label_smoothing: float = LABEL_SMOOTHING,
        multi_label: bool = False,
        label_weights: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.freeze_until_choices = encode_freeze_choices(freeze_until_choices)
        self.seed = seed
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.multi_label, self.label_weights = multi_label, label_weights

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        declare_space(hp, self.freeze_until_choices)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = declare_space(hp, self.freeze_until_choices)
        keras.utils.set_random_seed(self.seed)
        model = build_classifier(
            self.num_classes,
            backbone=self.backbone,
            weights=self.weights,
            image_size=self.image_size,
            head_units=values["head_units"] or None,
            dropout=values["dropout"],
            freeze_until=decode_freeze(values.get("freeze_until", FROZEN)),
            multi_label=self.multi_label,
        )
        _initialize_head(model, self.seed)
        compile_classifier(model, learning_rate=values["learning_rate"], **_loss_options(self))
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs):
        """Trains `model` as `model.fit(*args, **kwargs)`; returns the `History`.

        A `tf.data.Dataset` of `(images, integer labels)`, as `x` or as `validation_data`, is
        mapped to one-hot labels (`one_hot_labels`); multi-hot labels go to the loss as they are.
        """
        convert = one_hot_labels(self.num_classes)
        if args and has_int_labels(args[0]):
            args = (args[0].map(convert), *args[1:])
        for name in ("x", "validation_data"):
            if has_int_labels(kwargs.get(name)):
                kwargs[name] = kwargs[name].map(convert)
        return model.fit(*args, **kwargs)


class HeadHyperModel(keras_tuner.HyperModel):
    """`build_classifier`'s head alone, on pooled backbone features; same space and layers.

    The model maps `(batch, feature_dim)` features (input `"features"`) through `build_head`'s
    layers (`"head_dense"` when `head_units > 0`, `"output_dropout"` when `dropout > 0`,
    `"predictions"`), initialised from `seed` exactly as `ClassifierHyperModel` initialises its
    head, and compiled the same way (`compile_classifier`, for the kind of labels; without XLA:
    compiling a head's few steps would cost more than it saves). `build` sets TensorFlow's
    global seed to `seed` when it holds another value: `fit` shuffles from it.

    With `reuse_models`, `build` returns the model it built before for the same `head_units` (one
    with dropout also serves a trial without: at rate 0 it changes nothing), re-initialised
    (weights and dropout masks from `seed`, Adam's variables zeroed, the new rates), so the trial
    reuses the train and test functions Keras traced for it (most of a head's trial) and trains
    exactly as a new model would. `clear_models()` forgets them (as the search's `clear_session()`).

    Args:
        num_classes: Number of classes, at least 2.
        feature_dim: Length of a feature vector (the backbone's `feature_size`: 2048 for ResNet50).
        seed: Seeds the head's initialisation and the dropout masks.
        label_smoothing: Label smoothing of the loss, in [0, 1).
        multi_label: Several labels per image: a sigmoid per label, multi-hot labels.
        label_weights: With `multi_label`, each label's weights in the loss (`compile_classifier`).
        reuse_models: Reuse a model built before for the same architecture (see above).
        steps_per_execution: Training steps per call of the traced step (`compile_classifier`).
        **kwargs: Passed to `keras_tuner.HyperModel` (`name`, `tunable`).

    Example:
    >>> hp = keras_tuner.HyperParameters()
    >>> hp.Fixed("head_units", 128)
    128
    >>> model = HeadHyperModel(5, feature_dim=2048).build(hp)
    >>> [layer.name for layer in model.layers]
    ['features', 'head_dense', 'output_dropout', 'predictions']
    """

    def __init__(
        self,
        num_classes: int,
        *,
        feature_dim: int = 2048,
        seed: int = 0,
        label_smoothing: float = LABEL_SMOOTHING,
        multi_label: bool = False,
        label_weights: dict | None = None,
        reuse_models: bool = False,
        steps_per_execution: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer. Received: feature_dim={feature_dim!r}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.seed = seed
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.multi_label, self.label_weights = multi_label, label_weights
        self.reuse_models = reuse_models
        self.steps_per_execution = steps_per_execution
        self._models = {}  # (head_units, dropout > 0) -> compiled model, with reuse_models

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        declare_space(hp)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = declare_space(hp)
        _seed_shuffles(self.seed)
        # A head with dropout also serves a trial without (at rate 0 it passes its input as is).
        architecture = (values["head_units"], values["dropout"] > 0)
        model = self._models.get(architecture) or self._models.get((values["head_units"], True))
        if model is None:
            inputs = keras.Input((self.feature_dim,), name="features")
            head = {"head_units": values["head_units"] or None, "dropout": values["dropout"]}
            outputs = build_head(inputs, self.num_classes, **head, multi_label=self.multi_label)
            model = keras.Model(inputs, outputs, name="head")
            compile_classifier(
                model,
                learning_rate=values["learning_rate"],
                jit_compile=False,
                steps_per_execution=self.steps_per_execution,
                **_loss_options(self),
            )
            if self.reuse_models:
                self._models[architecture] = model
        else:
            # What compile_classifier's fresh Adam holds, in the variables the traced step reads.
            for variable in model.optimizer.variables:
                variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
            model.optimizer.learning_rate = values["learning_rate"]
            dropout = _find_layer(model, DROPOUT_LAYER)
            if dropout is not None:
                dropout.set_rate(values["dropout"])
        _initialize_head(model, self.seed)
        return model

    def clear_models(self) -> None:
        """Forgets the models kept for reuse.

        Example:
        >>> HeadHyperModel(3, reuse_models=True).clear_models()
        """
        self._models.clear()

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        class_weight: dict[int, float] | None = None,
        repeats: int = 1,
        **kwargs,
    ):
        """Trains `model` on features `x` and labels `y`; returns the `History`.

        `y` holds integer class indices, fed one-hot, or multi-hot rows (`multi_label`), fed as
        they are, in `tf.data` batches shuffled from `seed` afresh in every trial: a trial
        traces one training graph (not one per batch shape), its batches independent of the
        trials before it. Validation features go in one batch (up to `VALIDATION_BATCH`).
        `class_weight` (`{class index: weight}`, single-label) weighs each training example by
        its class, as `model.fit(class_weight=...)` would, from weights computed once. `repeats`
        makes an epoch that many passes over the examples, each in a new order (tiny sets: one
        epoch of many steps costs less than many). Other keyword arguments go to `model.fit`.
        """
        train = self._dataset(x, y, class_weight=class_weight)
        if shuffle:
            train = train.shuffle(len(y), seed=self.seed, reshuffle_each_iteration=True)
        train = train.repeat(repeats) if repeats > 1 else train
        if validation_data is not None:
            features, labels = validation_data
            validation_data = self._dataset(features, labels).batch(min(len(labels), VALIDATION_BATCH))
        return model.fit(train.batch(batch_size), validation_data=validation_data, shuffle=False, **kwargs)

    def _dataset(
        self, features: np.ndarray, labels: np.ndarray, class_weight: dict[int, float] | None = None
    ) -> tf.data.Dataset:
        labels = np.asarray(labels)
        classes = labels if labels.ndim == 1 else labels.argmax(axis=-1)
        labels = np.eye(self.num_classes, dtype=np.float32)[labels] if labels.ndim == 1 else labels
        if class_weight is None:
            return tf.data.Dataset.from_tensor_slices((features, labels))
        weights = np.array([class_weight.get(i, 1.0) for i in range(self.num_classes)], np.float32)
        return tf.data.Dataset.from_tensor_slices((features, labels, weights[classes]))
