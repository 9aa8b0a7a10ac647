"""torchvision's ResNet50 in Keras 3, and the loading of its PyTorch weights.

torchvision's ResNet50 is "v1.5": it differs from Keras's own `keras.applications.ResNet50` (v1)
in ways that change its outputs, and this network follows torchvision in each of them:
- the first block of each stage strides in its 3x3 convolution, not in its first 1x1;
- convolutions have no bias; BatchNormalization uses epsilon 1e-5 (and momentum 0.9, which is
  PyTorch's 0.1: PyTorch weighs the new batch, Keras the old average);
- padding is PyTorch's, the same on every side: explicit `ZeroPadding2D` layers before "valid"
  convolutions and max pooling, where TensorFlow's "same" padding of a strided layer puts the
  extra row and column at the bottom and right only.

Layer names are torchvision's module names with "_" for ".": `conv1`, `bn1`, `layer1_0_conv1`,
`layer2_0_downsample_0`, ..., so each key of a PyTorch state dict names its Keras layer, and
`tfresnet.freeze(model, until="layer4")` starts training at a stage. The network is
channels-last and ends before torchvision's `avgpool` and `fc`: `tfresnet.build_classifier`
adds the pooling and the head.

Example:
    network = resnet50(input_shape=(224, 224, 3))
    load_state_dict(network, "resnet50-11ad3fa6.pth")  # torchvision's IMAGENET1K_V2 file
    # ['fc.bias', 'fc.weight']
"""

from __future__ import annotations

import io
import os
from typing import Mapping

import keras
import numpy as np

from tfresnet import paths

STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")
EXPANSION = 4  # a bottleneck's output has 4 times the channels of its 3x3 convolution
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9

# State-dict keys: the head users replace, buffers without a Keras counterpart, and what each
# BatchNorm entry is in Keras.
HEAD_PREFIX = "fc."
IGNORED_SUFFIX = ".num_batches_tracked"
BATCH_NORM_KEYS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# PyTorch stores convolution kernels as (out, in, height, width), Keras as (height, width, in, out).
OIHW_TO_HWIO = (2, 3, 1, 0)
HWIO_TO_OIHW = (3, 2, 0, 1)


# === Architecture ===


def _conv(x, filters: int, kernel_size: int, name: str, strides: int = 1):
    """A bias-free convolution padded as PyTorch pads it: `kernel_size // 2` on every side."""
    if kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, use_bias=False, name=name)(x)


def _batch_norm(x, name: str):
    return keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name
    )(x)


def _bottleneck(x, planes: int, strides: int, name: str):
    """1x1 -> 3x3 (strided: v1.5) -> 1x1 with 4 * `planes` channels, plus the shortcut."""
    shortcut = x
    if strides != 1 or x.shape[-1] != planes * EXPANSION:
        shortcut = _conv(x, planes * EXPANSION, 1, f"{name}_downsample_0", strides)
        shortcut = _batch_norm(shortcut, f"{name}_downsample_1")
    x = _conv(x, planes, 1, f"{name}_conv1")
    x = _batch_norm(x, f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = _conv(x, planes, 3, f"{name}_conv2", strides)
    x = _batch_norm(x, f"{name}_bn2")
    x = keras.layers.ReLU(name=f"{name}_relu2")(x)
    x = _conv(x, planes * EXPANSION, 1, f"{name}_conv3")
    x = _batch_norm(x, f"{name}_bn3")
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet_v1_5(
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3),
    *,
    width: int = 64,
    input_shape: tuple = (None, None, 3),
    name: str = "resnet_v1_5",
) -> keras.Model:
    """A bottleneck ResNet v1.5 as torchvision builds it, without `avgpool` and `fc`.

    Stage `i` (named `layer{i + 1}`) has `stage_blocks[i]` bottlenecks whose 3x3 convolutions
    have `width * 2**i` channels; the stem has `width` channels. torchvision's ResNet50 is
    `stage_blocks=(3, 4, 6, 3), width=64`; smaller settings give small networks of the same
    structure, for tests.

    Args:
        stage_blocks: Bottlenecks per stage.
        width: Channels of the stem and of the first stage's 3x3 convolutions.
        input_shape: Shape of the channels-last input images, e.g. `(224, 224, 3)`.
        name: The model's name.

    Returns:
        A functional `keras.Model` from images to the last stage's feature map.

    Example:
        resnet_v1_5((1, 1, 1, 1), width=8, input_shape=(64, 64, 3)).output_shape
        # (None, 2, 2, 256)
    """
    inputs = keras.Input(input_shape, name="input")
    x = _conv(inputs, width, 7, "conv1", strides=2)
    x = _batch_norm(x, "bn1")
    x = keras.layers.ReLU(name="relu")(x)
    # PyTorch pads max pooling with -inf; zeros do the same here, after a ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, blocks in enumerate(stage_blocks):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, width * 2**stage, strides, f"layer{stage + 1}_{block}")
    return keras.Model(inputs, x, name=name)


def resnet50(
    *,
    include_top: bool = False,
    weights: str | os.PathLike | Mapping | None = None,
    input_shape: tuple | None = None,
    name: str = "resnet50_torchvision",
) -> keras.Model:
    """torchvision's `resnet50()` as a Keras functional model, without `avgpool` and `fc`.

    It takes the arguments of `keras.applications.ResNet50` that a backbone needs. Of its 191
    layers (the input layer is 0), the stages start at `layer1` 7, `layer2` 42, `layer3` 88 and
    `layer4` 156: `tfresnet.freeze(model, until=156)` equals `until="layer4"`.

    Args:
        include_top: Must be False: `tfresnet.build_classifier` adds the head.
        weights: None (random), or a torchvision state dict or the path of one (`.pth`, `.pt`
            or `.safetensors`); see `load_state_dict`.
        input_shape: Shape of the channels-last input images; None for any size.
        name: The model's name.

    Returns:
        A functional `keras.Model` from normalised RGB images to a (7, 7, 2048) feature map at
        224 px.

    Example:
        resnet50(input_shape=(224, 224, 3)).output_shape
        # (None, 7, 7, 2048)
    """
    if include_top:
        raise ValueError(
            "This network has no classification top: tfresnet.build_classifier adds the head "
            "(a state dict's fc keys are skipped). Received: include_top=True"
        )
    network = resnet_v1_5((3, 4, 6, 3), width=64, input_shape=input_shape or (None, None, 3), name=name)
    if weights is not None:
        load_state_dict(network, weights)
    return network


# === Weights ===


def _unwrap(checkpoint: Mapping) -> Mapping:
    """The state dict inside a training checkpoint (`{"model": ...}`, `{"state_dict": ...}`),
    without the `module.` prefix that `DataParallel` and `DistributedDataParallel` add."""
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    if checkpoint and all(key.startswith("module.") for key in checkpoint):
        checkpoint = {key[len("module.") :]: value for key, value in checkpoint.items()}
    return checkpoint


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict as NumPy arrays.

    A `.safetensors` file needs only the `safetensors` package; a `.pth` / `.pt` file (what
    `torch.save(model.state_dict(), path)` writes, or a checkpoint holding one under `"model"`
    or `"state_dict"`) needs PyTorch, and is read with `weights_only=True`.

    Args:
        path: The file, local or on any file system TensorFlow has (`gs://...`: read whole
            into memory).

    Returns:
        Arrays by state-dict key.

    Example:
        read_state_dict("resnet50-11ad3fa6.pth")["conv1.weight"].shape
        # (64, 3, 7, 7)
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load, load_file
        except ImportError:
            raise ImportError(
                f"Reading {path!r} needs the safetensors package: pip install safetensors"
            ) from None
        return dict(_unwrap(load_file(path) if paths.is_local(path) else load(paths.read_bytes(path))))
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"Reading {path!r}, a PyTorch file, needs PyTorch: pip install torch. Or convert it "
            "once where PyTorch is installed, with safetensors.torch.save_file(torch.load(path), "
            "'resnet50.safetensors'), and pass the .safetensors file: reading it needs only "
            "pip install safetensors."
        ) from None
    source = path if paths.is_local(path) else io.BytesIO(paths.read_bytes(path))
    checkpoint = _unwrap(torch.load(source, map_location="cpu", weights_only=True))
    return {
        key: value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
        for key, value in checkpoint.items()
    }


def _targets(network: keras.Model) -> dict[str, tuple[keras.Variable, tuple | None]]:
    """Each state-dict key `network` takes -> (its Keras variable, axes to transpose by)."""
    targets = {}
    for layer in network.layers:
        module = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            targets[f"{module}.weight"] = (layer.kernel, OIHW_TO_HWIO)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for key, attribute in BATCH_NORM_KEYS.items():
                targets[f"{module}.{key}"] = (getattr(layer, attribute), None)
    return targets


def _listed(keys: list[str], limit: int = 8) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)}: " + ", ".join(keys[:limit]) + more


def load_state_dict(network: keras.Model, state_dict: Mapping | str | os.PathLike) -> list[str]:
    """Copies torchvision ResNet weights into a network from `resnet50` or `resnet_v1_5`.

    Convolution kernels are transposed from PyTorch's (out, in, height, width) to Keras's
    (height, width, in, out); BatchNorm `weight`, `bias`, `running_mean` and `running_var` become
    `gamma`, `beta`, `moving_mean` and `moving_variance`; `num_batches_tracked` is ignored.
    The `fc.` keys (the classification head, which a new task replaces) are skipped. Any other
    key must match: missing keys, unexpected keys or a shape that differs raise, and then
    nothing is assigned.

    Args:
        network: The Keras network.
        state_dict: Arrays (or tensors) by key, or the path of a `.pth`, `.pt` or
            `.safetensors` file (see `read_state_dict`).

    Returns:
        The skipped head keys, sorted.

    Example:
        load_state_dict(resnet50(), torchvision_model.state_dict())
        # ['fc.bias', 'fc.weight']
    """
    source = ""
    if isinstance(state_dict, (str, os.PathLike)):
        source = f" in {os.fspath(state_dict)!r}"
        state_dict = read_state_dict(state_dict)
    state_dict = _unwrap(state_dict)
    skipped = sorted(key for key in state_dict if key.startswith(HEAD_PREFIX))
    keys = {key for key in state_dict if not key.startswith(HEAD_PREFIX) and not key.endswith(IGNORED_SUFFIX)}
    targets = _targets(network)
    missing = sorted(set(targets) - keys)
    unexpected = sorted(keys - set(targets))
    if missing or unexpected:
        problems = [f"missing keys ({_listed(missing)})"] if missing else []
        problems += [f"unexpected keys ({_listed(unexpected)})"] if unexpected else []
        raise ValueError(
            f"The state dict{source} does not fit {network.name} (a torchvision ResNet50 "
            f"v1.5, whose head keys fc.* are skipped): {'; '.join(problems)}."
        )
    values = []
    for key, (variable, axes) in targets.items():
        value = np.asarray(state_dict[key], dtype="float32")
        expected = tuple(variable.shape[axis] for axis in HWIO_TO_OIHW) if axes else tuple(variable.shape)
        if value.shape != expected:
            raise ValueError(
                f"The state dict{source} does not fit {network.name}: {key} should have shape "
                f"{expected}. Received: shape {value.shape}."
            )
        values.append((variable, value.transpose(axes) if axes else value))
    for variable, value in values:
        variable.assign(value)
    return skipped
