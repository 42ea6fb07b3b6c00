"""Grad-CAM on real C-NMC cells with the ImageNet-pretrained efficientnet_lite0: the heat lies on the cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from blastscope.api.classifier import Classifier
from blastscope.data.cnmc import parse_name
from blastscope.data.images import read_rgb
from blastscope.data.transforms import eval_transform
from blastscope.inference.predict import resize_image
from blastscope.models import create_model


@pytest.mark.integration
def test_heat_concentrates_on_the_cell(cnmc_sample: Path) -> None:
    """With a head fitted to the sample (a random head points anywhere), the predicted class's heat is on the cell."""
    torch.manual_seed(0)
    bundle = create_model("efficientnet_lite0", num_classes=2, pretrained="auto", image_size=224)
    if not bundle.pretrained:
        pytest.skip(f"needs the offline ImageNet weights of efficientnet_lite0, got {bundle.weights_source}")
    model, pre = bundle.model.eval(), bundle.preprocessing
    files = sorted(cnmc_sample.rglob("UID_*"))
    images = torch.stack([eval_transform(pre)(resize_image(read_rgb(path), pre)) for path in files])
    labels = torch.tensor([int(parse_name(path.name).label == "all") for path in files])
    with torch.no_grad():
        features = model.forward_features(images)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(100):  # a linear probe on the frozen ImageNet features
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.head(features), labels).backward()
        optimizer.step()

    classifier = Classifier(model, pre, ("hem", "all"), name="efficientnet_lite0")
    cell = sorted(cnmc_sample.rglob("UID_11_1_1_all.*"))[0]
    assert classifier.predict(cell)[0].label == "all"
    explanation = classifier.explain(cell)
    resized = resize_image(read_rgb(cell), pre)
    on_cell = resized.sum(axis=2) > 30  # C-NMC cells are segmented onto a black background
    assert 0.1 < on_cell.mean() < 0.9
    assert explanation.heatmap[on_cell].mean() > 2 * explanation.heatmap[~on_cell].mean()
    overlay = np.asarray(explanation.overlay)
    assert overlay.shape == resized.shape and not np.array_equal(overlay, resized)
