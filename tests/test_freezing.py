import keras
import numpy as np
import pytest

import tfresnet

BATCH_NORM = keras.layers.BatchNormalization


@pytest.fixture
def model():
    return tfresnet.build_classifier(3, weights=None, image_size=32, head_units=8)


def _size(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("until", [0, 81, 140, 143, 175, -10, None])
def test_freeze_by_index_counts(model, until):
    backbone = model.get_layer("backbone")
    layers = backbone.layers
    first = len(layers) if until is None else until % len(layers) if until < 0 else until
    report = tfresnet.freeze(model, until=until)

    expected_trainable = [
        w
        for i, layer in enumerate(layers)
        if i >= first and not isinstance(layer, BATCH_NORM)
        for w in layer.weights
    ]
    head = [w for name in ("head_dense", "predictions") for w in model.get_layer(name).weights]
    assert report["first_trainable"] == first
    assert report["trainable_params"] == _size(expected_trainable) + _size(head)
    assert report["trainable_params"] + report["non_trainable_params"] == model.count_params()
    for i, layer in enumerate(layers):
        if layer.weights:
            assert bool(layer.trainable_weights) == (i >= first and not isinstance(layer, BATCH_NORM))


def test_freeze_by_name_is_the_first_trainable_layer(model):
    names = [layer.name for layer in model.get_layer("backbone").layers]
    assert tfresnet.freeze(model, until="conv5")["first_trainable"] == names.index("conv5_block1_1_conv")
    assert tfresnet.freeze(model, until="conv4_block6_out")["first_trainable"] == names.index(
        "conv4_block6_out"
    )


def test_more_frozen_means_fewer_trainable_params(model):
    counts = [tfresnet.freeze(model, until=i)["trainable_params"] for i in (0, 38, 80, 142, 175)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]


def test_index_out_of_range(model):
    with pytest.raises(ValueError, match="from -175 to 175"):
        tfresnet.freeze(model, until=176)


def test_unknown_name_suggests_close_names(model):
    with pytest.raises(ValueError, match="Close names: conv5_block1_out"):
        tfresnet.freeze(model, until="conv5_block1_outt")


def test_partial_unfreeze_trains_only_the_top_and_keeps_batch_norm_in_inference(model, images):
    tfresnet.freeze(model, until="conv5")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    backbone = model.get_layer("backbone")
    top_conv = backbone.get_layer("conv5_block3_3_conv").kernel
    bottom_conv = backbone.get_layer("conv1_conv").kernel
    top_bn = backbone.get_layer("conv5_block3_3_bn")
    before = [v.numpy().copy() for v in (top_conv, bottom_conv, top_bn.moving_mean, top_bn.gamma)]

    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)

    assert not np.allclose(before[0], top_conv.numpy())
    np.testing.assert_array_equal(before[1], bottom_conv.numpy())
    np.testing.assert_array_equal(before[2], top_bn.moving_mean.numpy())
    np.testing.assert_array_equal(before[3], top_bn.gamma.numpy())


def test_freeze_recompiles_a_compiled_model(model, images):
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    labels = np.array([0, 1, 2, 0])
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    bottom_conv = model.get_layer("backbone").get_layer("conv1_conv").kernel
    before = bottom_conv.numpy().copy()

    tfresnet.freeze(model, until=0)
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)

    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert not np.allclose(before, bottom_conv.numpy())


def test_freeze_hub_module_by_index(hub_module_dir, images):
    model = tfresnet.build_classifier(3, backbone=f"hub:{hub_module_dir}", image_size=32)
    hub_layer = model.get_layer("backbone")
    assert not hub_layer.trainable_weights
    report = tfresnet.freeze(model, until=-5)
    assert report["first_trainable"] == len(hub_layer.module_layers) - 5
    frozen_scopes = set(hub_layer.module_layers[:-5])

    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    before = [v.numpy().copy() for v, _, _ in hub_layer._module_variables]
    model.fit(images, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)

    for (variable, scope, module_trainable), old in zip(hub_layer._module_variables, before):
        changed = not np.array_equal(old, variable.numpy())
        assert changed == (module_trainable and scope not in frozen_scopes), variable.name
