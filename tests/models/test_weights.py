"""``pretrained``: none, a file, the hub cache, the hub failing, and ``auto`` falling back without hanging."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from blastscope.errors import WeightsError
from blastscope.models import create_model
from blastscope.models import weights as weights_module
from blastscope.models.backbones import classifier_prefixes
from blastscope.models.weights import WeightsChoice, hub_reachable, parse_pretrained


def _equal_states(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", WeightsChoice("auto")),
        ("HUB", WeightsChoice("hub")),
        ("none", WeightsChoice("none")),
        (True, WeightsChoice("hub")),
        (False, WeightsChoice("none")),
        ("w/resnet.pth", WeightsChoice("file", Path("w/resnet.pth"))),
    ],
)
def test_parse_pretrained(value, expected):
    assert parse_pretrained(value) == expected


def test_none_is_random_init_and_differs_between_builds():
    first = create_model("efficientnet_b0", pretrained="none", image_size=32)
    second = create_model("efficientnet_b0", pretrained="none", image_size=32)
    assert (first.pretrained, first.weights_source) == (False, "random init")
    assert not torch.equal(first.model.backbone.conv_stem.weight, second.model.backbone.conv_stem.weight)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_backbone_file_with_imagenet_classifier_loads(tmp_path, suffix):
    """A weights file as timm saves it, ImageNet classifier included: the classifier is dropped, the rest loads."""
    source = timm.create_model("efficientnet_b0", pretrained=False)
    state = source.state_dict()
    path = tmp_path / f"b0{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    bundle = create_model("efficientnet_b0", pretrained=path, image_size=32)
    assert bundle.pretrained and bundle.weights_source == f"file {path}"
    expected = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert _equal_states(bundle.model.backbone.state_dict(), expected)


@pytest.mark.parametrize(
    ("timm_name", "prefixes"),
    [("vgg16", ("head.fc.", "pre_logits.")), ("resnet50", ("fc.",)), ("tf_efficientnet_lite0", ("classifier.",))],
)
def test_files_lose_the_imagenet_top_the_backbone_has_no_place_for(timm_name, prefixes):
    """VGG's fc6/fc7 (``pre_logits``) are dropped with its classifier: only the convolutional base transfers."""
    assert classifier_prefixes(timm_name) == prefixes


def test_lightning_checkpoint_of_a_previous_run_restores_the_whole_classifier(tmp_path):
    trained = create_model("cnn", pretrained="none", image_size=32).model
    checkpoint = {
        "epoch": 3,
        "state_dict": {**{f"model.{k}": v for k, v in trained.state_dict().items()}, "class_weights": torch.ones(2)},
    }
    torch.save(checkpoint, tmp_path / "best.ckpt")
    bundle = create_model("cnn", pretrained=tmp_path / "best.ckpt", image_size=32)
    assert bundle.pretrained
    assert _equal_states(bundle.model.state_dict(), trained.state_dict())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_weights_file_is_recorded_by_its_absolute_path_and_sha256(tmp_path, monkeypatch, suffix):
    """Every result names the weights a model started from: a relative path would name another file elsewhere."""
    state = create_model("cnn", pretrained="none", image_size=32).model.state_dict()
    (torch.save if suffix == ".pt" else save_file)(state, tmp_path / f"w{suffix}")
    monkeypatch.chdir(tmp_path)

    bundle = create_model("cnn", pretrained=f"w{suffix}", image_size=32)

    assert bundle.weights_source == f"file {tmp_path / f'w{suffix}'}"
    assert bundle.weights_sha256 == hashlib.sha256((tmp_path / f"w{suffix}").read_bytes()).hexdigest()
    assert create_model("cnn", pretrained="none", image_size=32).weights_sha256 is None


def test_file_for_another_model_names_the_mismatched_keys(tmp_path):
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(
        WeightsError, match=r"resnet\.pth.*efficientnet_b0 backbone; missing: conv_stem\.weight.*unexpected"
    ):
        create_model("efficientnet_b0", pretrained=tmp_path / "resnet.pth", image_size=32)


def test_checkpoint_of_another_image_size_names_the_wrong_shapes(tmp_path):
    torch.save(create_model("cnn", pretrained="none", image_size=32).model.state_dict(), tmp_path / "cnn32.pt")
    with pytest.raises(WeightsError, match=r"wrong shape: backbone\.dense\.1\.weight \(128, 2048\) vs \(128, 8192\)"):
        create_model("cnn", pretrained=tmp_path / "cnn32.pt", image_size=64)


def test_missing_and_unreadable_files_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        create_model("cnn", pretrained=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a readable weights file"):
        create_model("cnn", pretrained=tmp_path / "junk.pth")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="no state dict of tensors"):
        create_model("cnn", pretrained=tmp_path / "list.pth")


def test_plain_backbone_file_cannot_initialise_the_cnn(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a blastscope cnn checkpoint"):
        create_model("cnn", pretrained=tmp_path / "other.pth")


def test_hub_unreachable_is_a_weights_error_listing_the_options():
    with pytest.raises(WeightsError, match=r"resnet50 \(timm/resnet50\.a1_in1k\).*--pretrained auto.*none"):
        create_model("resnet50", pretrained="hub", image_size=32)


def test_cnn_has_no_hub_weights():
    with pytest.raises(WeightsError, match="cnn has no pretrained weights"):
        create_model("cnn", pretrained="hub")


def test_auto_without_any_weights_falls_back_to_random_init_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="blastscope.models.weights"):
        bundle = create_model("xception", pretrained="auto", image_size=32)
    assert (bundle.pretrained, bundle.weights_source) == (False, "random init (no pretrained weights reachable)")
    assert "xception: no pretrained weights reachable" in caplog.text
    assert bundle.display_name == "xception (random init)"


def test_hub_probe_gives_up_quickly_on_an_unreachable_host(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("BLASTSCOPE_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.blastscope.invalid")
    started = time.monotonic()
    assert not hub_reachable("resnet50", timeout=1.0)
    assert time.monotonic() - started < 1.5


def test_hub_download_is_not_attempted_when_the_probe_fails(monkeypatch):
    monkeypatch.setattr(weights_module, "hub_reachable", lambda timm_name: False)
    monkeypatch.setattr(weights_module, "_timm_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(WeightsError):
        create_model("efficientnet_b0", pretrained="hub", image_size=32)


def _fake_hf_cache(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """The layout huggingface_hub leaves after downloading ``model.safetensors`` of ``repo_id``."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))


@pytest.mark.parametrize("mode", ["auto", "hub"])
def test_weights_in_the_hugging_face_cache_load_offline(tmp_path, monkeypatch, mode):
    from huggingface_hub import constants

    state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    _fake_hf_cache(tmp_path, "timm/efficientnet_b0.ra_in1k", state)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    bundle = create_model("efficientnet_b0", pretrained=mode, image_size=32)
    assert bundle.pretrained and bundle.weights_source == "ImageNet (hub cache, timm/efficientnet_b0.ra_in1k)"
    expected = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert _equal_states(bundle.model.backbone.state_dict(), expected)
    assert weights_module.describe_weights(bundle.spec) == "ImageNet (hub cache)"


def test_weights_in_the_torch_hub_cache_load_offline(tmp_path):
    """legacy_xception's weights have only a URL, so timm caches them under torch.hub's checkpoints directory."""
    state = timm.create_model("legacy_xception", pretrained=False).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / "xception-43020ad28.pth")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        bundle = create_model("xception", pretrained="auto", image_size=32)
    finally:
        torch.hub.set_dir(previous)
    assert bundle.weights_source == "ImageNet (hub cache, xception-43020ad28.pth)"
    torch.testing.assert_close(bundle.model.backbone.conv1.weight, state["conv1.weight"])


def test_describe_weights_without_network():
    from blastscope.models import get_spec

    assert weights_module.describe_weights(get_spec("cnn")) == "none (trains from scratch)"
    assert weights_module.describe_weights(get_spec("resnet50")) == "hub download (not cached; random init offline)"
