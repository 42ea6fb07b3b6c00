"""Grad-CAM: the layer explained suits the input size, a map that shows nothing says so, and on real C-NMC cells with
the ImageNet-pretrained efficientnet_lite0 the heat lies on the cell."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blastscope.api.classifier import Classifier
from blastscope.data.cnmc import parse_name
from blastscope.data.transforms import eval_transform
from blastscope.inference import gradcam
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.gradcam import (
    MIN_MAP_SIDE,
    Explanation,
    explain,
    grad_cam,
    gradcam_target,
    is_flat,
    overlay_heatmap,
)
from blastscope.inference.predict import resized_pixels
from blastscope.inference.runners import TorchRunner
from blastscope.models import create_model
from blastscope.models.base import CellClassifier


def random_cell(size: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """A uint8 (size, size, 3) image with a bright disc on black, and its normalised one-image batch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    image = (disc[..., None] * rng.integers(120, 255, (size, size, 3))).astype(np.uint8)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    return image, batch


def test_inception_at_its_smallest_input_explains_a_layer_with_a_real_map() -> None:
    """At 75 px Inception-v3's last map (Mixed_7c) is 1x1: its Grad-CAM is all zero. Mixed_6e (3x3) is explained."""
    torch.manual_seed(0)
    model = create_model("inception_v3", pretrained="none", image_size=75).model
    layer = gradcam_target(model, 75, 75)
    assert (layer.preferred, layer.preferred_size) == ("Mixed_7c", (1, 1))
    assert (layer.name, layer.map_size, layer.note) == ("Mixed_6e", (3, 3), "")
    image, batch = random_cell(75)
    explanations = [explain(model, batch, image, target, label) for target, label in enumerate(("hem", "all"))]
    assert any(e.usable for e in explanations)
    for explanation in explanations:
        assert explanation.heatmap.shape == (75, 75) and explanation.map_size == (3, 3)
        assert explanation.layer == "Mixed_6e (3x3); Mixed_7c is 1x1 at 75x75 px"
        assert explanation.usable == (not is_flat(explanation.heatmap))
        if explanation.usable:
            assert explanation.heatmap.max() - explanation.heatmap.min() > 0.5 and explanation.note == ""
        else:
            assert explanation.note.startswith("no Grad-CAM")


@pytest.mark.parametrize(
    ("name", "size", "layer"),
    [("resnet50", 224, "layer4"), ("efficientnet_lite0", 224, "bn2"), ("cnn", 32, "block3.act")],
)
def test_a_comfortable_input_keeps_the_last_map(name: str, size: int, layer: str) -> None:
    model = create_model(name, pretrained="none", image_size=size).model
    choice = gradcam_target(model, size, size)
    assert choice.name == choice.preferred == layer and min(choice.map_size) >= MIN_MAP_SIDE
    assert choice.module is model.gradcam_layer()


def test_a_small_input_moves_to_the_deepest_map_large_enough() -> None:
    """EfficientNet at 32 px: bn2 is 1x1 and blocks.4 2x2, so the stride-8 map blocks.2 (4x4) is explained."""
    model = create_model("efficientnet_lite0", pretrained="none", image_size=32).model
    choice = gradcam_target(model, 32, 32)
    assert (choice.name, choice.map_size, choice.preferred_size) == ("blocks.2", (4, 4), (1, 1))
    assert gradcam_target(model, 64, 64).name == "blocks.4"
    assert gradcam_target(model, 96, 96).name == "bn2"
    assert gradcam_target(model, 32, 32) is choice  # measured once per input size


def test_measuring_the_maps_leaves_the_model_as_it_was() -> None:
    """The dry run neither moves batch-norm statistics nor changes any module's train/eval mode."""
    model = create_model("efficientnet_lite0", pretrained="none", image_size=48).model
    model.train()
    model.backbone.blocks[0].eval()  # e.g. a frozen stage during fine-tuning
    modes = [module.training for module in model.modules()]
    stats = {name: tensor.clone() for name, tensor in model.state_dict().items() if "running" in name}
    assert gradcam_target(model, 48, 48).name == "blocks.4"
    assert [module.training for module in model.modules()] == modes
    for name, tensor in model.state_dict().items():
        if name in stats:
            torch.testing.assert_close(tensor, stats[name])


class PooledOnly(CellClassifier):
    """A network whose only Grad-CAM candidate shrinks any input by 32: under 96 px its map is under 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(32, ceil_mode=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def gradcam_layer(self) -> nn.Module:
        return self.backbone[2]


def test_no_usable_layer_warns_once_and_the_empty_map_says_why(caplog: pytest.LogCaptureFixture) -> None:
    model = PooledOnly().eval()
    image, batch = random_cell(32)
    with caplog.at_level(logging.WARNING, logger="blastscope.inference.gradcam"):
        first = explain(model, batch, image, 1, "all", name="pooled-only")
        second = explain(model, batch, image, 0, "hem", name="pooled-only")
    (record,) = caplog.records  # one warning per model and input size, not one per image
    message = record.getMessage()
    assert "pooled-only" in message and "1x1" in message and "at least 65 px" in message
    for explanation in (first, second):
        assert not explanation.usable and is_flat(explanation.heatmap)
        assert explanation.note.startswith("no Grad-CAM: the explained map") and "single cell" in explanation.note
        assert "at least 65 px" in explanation.note


def test_a_constant_heatmap_is_never_a_silent_explanation() -> None:
    """Whoever builds an Explanation, an all-zero (or constant) map is marked unusable with a note."""
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    for heatmap in (np.zeros((8, 8), np.float32), np.full((8, 8), 0.4, np.float32)):
        explanation = Explanation("all", heatmap, overlay_heatmap(image, heatmap))
        assert not explanation.usable and "heat map is empty" in explanation.note
    ramp = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    good = Explanation("all", ramp, overlay_heatmap(image, ramp))
    assert good.usable and good.note == ""


def test_grad_cam_uses_the_size_aware_layer() -> None:
    """The bare heat map function explains the same layer as :func:`explain`."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", pretrained="none", image_size=32).model
    image, batch = random_cell(32)
    heatmap = grad_cam(model, batch, 1)
    np.testing.assert_allclose(heatmap, explain(model, batch, image, 1, "all").heatmap, atol=1e-6)


@pytest.mark.integration
def test_heat_concentrates_on_the_cell(cnmc_sample: Path) -> None:
    """With a head fitted to the sample (a random head points anywhere), the predicted class's heat is on the cell."""
    torch.manual_seed(0)
    bundle = create_model("efficientnet_lite0", num_classes=2, pretrained="auto", image_size=224)
    if not bundle.pretrained:
        pytest.skip(f"needs the offline ImageNet weights of efficientnet_lite0, got {bundle.weights_source}")
    model, pre = bundle.model.eval(), bundle.preprocessing
    files = sorted(cnmc_sample.rglob("UID_*"))
    images = torch.stack([eval_transform(pre)(resized_pixels(path, pre).pixels) for path in files])
    labels = torch.tensor([int(parse_name(path.name).label == "all") for path in files])
    with torch.no_grad():
        features = model.forward_features(images)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(100):  # a linear probe on the frozen ImageNet features
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.head(features), labels).backward()
        optimizer.step()

    point = OperatingPoint.default(("hem", "all"))
    classifier = Classifier(TorchRunner(model), model, pre, point, name="efficientnet_lite0")
    cell = sorted(cnmc_sample.rglob("UID_11_1_1_all.*"))[0]
    assert classifier.predict(cell)[0].label == "all"
    explanation = classifier.explain(cell)
    assert explanation.usable
    resized = resized_pixels(cell, pre).pixels
    on_cell = resized.sum(axis=2) > 30  # C-NMC cells are segmented onto a black background
    assert 0.1 < on_cell.mean() < 0.9
    assert explanation.heatmap[on_cell].mean() > 2 * explanation.heatmap[~on_cell].mean()
    overlay = np.asarray(explanation.overlay)
    assert overlay.shape == resized.shape and not np.array_equal(overlay, resized)


def test_an_empty_map_of_a_network_with_a_measurements_member_says_the_map_is_not_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the call rests on the cell's measured size and colour, no region need raise it: the note says so."""
    model = create_model("efficientnet_lite0_measured", pretrained="none", image_size=64).model.eval()
    monkeypatch.setattr(gradcam, "_heatmap", lambda *args: np.zeros((64, 64), np.float32))
    image = np.zeros((64, 64, 3), np.uint8)
    explanation = explain(model, torch.zeros(1, 3, 64, 64), image, 0, "hem")
    assert not explanation.usable and "measured size and colour" in model.unmapped_evidence
    assert explanation.note.endswith("; " + model.unmapped_evidence)
