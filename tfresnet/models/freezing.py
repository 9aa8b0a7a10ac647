"""`freeze`: choose where training starts in a backbone, by layer index or by name.

BatchNormalization layers stay frozen wherever the cut falls, so they keep running in
inference mode with their ImageNet statistics: the rule of the Keras fine-tuning guide, without
which a partially unfrozen ResNet loses its accuracy on the first batches.
"""

from __future__ import annotations

import difflib

import keras

from tfresnet.models.backbones import Backbone


def _backbone_of(model: keras.Model) -> keras.layers.Layer:
    try:
        return model.get_layer("backbone")
    except ValueError:
        return model


def _layer_names(backbone: keras.layers.Layer) -> list[str]:
    if hasattr(backbone, "module_layers"):
        return backbone.module_layers
    return [layer.name for layer in backbone.layers]


def _check_index(until: int, count: int) -> None:
    if not -count <= until <= count:
        raise ValueError(
            f"until={until} is out of range: the backbone has {count} layers, so use an "
            f"index from {-count} to {count} (0 trains all of it, {count} freezes all of it)."
        )


def _resolve_index(names: list[str], until: int | str | None) -> int:
    count = len(names)
    if until is None:
        return count
    if isinstance(until, bool) or not isinstance(until, (int, str)):
        raise ValueError(f"until must be an int, a layer name or None. Received: until={until!r}")
    if isinstance(until, int):
        _check_index(until, count)
        return until % count if until < 0 else until
    for index, name in enumerate(names):
        if name == until or name.startswith(until + "_") or name.startswith(until + "/"):
            return index
    close = difflib.get_close_matches(until, names, n=3)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ValueError(
        f"No backbone layer is named {until!r} or starts with '{until}_'.{hint} "
        "Layer names are listed by [l.name for l in model.get_layer('backbone').layers]."
    )


def first_trainable_from_table(row: Backbone, until: int | str | None) -> int | None:
    """Where `freeze(model, until)` starts training, from the backbone's row alone.

    Answers without building the network for None, an index and a stage name; raises the
    ValueError `freeze` would raise for an index out of range; returns None where only the
    network can tell (a block or layer name, or a Hub module's layers).

    Example:
        first_trainable_from_table(BACKBONES["resnet50"], "conv5")
        # 143
    """
    count = row.num_layers
    if until is None:
        return count or None
    if isinstance(until, str):
        return row.stages.get(until)
    if isinstance(until, int) and not isinstance(until, bool) and count:
        _check_index(until, count)
        return until % count if until < 0 else until
    return None


def freeze(model: keras.Model, until: int | str | None = None) -> dict:
    """Freezes the backbone's layers before `until`; the rest and the head train.

    Indices count the backbone's layers as `keras.applications.ResNet50(include_top=False)
    .layers` does (the input layer is 0); negative indices count from the end. A name selects
    the first layer with that name or that name as a prefix: `"conv5"` or `"conv5_block1"`
    starts training at that stage or block. For a TF Hub module, indices and names count the
    module's layers (its variables' name scopes). BatchNormalization layers always stay frozen
    and in inference mode; in a Hub module, BatchNorm runs in inference mode (its statistics
    never change) but its scale and shift train where their layer is unfrozen. A compiled model
    is recompiled from its own compile config, so the change takes effect (optimizer state
    starts afresh).

    Args:
        model: A model from `build_classifier`, or a bare backbone.
        until: Index or name of the first trainable layer; None freezes the whole backbone,
            0 unfreezes all of it.

    Returns:
        A dict with `first_trainable` (index), `trainable_params` and `non_trainable_params`.

    Example:
        model = tfresnet.build_classifier(3, weights=None, image_size=64)
        freeze(model, until="conv5")["first_trainable"]
        # 143
    """
    backbone = _backbone_of(model)
    names = _layer_names(backbone)
    first_trainable = _resolve_index(names, until)

    if hasattr(backbone, "set_trainable_layers"):
        backbone.set_trainable_layers(first_trainable)
    else:
        backbone.trainable = True
        for index, layer in enumerate(backbone.layers):
            is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = index >= first_trainable and not is_batch_norm
        if first_trainable >= len(names):
            backbone.trainable = False

    if getattr(model, "compiled", False) and model.optimizer is not None:
        model.compile_from_config(model.get_compile_config())

    trainable = sum(int(keras.ops.size(v)) for v in model.trainable_weights)
    non_trainable = sum(int(keras.ops.size(v)) for v in model.non_trainable_weights)
    return {
        "first_trainable": first_trainable,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
    }
