"""Two-process DDP on CPU (gloo): both ranks train one run; rank 0 alone writes the results."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.parametrize(("model", "size"), [("efficientnet_lite0", 32), ("efficientnet_lite0_measured", 64)])
def test_two_process_ddp_on_cpu_trains_one_run(model: str, size: int, synth_small: Path, tmp_path: Path) -> None:
    """The measured model's members are tempered on every rank's validation cells, gathered (no rank sees them all)."""
    out = tmp_path / "runs"
    command = [
        sys.executable, "-m", "blastscope", "train",
        "--data", str(synth_small), "--model", model, "--image-size", str(size),
        "--epochs-frozen", "1", "--epochs-finetune", "1", "--batch-size", "4", "--num-workers", "0",
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out), "--no-progress",
        "--no-cached-features",  # phase 1 on sharded, augmented images through the frozen backbone
    ]  # fmt: skip
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = out.iterdir()  # the worker rank joined the launcher's run directory instead of making its own
    assert result.stdout.split() == [str(run_dir)] * 2  # both ranks ran the command and trained the same run
    with (run_dir / "history.csv").open() as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["frozen", "finetune"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == metrics["data"]["parts"]["test"]
    per_rank = math.ceil(metrics["data"]["parts"]["train"] / 2)  # each rank trains on its half of every epoch
    assert metrics["training"]["images_seen"] == 2 * per_rank * 2
    if model == "efficientnet_lite0_measured":
        checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
        temperatures = checkpoint["state_dict"]["model.head.member_temperatures"]
        assert torch.isfinite(temperatures).all() and not torch.equal(temperatures, torch.ones(2))
        assert metrics["training"]["member_temperatures"] == temperatures.tolist()  # reported where a person reads
    else:
        assert "member_temperatures" not in metrics["training"]
