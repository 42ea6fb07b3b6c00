"""`blastscope ensemble` on two real tiny runs, then the ensemble through export (ONNX against PyTorch), predict,
Grad-CAM and serve's /health, as any run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from blastscope.api import load
from blastscope.cli import main
from blastscope.serving.app import create_app


@pytest.fixture(scope="module")
def ensemble_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny cnn runs (quick to train and to export) on different splits (seeds 0 and 1), as one ensemble."""
    from blastscope.training import TrainConfig, train

    out = tmp_path_factory.mktemp("cnn-runs")
    runs = [
        train(
            TrainConfig(
                data=str(synth_small), model="cnn", image_size=32, epochs_frozen=0, epochs_finetune=1, batch_size=16,
                num_workers=0, seed=seed, out=str(out), progress=False,
            )
        )
        for seed in (0, 1)
    ]  # fmt: skip
    assert main(["ensemble", *map(str, runs), "--out", str(out / "ens")]) == 0
    return out / "ens"


def test_the_command_lists_members_and_the_split(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", str(tiny_run), str(tiny_run_seed1), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"member 1: {tiny_run.resolve()} (efficientnet_lite0 (random init); ALL when")
    assert any(line.startswith("split: the members' shared split ") for line in lines)
    assert lines[-1] == f"wrote {out}: predict, evaluate, serve or export it like any run"


def test_a_refused_ensemble_is_one_line_and_exit_2(tiny_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["ensemble", str(tiny_run), "--out", str(tmp_path / "ens")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("blastscope: error: an ensemble needs at least 2 runs") and error.count("\n") == 1


def test_onnx_export_matches_pytorch_and_predict_serve_name_the_members(
    ensemble_run: Path, synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(ensemble_run), "--format", "onnx"]) == 0
    record = json.loads((ensemble_run / "export" / "export.json").read_text())
    # No held-out cells (members on different splits): the parity check runs on training cells.
    assert record["parity"]["split"] == "train" and record["parity"]["max_abs_logit_difference"] < 1e-4
    assert record["test_cells"] == 0 and record["model"] == "ensemble of 2 x cnn"
    cells = sorted(synth_small.rglob("*.png"))[::12]
    torch_p, onnx_p = (
        np.array([list(p.probabilities.values()) for p in load(ensemble_run, backend=b).predict(cells)])
        for b in ("torch", "onnx")
    )
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-5)

    capsys.readouterr()
    assert main(["predict", str(ensemble_run), *map(str, cells[:2]), "--gradcam", str(tmp_path / "cam")]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("ensemble of 2 x cnn (random init): 2 images, backend onnx")
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2

    health = TestClient(create_app(load(ensemble_run))).get("/health").json()
    assert health["model"] == "ensemble of 2 x cnn (random init)"
