"""Grad-CAM on real C-NMC cells with the ImageNet-pretrained efficientnet_lite0: the heat lies on the cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blastscope.data.images import read_rgb
from blastscope.evaluation.inference import resize_image
from blastscope.models import create_model
from blastscope.serving.predictor import Classifier


@pytest.mark.integration
def test_heat_concentrates_on_the_cell(cnmc_sample: Path) -> None:
    bundle = create_model("efficientnet_lite0", num_classes=2, pretrained="auto", image_size=224)
    if not bundle.pretrained:
        pytest.skip(f"needs the offline ImageNet weights of efficientnet_lite0, got {bundle.weights_source}")
    classifier = Classifier(bundle.model, bundle.preprocessing, ("hem", "all"), name="efficientnet_lite0")
    cell = sorted(cnmc_sample.rglob("UID_11_1_1_all.png"))[0]
    explanation = classifier.explain(cell)
    resized = resize_image(read_rgb(cell), bundle.preprocessing)
    on_cell = resized.sum(axis=2) > 30  # C-NMC cells are segmented onto a black background
    assert 0.1 < on_cell.mean() < 0.9
    assert explanation.heatmap[on_cell].mean() > 2 * explanation.heatmap[~on_cell].mean()
    overlay = np.asarray(explanation.overlay)
    assert overlay.shape == resized.shape and not np.array_equal(overlay, resized)
