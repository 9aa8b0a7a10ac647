"""The layers tfresnet adds to a backbone, saved by name in `.keras` files
(`tfresnet>ImageNormalization`, `tfresnet>HeadDropout`): importing `tfresnet` registers them, so
`keras.saving.load_model` finds them.

Example:
    ImageNormalization("caffe")(np.zeros((1, 2, 2, 3), "float32")).shape
    # TensorShape([1, 2, 2, 3])
"""

from __future__ import annotations

import keras
from keras import ops

# ImageNet channel means in BGR order, subtracted by "caffe"-style normalisation.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet channel means and standard deviations of [0, 1] RGB, as torchvision normalises.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("caffe", "tf", "unit", "torch")


@keras.saving.register_keras_serializable(package="tfresnet")
class ImageNormalization(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to the range a backbone was trained on.

    It always computes in float32, also under mixed precision.

    Args:
        mode: `"caffe"` (RGB to BGR, minus the ImageNet mean: Keras's ResNet50), `"tf"`
            ([-1, 1]: Keras's ResNet50V2), `"unit"` ([0, 1]: TF Hub image modules) or
            `"torch"` ([0, 1], minus the ImageNet mean, divided by its standard deviation:
            torchvision's models).
        **kwargs: Passed to `keras.layers.Layer`.

    Example:
        ImageNormalization("tf")(np.full((1, 2, 2, 3), 255.0))[0, 0, 0]
        # array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"mode must be one of {NORMALIZATIONS}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, "float32")
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(TORCH_MEAN_RGB, "float32")
            return (x / 255.0 - mean) / ops.convert_to_tensor(TORCH_STD_RGB, "float32")
        return x / 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tfresnet")
class HeadDropout(keras.layers.Dropout):
    """Keras's `Dropout`, its rate also held in a variable that the traced training step reads.

    `set_rate` changes the rate of a model already trained without tracing its steps again:
    the search's trials of one head shape share one model (`tuning.HeadHyperModel`). The
    masks are Keras's own, drawn from the layer's seed generator.

    Example:
        layer = HeadDropout(0.2, name="output_dropout")
        layer.set_rate(0.4)
    """

    def build(self, input_shape):
        self.rate_variable = self.add_weight(
            name="rate", shape=(), initializer=keras.initializers.Constant(self.rate), trainable=False
        )
        self.built = True

    def set_rate(self, rate: float) -> None:
        """Sets the dropout rate, in [0, 1)."""
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1). Received: rate={rate!r}")
        self.rate = float(rate)
        self.rate_variable.assign(rate)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        rate = keras.ops.cast(self.rate_variable, inputs.dtype)
        shape = self.noise_shape or keras.ops.shape(inputs)
        keep = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype) >= rate
        return keras.ops.where(keep, inputs / (1 - rate), keras.ops.zeros_like(inputs))
