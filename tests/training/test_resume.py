"""Killing a training process with SIGKILL mid-epoch and resuming it gives the uninterrupted run's final metrics."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch


def _train_command(data: Path, run_dir: Path, checkpoint_minutes: float) -> list[str]:
    return [
        sys.executable, "-m", "blastscope", "train",
        "--data", str(data), "--model", "efficientnet_lite0", "--image-size", "32",
        "--epochs-frozen", "1", "--epochs-finetune", "2", "--batch-size", "2", "--num-workers", "1",
        "--checkpoint-minutes", str(checkpoint_minutes), "--run-dir", str(run_dir), "--no-progress",
    ]  # fmt: skip


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _finished_epochs(run_dir: Path) -> int:
    try:
        with (run_dir / "history.csv").open() as handle:
            return len(list(csv.DictReader(handle)))
    except FileNotFoundError:
        return 0


def _kill_in_second_epoch(command: list[str], run_dir: Path) -> None:
    """SIGKILL once epoch 1 (the frozen phase) is checkpointed and a mid-epoch checkpoint of epoch 2 exists."""
    process = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    interval = run_dir / "checkpoints" / "interval.ckpt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (
            _finished_epochs(run_dir) == 1
            and interval.exists()
            and interval.stat().st_mtime > (run_dir / "history.csv").stat().st_mtime
        ):
            break
        time.sleep(0.02)
    assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read().decode()[-2000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _finished_epochs(run_dir) == 1 and not (run_dir / "metrics.json").exists()


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tiny_cells: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_command(tiny_cells, whole, 0), env=_environment(), check=True, capture_output=True)

    _kill_in_second_epoch(_train_command(tiny_cells, killed, 0.002), killed)
    resumed = subprocess.run(
        [sys.executable, "-m", "blastscope", "train", "--resume", str(killed)],
        env=_environment(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = json.loads((whole / "metrics.json").read_text())["test"]
    assert json.loads((killed / "metrics.json").read_text())["test"] == expected
    assert [row["phase"] for row in csv.DictReader((killed / "history.csv").open())] == [
        "frozen",
        "finetune",
        "finetune",
    ]
    for name in ("best", "last"):
        a = torch.load(whole / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]
        b = torch.load(killed / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[key], b[key]) for key in a), name
