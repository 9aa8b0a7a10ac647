"""freeze: by index, by name, from the end; BatchNorm stays frozen; compiled models recompile.

The mechanics run on the tiny backbone, which has ResNet50's 175 layers and names; each real
backbone is built once to check that its stage names resolve to its row's indices. Freezing
TF Hub modules is tested in test_hub.py.
"""

import keras
import numpy as np
import pytest

import tfresnet
from tfresnet.models.backbones import BACKBONES

BATCH_NORM = keras.layers.BatchNormalization
TINY = {"backbone": "resnet-tiny", "weights": None, "image_size": 32}
REAL = ["resnet50", "resnet50v2", "resnet50-torchvision"]
REAL_STAGES = [(name, stage) for name in REAL for stage in BACKBONES[name].stages]
ONE_HOT = np.eye(3, dtype="float32")[[0, 1, 2, 0]]


@pytest.fixture
def model():
    """A fresh model, for the tests that compile or train it."""
    return tfresnet.build_classifier(3, **TINY, head_units=8)


@pytest.fixture(scope="module")
def shared():
    """One model for the tests that only freeze: each freeze sets every flag it reads."""
    return tfresnet.build_classifier(3, **TINY, head_units=8)


def _size(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def _first_trainable(layers, until) -> int:
    return len(layers) if until is None else until % len(layers) if until < 0 else until


# === Mechanics, on the tiny backbone ===


@pytest.mark.parametrize("until", [0, 7, 81, 140, 143, 174, 175, -1, -32, -175, None])
def test_freeze_by_index(shared, until):
    layers = shared.get_layer("backbone").layers
    first = _first_trainable(layers, until)
    report = tfresnet.freeze(shared, until=until)

    trains = [i >= first and not isinstance(layer, BATCH_NORM) for i, layer in enumerate(layers)]
    expected = [w for layer, train in zip(layers, trains) if train for w in layer.weights]
    head = [w for name in ("head_dense", "predictions") for w in shared.get_layer(name).weights]
    assert report["first_trainable"] == first
    assert report["trainable_params"] == _size(expected) + _size(head)
    assert report["trainable_params"] + report["non_trainable_params"] == shared.count_params()
    assert [bool(layer.trainable_weights) for layer in layers if layer.weights] == [
        train for layer, train in zip(layers, trains) if layer.weights
    ]


@pytest.mark.parametrize(
    "until, index",
    [
        ("conv5", 143),
        ("conv2", 7),
        ("conv4_block6", 133),
        ("conv4_block6_out", 142),
        ("conv5_block1_2_conv", 146),
        ("conv1_conv", 2),
    ],
)
def test_freeze_by_name_is_the_first_layer_with_that_name_or_prefix(shared, until, index):
    names = [layer.name for layer in shared.get_layer("backbone").layers]
    assert names[index] == until or names[index].startswith(until + "_")
    assert not [name for name in names[:index] if name == until or name.startswith(until + "_")]
    assert tfresnet.freeze(shared, until=until)["first_trainable"] == index


@pytest.mark.parametrize("until, same_as", [(-32, 143), (-1, 174), (-175, 0)])
def test_negative_index_counts_from_the_end(shared, until, same_as):
    assert tfresnet.freeze(shared, until=until) == tfresnet.freeze(shared, until=same_as)


def test_more_frozen_means_fewer_trainable_params(shared):
    counts = [tfresnet.freeze(shared, until=i)["trainable_params"] for i in (0, 7, 39, 81, 143, 175)]
    assert counts == sorted(counts, reverse=True)
    assert len(set(counts)) == len(counts)
    assert counts[-1] == _size(
        shared.get_layer("head_dense").weights + shared.get_layer("predictions").weights
    )


@pytest.mark.parametrize("until", [176, -176, 1000])
def test_index_out_of_range(shared, until):
    with pytest.raises(ValueError, match=f"until={until} is out of range: .* index from -175 to 175"):
        tfresnet.freeze(shared, until=until)


@pytest.mark.parametrize("until", [True, 1.5, ["conv5"]])
def test_until_of_another_type(shared, until):
    with pytest.raises(ValueError, match=r"until must be an int, a layer name or None. Received: until="):
        tfresnet.freeze(shared, until=until)


def test_unknown_name_suggests_close_names(shared):
    with pytest.raises(
        ValueError, match="No backbone layer is named 'conv5_block1_outt'.* Close names: conv5_block1_out"
    ):
        tfresnet.freeze(shared, until="conv5_block1_outt")


def test_none_freezes_the_whole_backbone_and_zero_trains_all_but_batch_norm(shared):
    backbone = shared.get_layer("backbone")
    tfresnet.freeze(shared, until=0)
    assert backbone.trainable
    tfresnet.freeze(shared, until=None)
    assert not backbone.trainable
    assert not backbone.trainable_weights


def test_a_bare_backbone_is_frozen_too():
    network, _ = tfresnet.build_backbone("resnet-tiny", weights=None, image_size=32)
    report = tfresnet.freeze(network, until="conv5")
    assert report["first_trainable"] == 143
    assert report["trainable_params"] == _size(
        [w for layer in network.layers[143:] if not isinstance(layer, BATCH_NORM) for w in layer.weights]
    )


@pytest.mark.parametrize("until", [0, "conv5"])
def test_training_changes_only_unfrozen_layers_and_never_batch_norm(model, images, until):
    tfresnet.freeze(model, until=until)
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy", run_eagerly=True)  # no tracing
    backbone = model.get_layer("backbone")
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, BATCH_NORM)]
    watched = {
        "top conv": backbone.get_layer("conv5_block3_3_conv").kernel,
        "bottom conv": backbone.get_layer("conv1_conv").kernel,
        **{f"{layer.name} {v.name}": v for layer in batch_norms for v in layer.weights},
    }
    before = {name: v.numpy().copy() for name, v in watched.items()}

    model.fit(images, ONE_HOT, epochs=1, batch_size=4, verbose=0)

    changed = {name for name, v in watched.items() if not np.array_equal(before[name], v.numpy())}
    assert changed == ({"top conv", "bottom conv"} if until == 0 else {"top conv"})
    assert all(not layer.trainable for layer in batch_norms)


def test_freeze_recompiles_a_compiled_model(images):
    # Traced: the train function of the first fit holds the variables that were trainable then.
    model = tfresnet.build_classifier(3, **dict(TINY, backbone="resnet-test"), head_units=8)  # 55 layers
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    model.fit(images, ONE_HOT, epochs=1, batch_size=4, verbose=0)
    top_conv = model.get_layer("backbone").get_layer("conv5_block1_3_conv").kernel
    before = top_conv.numpy().copy()

    tfresnet.freeze(model, until="conv5")
    model.fit(images, ONE_HOT, epochs=1, batch_size=4, verbose=0)

    assert isinstance(model.optimizer, keras.optimizers.SGD)  # recompiled from its own config
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)
    assert model.optimizer.iterations.numpy() == 1  # a fresh optimizer: the state starts afresh
    assert not np.allclose(before, top_conv.numpy())


def test_freeze_leaves_an_uncompiled_model_uncompiled(shared):
    tfresnet.freeze(shared, until=0)
    assert not shared.compiled


# === Each real backbone's stages ===


@pytest.fixture(scope="module")
def real_models():
    built = {}

    def get(name: str) -> keras.Model:
        if name not in built:
            built[name] = tfresnet.build_classifier(3, backbone=name, weights=None, image_size=32)
        return built[name]

    return get


@pytest.mark.parametrize("name, stage", REAL_STAGES)
def test_real_backbone_stage_freezes_at_its_index(real_models, name, stage):
    model = real_models(name)
    index = BACKBONES[name].stages[stage]
    layers = model.get_layer("backbone").layers
    assert layers[index].name.startswith(stage + "_")

    by_name = tfresnet.freeze(model, until=stage)
    assert by_name["first_trainable"] == index
    assert [bool(layer.trainable_weights) for layer in layers] == [
        i >= index and bool(layer.weights) and not isinstance(layer, BATCH_NORM)
        for i, layer in enumerate(layers)
    ]
    assert tfresnet.freeze(model, until=index) == by_name
