import subprocess
import sys

import keras
import numpy as np
import pytest

import tfresnet


@pytest.fixture
def hub_model(hub_module_dir):
    return tfresnet.build_classifier(3, backbone=f"hub:{hub_module_dir}", image_size=32)


def test_variables_have_clean_names(hub_model):
    names = [v.name for v in hub_model.get_layer("backbone").weights]
    assert len(names) == 270
    assert not [name for name in names if ":" in name or "/" in name]


@pytest.mark.parametrize("trainable", [True, False])
def test_one_adam_step(hub_model, images, trainable):
    hub_layer = hub_model.get_layer("backbone")
    hub_layer.trainable = trainable
    hub_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    kernel = hub_layer.weights[0]
    moving_mean = next(v for v in hub_layer.weights if "moving_mean" in v.name)
    before = kernel.numpy().copy(), moving_mean.numpy().copy()

    hub_model.fit(images, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)

    assert (not np.allclose(before[0], kernel.numpy())) == trainable
    np.testing.assert_array_equal(before[1], moving_mean.numpy())


def test_keras_file_reloads_from_config(hub_model, images, tmp_path):
    path = str(tmp_path / "model.keras")
    hub_model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.get_layer("backbone"), tfresnet.HubLayer)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), hub_model.predict(images, verbose=0), atol=1e-6
    )


def test_export_reloads_in_a_fresh_process(hub_model, images, tmp_path):
    hub_model.get_layer("backbone").trainable = True
    hub_model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    hub_model.fit(images, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    export_dir = tmp_path / "export"
    hub_model.export(str(export_dir), verbose=False)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "served = tf.saved_model.load(sys.argv[1])\n"
        "np.save(sys.argv[3], served.serve(np.load(sys.argv[2])).numpy())\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(export_dir),
            str(tmp_path / "images.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
        capture_output=True,
    )
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), hub_model.predict(images, verbose=0), atol=1e-5)


def test_layer_parameters_follow_freezing(hub_model):
    hub_layer = hub_model.get_layer("backbone")
    tfresnet.freeze(hub_model, until=-3)
    rows = hub_layer.layer_parameters()
    assert [name for name, _, _ in rows] == hub_layer.module_layers
    assert sum(t for _, t, _ in rows) == sum(int(np.prod(v.shape)) for v in hub_layer.trainable_weights)
    assert sum(t + f for _, t, f in rows) == hub_layer.count_params()
    assert all(t == 0 for _, t, _ in rows[:-3])
