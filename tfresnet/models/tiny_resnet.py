"""Tiny ResNets with ResNet50's block structure and layer names, for tests and smoke runs.

`tiny_resnet()` builds the network of `keras.applications.ResNet50(include_top=False)`: the
same stem, the same 3, 4, 6 and 3 bottleneck blocks, the same layer order and names
(`conv1_conv`, `conv4_block6_out`, ...), so indices and stage names freeze it exactly as they
freeze ResNet50 (stages start at 7, 39, 81 and 143; 175 layers). Only the widths shrink: the
stem has 8 channels and the stages' 3x3 convolutions 4, 8, 16 and 32, so its features are 128
wide and it builds in a fraction of a second. `resnet_test()` keeps one block a stage (55
layers, the same widths and names up to `conv5_block1_out`): TensorFlow traces a network layer
by layer, so it trains, predicts and exports about three times sooner, which is what a test of
everything but the freezing of ResNet50's layers needs. Neither has pretrained weights: use
them as `backbone="resnet-tiny"` or `"resnet-test"` with `weights=None`.
"""

from __future__ import annotations

import keras

STEM_FILTERS = 8
STAGE_FILTERS = (4, 8, 16, 32)
STAGE_BLOCKS = (3, 4, 6, 3)
TEST_STAGE_BLOCKS = (1, 1, 1, 1)
EXPANSION = 4  # a bottleneck's output has 4 times the channels of its 3x3 convolution
FEATURE_SIZE = EXPANSION * STAGE_FILTERS[-1]  # the output channels of both networks
BATCH_NORM_EPSILON = 1.001e-5  # as keras.applications' ResNet


def _batch_norm(x, name: str):
    return keras.layers.BatchNormalization(axis=3, epsilon=BATCH_NORM_EPSILON, name=name)(x)


def _block(x, filters: int, strides: int, shortcut: bool, name: str):
    """Keras's `residual_block_v1`: the layers, their order and their names."""
    if shortcut:
        skip = keras.layers.Conv2D(EXPANSION * filters, 1, strides=strides, name=f"{name}_0_conv")(x)
        skip = _batch_norm(skip, f"{name}_0_bn")
    else:
        skip = x
    x = keras.layers.Conv2D(filters, 1, strides=strides, name=f"{name}_1_conv")(x)
    x = _batch_norm(x, f"{name}_1_bn")
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = _batch_norm(x, f"{name}_2_bn")
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(EXPANSION * filters, 1, name=f"{name}_3_conv")(x)
    x = _batch_norm(x, f"{name}_3_bn")
    x = keras.layers.Add(name=f"{name}_add")([skip, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def tiny_resnet(
    *,
    include_top: bool = False,
    weights: None = None,
    input_shape: tuple | None = None,
    name: str = "resnet_tiny",
    blocks: tuple[int, int, int, int] = STAGE_BLOCKS,
) -> keras.Model:
    """ResNet50's structure at a few channels; the arguments of `keras.applications.ResNet50`.

    Args:
        include_top: Must be False: `tfresnet.build_classifier` adds the head.
        weights: Must be None: the network has no pretrained weights.
        input_shape: Shape of the channels-last input images; None for any size.
        name: The model's name.
        blocks: Bottleneck blocks of each of the four stages.

    Returns:
        A functional `keras.Model` from images to a feature map with 128 channels.

    Example:
        tiny_resnet(input_shape=(32, 32, 3)).output_shape
        # (None, 1, 1, 128)
    """
    if include_top or weights is not None:
        raise ValueError(
            "The tiny test backbone has no classification top and no pretrained weights. "
            f"Received: include_top={include_top!r}, weights={weights!r}"
        )
    inputs = keras.Input(input_shape or (None, None, 3))
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(STEM_FILTERS, 7, strides=2, name="conv1_conv")(x)
    x = _batch_norm(x, "conv1_bn")
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, stage_blocks) in enumerate(zip(STAGE_FILTERS, blocks)):
        for block in range(stage_blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(x, filters, strides, shortcut=block == 0, name=f"conv{stage + 2}_block{block + 1}")
    return keras.Model(inputs, x, name=name)


def resnet_test(
    *,
    include_top: bool = False,
    weights: None = None,
    input_shape: tuple | None = None,
    name: str = "resnet_test",
) -> keras.Model:
    """`tiny_resnet` with one bottleneck block a stage: 55 layers, stages at 7, 19, 31 and 43.

    Example:
        len(resnet_test(input_shape=(32, 32, 3)).layers)
        # 55
    """
    return tiny_resnet(
        include_top=include_top, weights=weights, input_shape=input_shape, name=name, blocks=TEST_STAGE_BLOCKS
    )
