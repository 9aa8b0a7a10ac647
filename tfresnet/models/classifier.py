"""The classifier and its one recipe: `build_classifier`, `build_head`, `compile_classifier`.

Models take raw RGB pixels in [0, 255]. Each backbone's own normalisation is the model's first
layer, so the data pipeline, evaluation and the exported SavedModel all feed the backbone
exactly what it was trained on. `build_head` is the head that `build_classifier` puts on the
backbone and that the search trains on cached features; `compile_classifier` is the one place
where the optimizer, the loss and the metrics are set, for training, the learning-rate finder
and every trial of the search alike.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfresnet import internals
from tfresnet.models.backbones import get_backbone
from tfresnet.models.freezing import freeze
from tfresnet.models.hub import HubLayer
from tfresnet.models.layers import HeadDropout, ImageNormalization
from tfresnet.models.multi_label import LabelWeightedCrossentropy
from tfresnet.models.weights import load_weights, resolve_weights

MIN_IMAGE_SIZE = 32
# Names of the head's layers, in order (`"output_dropout"` only with dropout > 0).
HEAD_LAYERS = ("head_dense", "output_dropout", "predictions")
# The recipe's defaults, which `fine_tune`, the command and the search share.
HEAD_DROPOUT = 0.2
LABEL_SMOOTHING = 0.1
# The metric that picks the best epoch and trial, and stops early, by kind of labels.
ACCURACY = "accuracy"
MEAN_AVERAGE_PRECISION = "mean_average_precision"


# === Builder ===


def build_backbone(
    backbone: str = "resnet50", *, weights: str | None = "imagenet", image_size: int = 224
) -> tuple[keras.layers.Layer, ImageNormalization]:
    """Builds a backbone without its top and the normalisation layer it expects.

    Args:
        backbone: A name of `tfresnet.BACKBONES` (`"resnet50"`, `"resnet50v2"`,
            `"resnet50-torchvision"`; `"resnet-tiny"` and `"resnet-test"` for tests) or
            `"hub:<handle>"` (a TF Hub / Kaggle URL or a local SavedModel directory).
        weights: `"imagenet"`, None (random), or the path of an `.h5` / `.weights.h5` file.
            For `"resnet50-torchvision"` also `"torchvision:IMAGENET1K_V1"`,
            `"torchvision:IMAGENET1K_V2"` (what `"imagenet"` loads: torchvision's default) or
            the path of a PyTorch state dict (`.pth`, `.pt`, `.safetensors`). Ignored for Hub
            modules, which carry their weights.
        image_size: Height and width of the input images.

    Returns:
        `(backbone_layer, normalization_layer)`, the backbone named `"backbone"`.

    Example:
        network, normalization = build_backbone("resnet50v2", weights=None, image_size=64)
        normalization.mode
        # 'tf'
    """
    row, handle = get_backbone(backbone)
    normalization = ImageNormalization(row.normalization, name="preprocessing")
    if handle is not None:
        return HubLayer(handle, name="backbone"), normalization
    path = resolve_weights(row, weights)
    network = row.builder(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 3),
        name="backbone",
    )
    if path is not None:
        load_weights(network, path, row)
    return network, normalization


def build_classifier(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    weights: str | None = "imagenet",
    image_size: int = 224,
    head_units: int | None = None,
    dropout: float = HEAD_DROPOUT,
    freeze_until: int | str | None = None,
    multi_label: bool = False,
) -> keras.Model:
    """Builds a ResNet50 image classifier that takes raw RGB pixels in [0, 255].

    Layers, by name: `"preprocessing"` (the backbone's normalisation), `"backbone"`,
    `"pooler"` (global average pooling; absent for Hub modules, which pool themselves),
    `"head_dense"` (when `head_units`), `"output_dropout"` (when `dropout > 0`) and
    `"predictions"` (softmax probabilities, float32 also under mixed precision; with
    `multi_label`, one sigmoid probability per label). Its
    BatchNormalization layers are frozen by `tfresnet.freeze`, which runs them in inference
    mode with their statistics kept: unfreeze through `tfresnet.freeze` (setting
    `model.get_layer("backbone").trainable = True` by hand makes them trainable again, and a
    training call would then update their statistics).

    Args:
        num_classes: Number of classes, at least 2.
        backbone: A name of `tfresnet.BACKBONES` or `"hub:<handle>"` (see `build_backbone`).
        weights: `"imagenet"` (downloaded once into the Keras cache), None, or the path of an
            `.h5` / `.weights.h5` file of the backbone without its top; for
            `"resnet50-torchvision"` also `"torchvision:IMAGENET1K_V1"` / `"..._V2"` or a
            `.pth` / `.safetensors` state dict (see `build_backbone`).
        image_size: Height and width of the input images, at least 32.
        head_units: Units of an optional hidden ReLU layer in the head.
        dropout: Dropout rate before the predictions (0 for none).
        freeze_until: Index or name of the first trainable backbone layer (see
            `tfresnet.freeze`); None freezes the whole backbone, 0 trains all of it.
        multi_label: Several labels per image: independent sigmoid outputs, one per label.

    Returns:
        An uncompiled `keras.Model`.

    Example:
        model = build_classifier(5, weights=None, image_size=64, head_units=128)
        model.output_shape
        # (None, 5)
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2. Received: num_classes={num_classes!r}")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer >= {MIN_IMAGE_SIZE}. Received: image_size={image_size!r}"
        )
    if head_units is not None and (not isinstance(head_units, int) or head_units < 1):
        raise ValueError(
            f"head_units must be None or a positive integer. Received: head_units={head_units!r}"
        )
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")

    network, normalization = build_backbone(backbone, weights=weights, image_size=image_size)
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = normalization(inputs)
    if isinstance(network, HubLayer):
        x = network(x)
    else:
        x = network(x, training=False)
        x = keras.layers.GlobalAveragePooling2D(name="pooler")(x)
    outputs = build_head(x, num_classes, head_units=head_units, dropout=dropout, multi_label=multi_label)
    model = keras.Model(inputs, outputs, name=f"{get_backbone(backbone)[0].name}_classifier")
    freeze(model, until=freeze_until)
    return model


def build_head(
    features: keras.KerasTensor,
    num_classes: int,
    *,
    head_units: int | None = None,
    dropout: float = HEAD_DROPOUT,
    multi_label: bool = False,
) -> keras.KerasTensor:
    """Puts the classification head on pooled features: the layers of every tfresnet model.

    `"head_dense"` (a ReLU layer of `head_units`, when given), `"output_dropout"` (when
    `dropout > 0`) and `"predictions"` (softmax, or a sigmoid per label with `multi_label`;
    float32 also under mixed precision).

    Args:
        features: A symbolic `(batch, feature_size)` tensor.
        num_classes: Number of classes.
        head_units: Units of an optional hidden ReLU layer (None or 0: none).
        dropout: Dropout rate before the predictions (0: none).
        multi_label: Independent sigmoid probabilities, one per label, instead of a softmax.

    Returns:
        The symbolic `(batch, num_classes)` probabilities.

    Example:
    >>> features = keras.Input((2048,))
    >>> keras.Model(features, build_head(features, 5, head_units=128)).output_shape
    (None, 5)
    """
    x = features
    if head_units:
        x = keras.layers.Dense(head_units, activation="relu", name=HEAD_LAYERS[0])(x)
    if dropout:
        x = HeadDropout(dropout, name=HEAD_LAYERS[1])(x)
    activation = "sigmoid" if multi_label else "softmax"
    return keras.layers.Dense(num_classes, activation=activation, dtype="float32", name=HEAD_LAYERS[2])(x)


def is_multi_label(model: keras.Model) -> bool:
    """Whether `model` gives one sigmoid probability per label (built with `multi_label=True`).

    Example:
        is_multi_label(build_classifier(3, weights=None, image_size=32, multi_label=True))
        # True
    """
    try:
        layer = model.get_layer(HEAD_LAYERS[2])
    except ValueError:
        return False
    return getattr(layer, "activation", None) is keras.activations.sigmoid


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of `model` and, depth first, of the models nested in it.

    Example:
        len(all_layers(build_classifier(3, backbone="resnet-tiny", weights=None))) > 175
        # True
    """
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers += all_layers(layer)
    return layers


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` itself when it computes in float32 throughout; else the same network built in
    float32, holding the same weights (mixed precision keeps its variables in float32).

    What every export serves: LiteRT has no float16 convolution, and CPUs run float16 slowly.

    Example:
        with tfresnet.training.distribute.precision_policy(True):
            model = build_classifier(5, weights=None)
        {layer.compute_dtype for layer in all_layers(float32_copy(model))}
        # {'float32'}
    """
    if all(layer.compute_dtype == "float32" for layer in all_layers(model)):
        return model

    def in_float32(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = {**layer.get_config(), "dtype": "float32"}
        if isinstance(layer, HubLayer):  # the module this process already loaded, not a file's
            return HubLayer.from_config(config, safe_mode=False)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def compile_classifier(
    model: keras.Model,
    *,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    label_smoothing: float = LABEL_SMOOTHING,
    jit_compile: bool | str = "auto",
    ema_momentum: float | None = None,
    steps_per_execution: int = 1,
    multi_label: bool = False,
    label_weights: dict | None = None,
) -> None:
    """Compiles `model` with the recipe: Adam, smoothed cross-entropy, accuracy.

    The loss is categorical cross-entropy on one-hot labels (feed `one_hot_labels`'s
    output), with `label_smoothing`; the metric is `"accuracy"`. With `multi_label`, the loss is
    binary cross-entropy on multi-hot labels, each label weighted by `label_weights` (see
    `tfresnet.models.multi_label`), and the metric `"mean_average_precision"` (the mean over
    labels of the area under each label's precision-recall curve). The optimizer is built at
    once, so the first training step is traced once. `fine_tune`, `find_lr` and every trial of
    the search compile through here, so they all optimise the same objective.

    Args:
        model: A model from `build_classifier` (or a head from `build_head`).
        learning_rate: Adam's learning rate, or a schedule.
        label_smoothing: Label smoothing of the loss, in [0, 1).
        jit_compile: XLA compilation: `"auto"`, True or False (as `Model.compile`).
        ema_momentum: With a momentum (e.g. 0.999), Adam also keeps an exponential moving
            average of the trained weights (`use_ema`), its momentum warming up (see
            `WarmedUpAdam`); `keras.callbacks.SwapEMAWeights` puts it in the model for
            evaluation. None: no average.
        steps_per_execution: Training steps run per call of the traced step (as
            `Model.compile`): more cuts Keras's per-step cost where steps are tiny (heads on
            features); the numbers stay those of one step at a time.
        multi_label: Several labels per image (a model built with `multi_label=True`).
        label_weights: With `multi_label`, `{"positive": [...], "negative": [...]}` weights per
            label (`tfresnet.models.multi_label.label_weights`); None weighs all alike.

    Example:
        model = build_classifier(3, backbone="resnet-tiny", weights=None, image_size=32)
        compile_classifier(model, learning_rate=1e-3)
        model.loss.label_smoothing
        # 0.1
    """
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
    check_ema_momentum(ema_momentum)
    if ema_momentum is None:
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        optimizer = WarmedUpAdam(learning_rate, use_ema=True, ema_momentum=ema_momentum)
    if multi_label:
        weights = label_weights or {}
        loss = LabelWeightedCrossentropy(
            label_smoothing,
            positive_weights=weights.get("positive"),
            negative_weights=weights.get("negative"),
        )
        metric = keras.metrics.AUC(curve="PR", multi_label=True, name=MEAN_AVERAGE_PRECISION)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metric = keras.metrics.CategoricalAccuracy(name=ACCURACY)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[metric],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    model.optimizer.build(model.trainable_variables)


@keras.saving.register_keras_serializable(package="tfresnet")
class WarmedUpAdam(internals.StepMomentumAverage, keras.optimizers.Adam):
    """Adam whose moving average of the weights (`use_ema`) warms up with the step.

    Keras's average has no bias correction: at momentum 0.999, after a few hundred steps it
    still holds mostly the starting weights. Here the momentum at step `t` (counted from 0 in
    each optimizer) is `min(ema_momentum, (1 + t) / (10 + t))`, as
    `tf.train.ExponentialMovingAverage(num_updates=t)` and timm's EMA warm-up set it: the
    average starts at the first step's weights and follows the early steps closely.

    Example:
    >>> optimizer = WarmedUpAdam(1e-3, use_ema=True, ema_momentum=0.999)
    """

    def average_momentum(self):
        """The average's momentum at this step (0 at the first: the average starts there)."""
        step = keras.ops.cast(self.iterations, "float32")
        momentum = keras.ops.minimum(self.ema_momentum, (1.0 + step) / (10.0 + step))
        return keras.ops.where(step > 0, momentum, 0.0)


def check_label_smoothing(label_smoothing: float) -> float:
    """`label_smoothing` as a float, checked to lie in [0, 1).

    Example:
    >>> check_label_smoothing(0.1)
    0.1
    """
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, (int, float))
        or not (0 <= label_smoothing < 1)
    ):
        raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing!r}")
    return float(label_smoothing)


def check_ema_momentum(ema_momentum: float | None) -> None:
    """Raises a ValueError unless `ema_momentum` is None (no average) or in (0, 1)."""
    if ema_momentum is not None and not 0 < ema_momentum < 1:
        raise ValueError(
            f"ema_momentum must be in (0, 1), e.g. 0.999. Received: ema_momentum={ema_momentum!r}"
        )


def one_hot_labels(num_classes: int):
    """A `Dataset.map` function from `(images, int labels)` to the one-hot labels of the loss.

    Example:
        train = data.train.map(one_hot_labels(len(data.class_names)))
    """

    def convert(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return convert
