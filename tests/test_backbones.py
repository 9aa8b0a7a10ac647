"""The backbone table: each row's facts hold for the network its builder makes.

Each network is built once per module, with random weights at 32 px; the facts checked here
(layer counts, stage indices, feature widths) do not depend on the weights or the image size.
"""

import keras
import pytest
from conftest import layer_names as _names

import tfresnet
from tfresnet.models.backbones import BACKBONES, TorchvisionWeights, get_backbone

REAL = ["resnet50", "resnet50v2", "resnet50-torchvision"]
TEST_ONLY = ["resnet-tiny", "resnet-test"]
BUILT = [*REAL, *TEST_ONLY]
STAGES = [(name, stage) for name in BUILT for stage in BACKBONES[name].stages]


# === Each row against its network ===


@pytest.mark.parametrize("name", BUILT)
def test_num_layers(networks, name):
    assert len(networks(name).layers) == BACKBONES[name].num_layers


@pytest.mark.parametrize("name, stage", STAGES)
def test_stage_is_the_first_layer_of_its_name(networks, name, stage):
    names = _names(networks(name))
    first = next(index for index, layer in enumerate(names) if layer.startswith(stage + "_"))
    assert BACKBONES[name].stages[stage] == first


@pytest.mark.parametrize("name", BUILT)
def test_stages_are_in_order(name):
    indices = list(BACKBONES[name].stages.values())
    assert len(indices) == 4
    assert indices == sorted(indices)
    assert 0 < indices[0] and indices[-1] < BACKBONES[name].num_layers


@pytest.mark.parametrize("name", BUILT)
def test_feature_size_is_the_output_channels(networks, name):
    row = BACKBONES[name]
    assert networks(name).output_shape[-1] == row.feature_size
    assert not row.pools_itself


@pytest.mark.parametrize(
    "name, normalization, feature_size",
    [
        ("resnet50", "caffe", 2048),
        ("resnet50v2", "tf", 2048),
        ("resnet50-torchvision", "torch", 2048),
        ("hub", "unit", 2048),
        ("resnet-tiny", "caffe", 128),
        ("resnet-test", "caffe", 128),
    ],
)
def test_normalization_and_feature_size_of_each_row(name, normalization, feature_size):
    row = BACKBONES[name]
    assert (row.normalization, row.feature_size) == (normalization, feature_size)
    assert row.test_only == (name in TEST_ONLY)


def test_hub_row_pools_itself_and_counts_no_layers():
    row = BACKBONES["hub"]
    assert row.builder is None
    assert row.pools_itself
    assert (dict(row.stages), row.num_layers) == ({}, 0)


@pytest.mark.parametrize(
    "name, file_name",
    [
        ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet50v2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ],
)
def test_keras_weights_url(name, file_name):
    row = BACKBONES[name]
    assert (
        row.weights_url == "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + file_name
    )
    assert len(row.weights_hash) == 32  # MD5, as Keras publishes it


def test_torchvision_weights_facts():
    row = BACKBONES["resnet50-torchvision"]
    v1, v2 = row.torchvision_weights["IMAGENET1K_V1"], row.torchvision_weights["IMAGENET1K_V2"]
    assert (v1.url, v1.sha256_prefix, v1.eval_resize, v1.eval_crop) == (
        "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "0676ba61",
        256,
        224,
    )
    assert (v2.file, v2.sha256_prefix, v2.eval_resize, v2.eval_crop) == (
        "resnet50-11ad3fa6.pth",
        "11ad3fa6",
        232,
        224,
    )
    assert row.torchvision_weights["DEFAULT"] == v2
    assert TorchvisionWeights("x-0123abcd.safetensors", 0.0, 1).sha256_prefix == "0123abcd"


@pytest.mark.parametrize("name", ["resnet50", "resnet50v2", *TEST_ONLY])
def test_only_torchvision_takes_torchvision_weights(name):
    assert not BACKBONES[name].torchvision_weights


def test_resnet50_row_is_keras_resnet50():
    assert BACKBONES["resnet50"].builder is keras.applications.ResNet50
    assert BACKBONES["resnet50v2"].builder is keras.applications.ResNet50V2


# === get_backbone ===


@pytest.mark.parametrize("name", BUILT)
def test_get_backbone_by_name(name):
    assert get_backbone(name) == (BACKBONES[name], None)


@pytest.mark.parametrize(
    "name, handle",
    [
        ("hub:/models/resnet_v2_50", "/models/resnet_v2_50"),
        ("hub:relative/module", "relative/module"),
        (
            "hub:https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5",
            "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5",
        ),
        (
            "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5",
            "https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5",
        ),
        (
            "https://www.kaggle.com/models/google/resnet-v2/tensorFlow2/50-feature-vector",
            "https://www.kaggle.com/models/google/resnet-v2/tensorFlow2/50-feature-vector",
        ),
        (
            "https://kaggle.com/models/google/resnet-v2/tensorFlow2/50-feature-vector",
            "https://kaggle.com/models/google/resnet-v2/tensorFlow2/50-feature-vector",
        ),
    ],
)
def test_get_backbone_hub_handles(name, handle):
    row, resolved = get_backbone(name)
    assert row is BACKBONES["hub"]
    assert resolved == handle


@pytest.mark.parametrize(
    "name", ["resnet18", "hub", "ResNet50", "https://example.com/models/resnet50", "", None, 50]
)
def test_get_backbone_unknown_names_list_the_names(name):
    with pytest.raises(ValueError, match="Unknown backbone") as error:
        get_backbone(name)
    message = str(error.value)
    for known in BUILT:
        assert repr(known) in message
    assert "'hub:<handle>'" in message
    assert f"Received: backbone={name!r}" in message


def test_get_backbone_hub_prefix_needs_a_handle():
    with pytest.raises(ValueError, match="backbone='hub:' needs a handle after it"):
        get_backbone("hub:")


# === The evaluation crop of each weights ===


@pytest.mark.parametrize(
    "backbone, weights, resize",
    [
        ("resnet50", "imagenet", 256),
        ("resnet50v2", "imagenet", 256),
        ("resnet50-torchvision", "imagenet", 232),  # torchvision's DEFAULT is V2
        ("resnet50-torchvision", "torchvision:IMAGENET1K_V2", 232),
        ("resnet50-torchvision", "torchvision:IMAGENET1K_V1", 256),
        ("resnet50-torchvision", "/weights/resnet50-11ad3fa6.pth", 232),  # V2's file, by its name
        ("resnet50-torchvision", "/weights/resnet50-0676ba61.pth", 256),
        ("resnet50-torchvision", "/weights/my_own.pth", 256),
        ("resnet50-torchvision", None, 256),
        ("resnet-tiny", None, 256),
        ("resnet-test", None, 256),
    ],
)
def test_each_weights_are_evaluated_at_their_own_crop(backbone, weights, resize):
    assert tfresnet.eval_crop_fraction(backbone, weights) == pytest.approx(224 / resize)


def test_the_torchvision_crops_come_from_the_published_rows():
    row = BACKBONES["resnet50-torchvision"]
    for version, published in row.torchvision_weights.items():
        expected = published.eval_crop / published.eval_resize
        assert tfresnet.eval_crop_fraction(row.name, f"torchvision:{version}") == expected
