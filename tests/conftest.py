"""Shared fixtures: seeds, tiny images and models built on the spot, never downloaded."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

HUB_IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    keras.backend.clear_session()


def save_hub_feature_vector(path: str) -> str:
    """Writes a TF2 reusable SavedModel shaped like TF Hub's `resnet_v2_50/feature_vector`.

    The module takes float images in [0, 1] of any size and returns 2048 pooled features,
    with `__call__(images, training)`, `variables`, `trainable_variables` and
    `regularization_losses`, as the reusable-SavedModel API defines.
    """
    network = keras.applications.ResNet50V2(
        include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
    )

    @tf.function
    def call(images, training=False):
        return network(images * 2.0 - 1.0, training=training)

    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    root = tf.train.Checkpoint()
    root.variables = [v.value for v in network.variables]
    root.trainable_variables = [v.value for v in network.trainable_variables]
    root.regularization_losses = []
    root.__call__ = call
    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    tf.saved_model.save(root, path)
    return path


@pytest.fixture(scope="session")
def hub_module_dir(tmp_path_factory) -> str:
    """Path of a Hub-format ResNet50V2 feature-vector module, built once per session."""
    return save_hub_feature_vector(str(tmp_path_factory.mktemp("hub") / "resnet_v2_50"))


@pytest.fixture
def images() -> np.ndarray:
    """Four random RGB images, 32 px, raw pixel values in [0, 255]."""
    return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


