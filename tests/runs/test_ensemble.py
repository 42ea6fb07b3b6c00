"""EnsembleNetwork: the log of the mean of its members' temperature-scaled probabilities, each member fed its own
normalisation, as one network that every consumer of logits (the API, ONNX, Grad-CAM) takes unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import blastscope
from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.export.onnx import export_onnx
from blastscope.inference.runners import ONNX_INPUT
from blastscope.models import create_model
from blastscope.runs import load_run
from blastscope.runs.ensemble import EnsembleNetwork, ensemble_name, input_affine
from blastscope.workflows.ensemble import make_ensemble

LITE = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
IMAGENET = Preprocessing(input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _cnn(seed: int, size: int = 32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("cnn", num_classes=2, pretrained="none", image_size=size).model.eval()


def test_output_is_the_log_of_the_mean_calibrated_probability_with_each_members_normalisation() -> None:
    members, temperatures = [_cnn(0), _cnn(1)], [0.7, 2.5]
    network = EnsembleNetwork(members, temperatures, LITE, [LITE, IMAGENET]).eval()
    values = torch.rand(4, 3, 32, 32)  # the image on the [0, 1] scale

    def normalised(pre: Preprocessing) -> torch.Tensor:
        return (values - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)

    with torch.no_grad():
        expected = torch.stack(
            [
                torch.softmax(member(normalised(pre)) / t, dim=1)
                for member, pre, t in zip(members, (LITE, IMAGENET), temperatures, strict=True)
            ]
        ).mean(0)
        output = network(normalised(LITE))
    assert output.shape == (4, 2)
    torch.testing.assert_close(torch.softmax(output, dim=1), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(output.exp().sum(1), torch.ones(4), atol=1e-6, rtol=0)  # log-probabilities


def test_onnx_export_of_members_with_other_normalisations_and_temperatures_matches_pytorch(tmp_path: Path) -> None:
    network = EnsembleNetwork([_cnn(0), _cnn(1)], [0.7, 2.5], LITE, [LITE, IMAGENET]).eval()
    path = export_onnx(network, LITE, tmp_path / "ensemble.onnx")
    batch = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = network(batch).numpy()
    found = ort.InferenceSession(str(path)).run(None, {ONNX_INPUT: batch.numpy()})[0]
    np.testing.assert_allclose(found, expected, atol=1e-5)


def test_a_member_trained_smaller_gets_the_input_resized_inside_the_network_and_exports_alike(tmp_path: Path) -> None:
    smaller = replace(IMAGENET, input_size=24, interpolation="bicubic")
    ensemble_pre = replace(LITE, interpolation="bicubic")
    members = [_cnn(0), _cnn(1, size=24)]
    network = EnsembleNetwork(members, [1.0, 1.5], ensemble_pre, [ensemble_pre, smaller]).eval()
    batch = torch.randn(3, 3, 32, 32)
    scale, shift = (torch.tensor(v).view(1, 3, 1, 1) for v in input_affine(ensemble_pre, smaller))
    resized = torch.nn.functional.interpolate(batch * scale + shift, size=(24, 24), mode="bicubic", antialias=True)
    with torch.no_grad():
        expected = torch.stack(
            [torch.softmax(members[0](batch), dim=1), torch.softmax(members[1](resized) / 1.5, dim=1)]
        ).mean(0)
        output = network(batch)
    torch.testing.assert_close(torch.softmax(output, dim=1), expected, atol=1e-6, rtol=0)
    path = export_onnx(network, ensemble_pre, tmp_path / "ensemble.onnx")
    found = ort.InferenceSession(str(path)).run(None, {ONNX_INPUT: batch.numpy()})[0]
    np.testing.assert_allclose(found, output.numpy(), atol=1e-5)


def test_a_member_larger_than_the_ensembles_input_is_refused() -> None:
    with pytest.raises(BlastscopeError, match=r"member input sizes \[32, 48\] exceed the ensemble's 32 px"):
        EnsembleNetwork([_cnn(0), _cnn(1)], [1.0, 1.0], LITE, [LITE, replace(LITE, input_size=48)])


def test_the_input_affine_is_the_identity_for_the_same_normalisation() -> None:
    assert input_affine(LITE, LITE) == ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])


def test_an_ensemble_is_not_trained_and_explains_its_first_member() -> None:
    members = [_cnn(0), _cnn(1)]
    network = EnsembleNetwork(members, [1.0, 1.0], LITE, [LITE, LITE])
    assert network.gradcam_layers() == members[0].gradcam_layers()
    with pytest.raises(BlastscopeError, match="an ensemble is not trained"):
        network.stages()
    with pytest.raises(BlastscopeError, match="at least 2 members"):
        EnsembleNetwork(members[:1], [1.0], LITE, [LITE])


def test_load_predicts_the_mean_of_the_members_calibrated_probabilities(
    tiny_run_copy: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    member = load_run(tiny_run_copy)
    member.save_operating_point(replace(member.operating_point, temperature=1.8, split="val", n_cells=16))
    out = make_ensemble([tiny_run_copy, tiny_run_seed1], tmp_path / "ens", log=lambda _: None)
    images = [Image.open(cell.path) for cell in member.split.parts["test"][:6]]
    expected = np.mean(
        [
            [list(p.probabilities.values()) for p in blastscope.load(run, backend="torch").predict(images)]
            for run in (tiny_run_copy, tiny_run_seed1)
        ],
        axis=0,
    )  # each member at its own stored temperature: 1.8 and 1.0
    ensemble = blastscope.load(out, backend="torch")
    found = [list(p.probabilities.values()) for p in ensemble.predict(images)]
    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert ensemble.name == ensemble_name(load_run(out).config, weights=True)
    assert ensemble.name == "ensemble of 2 x efficientnet_lite0 (random init)"


def test_moving_and_deleting_the_members_keeps_the_ensemble_loading(
    tiny_run_copy: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    made = make_ensemble([tiny_run_copy, tiny_run_seed1], tmp_path / "ens", log=lambda _: None)
    before = load_run(made)
    batch = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        expected = before.model(batch)
    moved = made.rename(tmp_path / "moved")
    for path in tiny_run_copy.rglob("*.ckpt"):
        path.unlink()
    with torch.no_grad():
        torch.testing.assert_close(load_run(moved).model(batch), expected, atol=0, rtol=0)


def test_last_is_refused_for_an_ensemble_in_one_line(tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path) -> None:
    made = make_ensemble([tiny_run, tiny_run_seed1], tmp_path / "ens", log=lambda _: None)
    with pytest.raises(BlastscopeError, match="drop --checkpoint last") as caught:
        load_run(made, "last")
    assert "\n" not in str(caught.value)
