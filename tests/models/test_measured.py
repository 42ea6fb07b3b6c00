"""efficientnet_lite0_measured: the network's and the measurements' probabilities averaged inside one network."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from blastscope.data.images import read_rgb
from blastscope.models.measured import Z_LIMIT, AveragedMembersHead, MeasuredTimmClassifier
from blastscope.models.measurements import NAMES, CellMeasurements

NAME = "efficientnet_lite0_measured"


@pytest.fixture
def cells(cnmc_sample: Path) -> torch.Tensor:
    """Two real cells resized to 64 px, RGB in [0, 1], ``(2, 3, 64, 64)``."""
    paths = [sorted(cnmc_sample.rglob(f"*_{label}.*"))[0] for label in ("all", "hem")]
    images = np.stack([np.asarray(read_rgb(path).resize((64, 64))) for path in paths])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def test_the_output_is_the_log_of_the_mean_of_the_members_probabilities() -> None:
    torch.manual_seed(0)
    head = AveragedMembersHead(network_features=5, num_classes=3).eval()
    features = torch.randn(4, 5 + len(NAMES)) * 10
    members = head.member_logits(features)
    assert [logits.shape for logits in members] == [(4, 3), (4, 3)]
    expected = (members[0].softmax(1) + members[1].softmax(1)) / 2
    torch.testing.assert_close(head(features).softmax(1), expected)
    torch.testing.assert_close(head(features).exp(), expected)


def test_each_member_is_divided_by_its_temperature_before_the_average(bundle_of) -> None:
    torch.manual_seed(0)
    model = copy.deepcopy(bundle_of(NAME).model)  # the session's build stays untempered
    head = model.head
    model.set_member_temperatures([0.5, 2.0])
    features = torch.randn(4, model.backbone.num_features + len(NAMES)) * 10
    network, measured = head.member_logits(features)
    expected = ((network / 0.5).softmax(1) + (measured / 2.0).softmax(1)) / 2
    torch.testing.assert_close(head(features).exp(), expected)
    torch.testing.assert_close(model.combine_members([network, measured]), head(features))


def test_weights_saved_before_the_temperatures_existed_load_as_they_scored_untempered() -> None:
    head = AveragedMembersHead(network_features=5, num_classes=2)
    saved = {key: value for key, value in head.state_dict().items() if key != "member_temperatures"}
    head.member_temperatures.fill_(3.0)
    head.load_state_dict(saved)
    assert head.member_temperatures.tolist() == [1.0, 1.0]


def test_the_features_are_the_pooled_map_and_the_measurements_of_the_rgb_input(bundle_of, cells) -> None:
    bundle = bundle_of(NAME)
    model, pre = bundle.model, bundle.preprocessing
    assert isinstance(model, MeasuredTimmClassifier) and model.input_channels == ("rgb",)
    normalised = (cells - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        features = model.forward_features(normalised)
        pooled = model.pool(model.backbone.forward_features(normalised))
    width = model.backbone.num_features
    assert features.shape == (2, width + len(NAMES)) and features.dtype == torch.float32
    torch.testing.assert_close(features[:, :width], pooled)
    torch.testing.assert_close(features[:, width:], CellMeasurements()(cells), rtol=1e-4, atol=1e-3)
    assert features[:, width].min() > 500  # the cells' areas in px: a cell was found in each


def test_the_members_are_what_training_fits_and_the_output_averages(bundle_of, images_for) -> None:
    model = bundle_of(NAME).model
    with torch.no_grad():
        features = model.forward_features(images_for(NAME, batch=2))
        members = model.forward_members(features)
        torch.testing.assert_close(model.forward_head(features).exp(), sum(m.softmax(1) for m in members) / 2)


def test_measurements_far_outside_the_training_cells_are_clipped() -> None:
    """A white square's relative IQR reached 10^6 s.d.: the perceptron sees at most Z_LIMIT."""
    head = AveragedMembersHead(network_features=4, num_classes=2).eval()
    head.measurements[0].running_mean.zero_()
    head.measurements[0].running_var.fill_(1.0)
    near, far = torch.zeros(1, 4 + len(NAMES)), torch.zeros(1, 4 + len(NAMES))
    near[0, 4], far[0, 4] = Z_LIMIT, 1e6
    with torch.no_grad():
        torch.testing.assert_close(head.member_logits(far)[1], head.member_logits(near)[1])
