"""Tests of tfresnet.models.tiny_resnet: ResNet50's layers at a hundredth of its weights, never pretrained,
and the one-block-a-stage network of the tests."""

import pytest
from conftest import layer_names as _names

import tfresnet
from tfresnet.models import tiny_resnet


def test_tiny_has_resnet50_layers_in_order(networks):
    # Index 0 is the input layer in both; its name is Keras's automatic, numbered one.
    resnet50, tiny = networks("resnet50"), networks("resnet-tiny")
    assert [type(layer) for layer in tiny.layers] == [type(layer) for layer in resnet50.layers]
    assert _names(tiny)[1:] == _names(resnet50)[1:]


def test_tiny_has_resnet50_kernels_and_strides(networks):
    def geometry(network):
        return [
            (
                getattr(layer, "kernel_size", None),
                getattr(layer, "strides", None),
                getattr(layer, "padding", None),
            )
            for layer in network.layers
        ]

    assert geometry(networks("resnet-tiny")) == geometry(networks("resnet50"))


def test_the_test_network_is_the_tiny_one_with_a_block_a_stage(networks):
    tiny, test = _names(networks("resnet-tiny")), _names(networks("resnet-test"))
    assert len(test) == 55
    assert test[1:] == [name for name in tiny[1:] if "_block" not in name or "_block1_" in name]
    assert networks("resnet-test").output_shape == networks("resnet-tiny").output_shape


def test_tiny_has_under_a_hundredth_of_the_weights(networks):
    # Its build time is not asserted: speed is for benchmarks/, where a busy machine cannot fail CI.
    assert networks("resnet-tiny").count_params() < networks("resnet50").count_params() / 100


@pytest.mark.parametrize(
    "build",
    [
        lambda: tfresnet.build_backbone("resnet-tiny", weights="imagenet", image_size=32),
        lambda: tfresnet.build_classifier(2, backbone="resnet-tiny", weights="imagenet", image_size=32),
        lambda: tfresnet.build_backbone("resnet-tiny", weights="/some/file.h5", image_size=32),
    ],
    ids=["build_backbone", "build_classifier", "a file"],
)
def test_tiny_refuses_pretrained_weights(build):
    with pytest.raises(ValueError, match=r"'resnet-tiny' is a tiny network for tests .* pass weights=None"):
        build()


def test_the_test_network_refuses_pretrained_weights():
    with pytest.raises(ValueError, match=r"'resnet-test' is a tiny network for tests .* pass weights=None"):
        tfresnet.build_backbone("resnet-test", weights="imagenet", image_size=32)


@pytest.mark.parametrize("builder", [tiny_resnet.tiny_resnet, tiny_resnet.resnet_test])
@pytest.mark.parametrize("kwargs", [{"weights": "imagenet"}, {"include_top": True}])
def test_tiny_builder_refuses_a_top_and_weights(builder, kwargs):
    with pytest.raises(ValueError, match="no classification top and no pretrained weights"):
        builder(**kwargs)
