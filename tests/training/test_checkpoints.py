"""Run files survive a kill or a full disk mid-write, an unwritable output stops `train` before any work, and a
moved run keeps its best checkpoint."""

from __future__ import annotations

import csv
import errno
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from blastscope.cli import main
from blastscope.errors import BlastscopeError
from blastscope.storage import write_atomically
from blastscope.training import engine
from blastscope.training.checkpoints import RunCheckpoint, ensure_writable

TINY = ["--model", "cnn", "--image-size", "32", "--batch-size", "16", "--num-workers", "0", "--no-progress"]


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("blastscope: error:")]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_write_cut_short_keeps_the_previous_file_and_leaves_no_temporary_one(
    tmp_path: Path, failure: BaseException
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(b"the previous, complete checkpoint")

    def cut_short(handle: object) -> None:
        handle.write(b"half of the new one")  # type: ignore[attr-defined]
        raise failure

    with pytest.raises(type(failure)):
        write_atomically(path, cut_short)
    assert path.read_bytes() == b"the previous, complete checkpoint"
    assert list(path.parent.iterdir()) == [path]


def test_a_moved_run_keeps_its_best_score_and_finds_its_checkpoints_in_the_new_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "run" / "checkpoints", tmp_path / "moved" / "checkpoints"
    options = {"filename": "best", "monitor": "val_loss", "mode": "min", "save_top_k": 1}
    saved = RunCheckpoint(dirpath=old, **options)
    best = str(Path(saved.dirpath) / "best.ckpt")
    saved.best_model_score, saved.best_model_path, saved.kth_best_model_path = torch.tensor(0.25), best, best
    saved.best_k_models, saved.kth_value = {best: torch.tensor(0.25)}, torch.tensor(0.25)
    state = saved.state_dict()

    restored = RunCheckpoint(dirpath=new, **options)
    restored.load_state_dict(state)
    moved_best = str(Path(restored.dirpath) / "best.ckpt")
    assert restored.best_model_score == 0.25 and restored.kth_value == 0.25
    assert restored.best_model_path == restored.kth_best_model_path == moved_best
    assert restored.best_k_models == {moved_best: 0.25}

    plain = ModelCheckpoint(dirpath=new, **options)  # what RunCheckpoint is for: Lightning forgets the best score
    with pytest.warns(UserWarning, match="dirpath has changed"):
        plain.load_state_dict(state)
    assert plain.best_model_score is None


@pytest.mark.parametrize(
    ("timed", "last_batch", "saves"), [(True, True, False), (True, False, True), (False, True, True)]
)
def test_a_timed_checkpoint_never_falls_on_the_last_batch_of_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timed: bool, last_batch: bool, saves: bool
) -> None:
    """Lightning would resume it as a finished epoch without validation, scheduler step or epoch-end checkpoints."""
    calls: list[int] = []
    monkeypatch.setattr(ModelCheckpoint, "on_train_batch_end", lambda self, *args: calls.append(1))
    when = {"train_time_interval": timedelta(minutes=1)} if timed else {"every_n_epochs": 1}
    checkpoint = RunCheckpoint(dirpath=tmp_path, filename="interval", **when)
    progress = SimpleNamespace(is_last_batch=last_batch)
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
    checkpoint.on_train_batch_end(trainer, None, None, None, 3)  # type: ignore[arg-type]
    assert bool(calls) == saves


@pytest.mark.parametrize("below", ["", "runs/new"])
def test_an_output_folder_that_cannot_be_written_stops_train_before_any_work(
    synth_small: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
    below: str,
) -> None:
    read_only(tmp_path)
    monkeypatch.setattr(engine, "scan_data", lambda config: pytest.fail("the data was scanned"))
    assert main(["train", "--data", str(synth_small), *TINY, "--out", str(tmp_path / below)]) == 2
    [line] = _error_lines(capsys)
    assert str(tmp_path) in line and "Read-only file system" in line and "--out" in line
    assert list(tmp_path.iterdir()) == []


def test_a_writable_folder_passes_the_probe_and_keeps_no_trace(tmp_path: Path) -> None:
    ensure_writable(tmp_path / "not" / "yet")
    ensure_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(BlastscopeError, match="not a folder"):
        ensure_writable(tmp_path / "file" / "runs")


def test_resuming_into_a_read_only_run_folder_fails_in_one_line(
    stopped_run: Path, read_only: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    read_only(stopped_run / "checkpoints")
    assert main(["train", "--resume", str(stopped_run)]) == 2
    [line] = _error_lines(capsys)
    assert str(stopped_run / "checkpoints") in line and "Read-only" in line and "--resume" in line


def test_a_disk_that_fills_during_training_ends_in_one_line_and_keeps_the_finished_epochs(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, save, saves = tmp_path / "run", torch.save, []

    def filling_up(obj: object, file: object, *args: object, **kwargs: object) -> None:
        saves.append(obj)
        if len(saves) <= 2:  # epoch 1's best.ckpt and last.ckpt
            save(obj, file, *args, **kwargs)
            return
        file.write(b"PK\x03\x04 part of a checkpoint")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", filling_up)
    epochs = ["--epochs-frozen", "1", "--epochs-finetune", "2"]
    assert main(["train", "--data", str(synth_small), *TINY, *epochs, "--run-dir", str(run_dir)]) == 2
    [line] = _error_lines(capsys)
    assert str(run_dir) in line and "No space left on device" in line and f"--resume {run_dir}`" in line
    monkeypatch.setattr(torch, "save", save)  # space was freed

    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    (checkpoints / ".last.ckpt.k1ll3d.tmp").write_bytes(b"PK\x03\x04")  # what a kill -9 mid-write leaves
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert len(list(csv.DictReader((run_dir / "history.csv").open()))) == 3
    assert (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
