"""Writes tests/data/torchvision_reference.npz: a small torchvision ResNet v1.5 and its outputs.

The tests cannot install PyTorch, so they compare tfresnet's Keras ResNet v1.5 with outputs that
torchvision computed once, here. The network is torchvision's own `ResNet` class with its
`Bottleneck` blocks, made small: stages of (1, 2, 1, 1) blocks, a 4-channel stem, 3x3
convolutions of 4, 8, 16 and 32 channels and a 10-class `fc` (what
`tfresnet.models.torchvision_resnet.resnet_v1_5((1, 2, 1, 1), width=4)` builds, plus the head). Its
weights are random, BatchNorm's scales and shifts too, and its BatchNorm statistics come from
forward passes over random images, so that no layer is an identity. In evaluation mode it then
processes two random 40 px images: an odd size at every stride, where padding matters.

The file holds the state dict (`state_dict/<key>`, `num_batches_tracked` included), the images
channels-last (`images`, already normalised), the last stage's feature map channels-last
(`features`) and the logits (`logits`).

Run it from the repository root where torch and torchvision are installed (tfresnet and
TensorFlow are not needed):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch torchvision numpy
    /tmp/torchenv/bin/python tools/make_torchvision_reference.py

`tests/test_torchvision.py` also imports `random_resnet` from here, to compare the full
ResNet50 with torchvision where torch is installed.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torchvision.models import resnet

STAGE_BLOCKS = (1, 2, 1, 1)
WIDTH = 4
NUM_CLASSES = 10
IMAGE_SIZE = 40
BATCH_SIZE = 2
OUTPUT = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "tests", "data", "torchvision_reference.npz")
)


def random_resnet(
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, num_classes: int = 1000, seed: int = 0
) -> torch.nn.Module:
    """torchvision's bottleneck `ResNet` with random weights and BatchNorm statistics, in eval mode.

    With the defaults it is `torchvision.models.resnet50()`; a smaller `width` or fewer blocks
    rebuild the stem, the stages and `fc` with torchvision's own `_make_layer`.
    """
    torch.manual_seed(seed)
    model = resnet.ResNet(resnet.Bottleneck, list(stage_blocks), num_classes=num_classes)
    if width != 64:
        model.inplanes = width
        model.conv1 = torch.nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        model.bn1 = torch.nn.BatchNorm2d(width)
        for stage, blocks in enumerate(stage_blocks):
            strides = 1 if stage == 0 else 2
            layer = model._make_layer(resnet.Bottleneck, width * 2**stage, blocks, stride=strides)
            setattr(model, f"layer{stage + 1}", layer)
        model.fc = torch.nn.Linear(width * 8 * resnet.Bottleneck.expansion, num_classes)
    batch_norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in batch_norms:
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.2)
            module.momentum = None  # running statistics: the average over all batches below
        model.train()
        for _ in range(4):
            model(torch.randn(8, 3, 64, 64))
    return model.eval()


def features_and_logits(model: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last stage's feature map (channels-last) and the logits of NCHW `images`."""
    trunk = torch.nn.Sequential(*list(model.children())[:-2])  # without avgpool and fc
    with torch.no_grad():
        inputs = torch.from_numpy(images)
        features = trunk(inputs).permute(0, 2, 3, 1).numpy()
        logits = model(inputs).numpy()
    return features, logits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=OUTPUT, help="the .npz file to write")
    args = parser.parse_args(argv)

    model = random_resnet(STAGE_BLOCKS, WIDTH, NUM_CLASSES, seed=0)
    images = np.random.default_rng(0).normal(size=(BATCH_SIZE, 3, IMAGE_SIZE, IMAGE_SIZE)).astype("float32")
    features, logits = features_and_logits(model, images)
    state_dict = {f"state_dict/{key}": value.numpy() for key, value in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    np.savez_compressed(
        args.output,
        images=images.transpose(0, 2, 3, 1),
        features=features,
        logits=logits,
        **state_dict,
    )
    print(
        f"Wrote {args.output}: {len(state_dict)} state-dict entries, features {features.shape}, "
        f"torch {torch.__version__}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
