"""resume(run_dir): a run killed with SIGKILL mid-epoch resumes to the uninterrupted run's final metrics; a run whose
data changed since is refused; the run, not the request, says where its weights came from."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from blastscope.errors import DataError


def _train_command(data: Path, run_dir: Path, checkpoint_minutes: float) -> list[str]:
    return [
        sys.executable, "-m", "blastscope", "train",
        "--data", str(data), "--model", "efficientnet_lite0", "--image-size", "32",
        "--epochs-frozen", "1", "--epochs-finetune", "2", "--batch-size", "4", "--num-workers", "1",
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


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(synth_small: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_command(synth_small, whole, 0), env=_environment(), check=True, capture_output=True)

    _kill_in_second_epoch(_train_command(synth_small, killed, 0.002), killed)
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


@pytest.mark.parametrize(
    ("key", "value", "words"), [("classes", ["x", "y"], "classes"), ("split_hash", "0" * 16, "split.csv")]
)
def test_resume_refuses_data_that_changed_since_the_run(
    tiny_run_copy: Path, key: str, value: object, words: str
) -> None:
    from blastscope.training import resume

    path = tiny_run_copy / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[key] = value
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match=words) as caught:
        resume(tiny_run_copy)
    assert str(tiny_run_copy) in str(caught.value) and "\n" not in str(caught.value)


def test_resume_takes_pretrainedness_from_the_run_not_the_request(tiny_run_copy: Path) -> None:
    from blastscope.data.discover import scan_dataset
    from blastscope.training.config import TrainConfig as Config
    from blastscope.training.engine import _resumed_model

    recorded = yaml.safe_load((tiny_run_copy / "config.yaml").read_text())
    recorded.update(pretrained=str(tiny_run_copy / "deleted.pth"), weights_pretrained=True, weights_source="gone")
    config = Config.from_dict(recorded)
    table = scan_dataset(Path(recorded["data"]))
    bundle = _resumed_model(config, table, recorded, tiny_run_copy, from_checkpoint=True)
    assert bundle.pretrained and bundle.weights_source == "gone"
