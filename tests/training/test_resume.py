"""resume(run_dir): a multi-worker run stopped at any point, in either phase, and resumed (also from a moved folder)
ends bit-identical to an uninterrupted one; a run whose data changed since is refused, one whose data path no longer
resolves says how to point it at its data, and a finished one is left as it is; the run, not the request, says where
its weights came from."""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml

from blastscope.data.datamodule import BalancedEpochSampler
from blastscope.errors import DataError
from blastscope.training import TrainConfig, engine, resume, train
from blastscope.training import trainer as trainer_module
from blastscope.training.trainer import INTERVAL_CHECKPOINT

TIMINGS = {"epoch_seconds", "train_seconds", "fit_seconds_this_process", "images_per_second"}


class _Killed(Exception):
    """Stands for SIGKILL: the process's state is dropped and only what is on disk carries over."""


class _Kill(L.Callback):
    """Stops fitting once the checkpoint of a point is on disk: the mid-epoch ``interval.ckpt`` after batch
    ``batch`` of ``epoch``, or with ``batch`` None the epoch-end ``last.ckpt`` of ``epoch``."""

    def __init__(self, epoch: int, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, index: int) -> None:
        if (trainer.current_epoch, index) == (self.epoch, self.batch):  # the timed checkpoint is due now
            interval = next(cb for cb in trainer.checkpoint_callbacks if cb.filename == INTERVAL_CHECKPOINT)
            interval._last_time_checked = -math.inf

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, index: int) -> None:
        if self.batch is not None and (trainer.current_epoch, index) == (self.epoch, self.batch + 1):
            raise _Killed

    def on_train_epoch_start(self, trainer: L.Trainer, module: Any) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch + 1:
            raise _Killed


def _killed_at(monkeypatch: pytest.MonkeyPatch, kill: _Kill, fit: Callable[[], Path]) -> None:
    built = trainer_module.build_callbacks
    monkeypatch.setattr(trainer_module, "build_callbacks", lambda *args: [*built(*args), kill])
    with pytest.raises(_Killed):
        fit()
    monkeypatch.setattr(trainer_module, "build_callbacks", built)


def _weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def _record(run_dir: Path) -> tuple[Any, Any]:
    history = [_without_timings(row) for row in csv.DictReader((run_dir / "history.csv").open())]
    return history, _without_timings(json.loads((run_dir / "metrics.json").read_text()))


def test_a_multi_worker_run_stopped_anywhere_resumes_bit_identical(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both phases of a pretrained model with the default DataLoader workers, stopped mid-epoch (from the timed
    checkpoint) and at epoch ends, once after the run folder was moved, against one uninterrupted run."""
    config = TrainConfig(
        data=str(synth_small),
        model="efficientnet_lite0",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=2,
        batch_size=8,
        checkpoint_minutes=60,  # written only when a _Kill makes it due
        out=str(tmp_path),
        progress=False,
    )
    assert config.num_workers == TrainConfig().num_workers > 0
    whole = train(config, run_dir=tmp_path / "whole")
    assert yaml.safe_load((whole / "config.yaml").read_text())["weights_pretrained"]  # two phases

    stopped = tmp_path / "stopped"
    _killed_at(monkeypatch, _Kill(0, batch=2), lambda: train(config, run_dir=stopped))  # phase 1, mid-epoch
    _killed_at(monkeypatch, _Kill(0), lambda: resume(stopped))  # the phase change
    _killed_at(monkeypatch, _Kill(1, batch=3), lambda: resume(stopped))  # phase 2, mid-epoch
    moved = Path(shutil.move(stopped, tmp_path / "moved" / "renamed"))
    _killed_at(monkeypatch, _Kill(1), lambda: resume(moved))  # phase 2, epoch end, in the moved folder
    assert not (moved / "metrics.json").exists()
    resume(moved)

    assert _record(moved) == _record(whole)
    assert [row["phase"] for row in _record(moved)[0]] == ["frozen", "finetune", "finetune"]
    for name in ("last", "best"):
        expected, got = _weights(whole, name), _weights(moved, name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key], got[key]) for key in expected), name


def test_a_class_balanced_run_stopped_mid_epoch_resumes_bit_identical(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--class-balance sampler on classes 2:1, stopped mid-epoch in the cached-features phase and in fine-tuning."""
    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    for path in data.rglob("*_2_hem.png"):  # half of every normal subject's cells: 48 ALL, 24 HEM
        path.unlink()
    samplers: list[BalancedEpochSampler] = []
    build = BalancedEpochSampler.__init__

    def recorded(sampler: BalancedEpochSampler, *args: Any, **kwargs: Any) -> None:
        build(sampler, *args, **kwargs)
        samplers.append(sampler)

    monkeypatch.setattr(BalancedEpochSampler, "__init__", recorded)
    config = TrainConfig(
        data=str(data),
        model="efficientnet_lite0",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=1,
        batch_size=8,
        num_workers=0,
        class_balance="sampler",
        checkpoint_minutes=60,
        out=str(tmp_path),
        progress=False,
    )
    whole = train(config, run_dir=tmp_path / "whole")
    assert yaml.safe_load((whole / "config.yaml").read_text())["class_balance"] == "sampler"
    assert len(samplers) == 2  # the cached features' loader and the images' loader
    assert all(len(sampler.members[0]) != len(sampler.members[1]) for sampler in samplers)

    stopped = tmp_path / "stopped"
    _killed_at(monkeypatch, _Kill(0, batch=1), lambda: train(config, run_dir=stopped))  # phase 1, mid-epoch
    _killed_at(monkeypatch, _Kill(1, batch=2), lambda: resume(stopped))  # phase 2, mid-epoch
    resume(stopped)

    assert _record(stopped) == _record(whole)
    for name in ("last", "best"):
        expected, got = _weights(whole, name), _weights(stopped, name)
        assert all(torch.equal(expected[key], got[key]) for key in expected), name


@pytest.mark.parametrize(
    ("key", "value", "words"), [("classes", ["x", "y"], "classes"), ("split_hash", "0" * 16, "split.csv")]
)
def test_resume_refuses_data_that_changed_since_the_run(stopped_run: Path, key: str, value: object, words: str) -> None:
    from blastscope.training import resume

    path = stopped_run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config[key] = value
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match=words) as caught:
        resume(stopped_run)
    assert str(stopped_run) in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_recorded_before_split_contents_were_resumes_as_before(stopped_run: Path) -> None:
    path = stopped_run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    del config["split_content_hash"]
    path.write_text(yaml.safe_dump(config))

    assert resume(stopped_run) == stopped_run
    assert (stopped_run / "metrics.json").is_file()


def test_resume_refuses_images_redrawn_under_the_names_split_csv_records(
    stopped_run: Path, synth_small: Path, tmp_path: Path
) -> None:
    from blastscope.data.synth import synthesize

    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    path = stopped_run / "config.yaml"
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "data": str(data)}))  # the data moved: still the run's images
    drawn = json.loads((data / "blastscope-synth.json").read_text())
    sizes = ("subjects_per_class", "cells_per_subject", "image_size", "separation")
    synthesize(data, **{key: drawn[key] for key in sizes}, seed=drawn["seed"] + 1)  # the same file names, other cells
    rows = (stopped_run / "split.csv").read_text().count("\n") - 1

    with pytest.raises(DataError, match=rf"{rows} of the {rows} images in its split\.csv are not in {data} ") as caught:
        resume(stopped_run)
    assert str(stopped_run) in str(caught.value) and "\n" not in str(caught.value)


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


def test_a_finished_run_is_left_as_it_is(tiny_run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resuming a run that trained to its end says so and changes nothing: fitting again from its last checkpoint
    would only rewrite metrics.json, without the validation cells it never read again."""
    files = {path: path.read_bytes() for path in sorted(tiny_run_copy.rglob("*")) if path.is_file()}

    assert resume(tiny_run_copy) == tiny_run_copy
    assert {path: path.read_bytes() for path in sorted(tiny_run_copy.rglob("*")) if path.is_file()} == files
    assert f"{tiny_run_copy} finished training already" in capsys.readouterr().err


def test_a_run_stopped_while_scoring_resumes_to_the_metrics_of_the_whole_run(stopped_run: Path, tiny_run: Path) -> None:
    """No epoch is left to fit, so no validation cells are read by fitting: metrics.json still counts them."""
    resume(stopped_run)
    assert _record(stopped_run) == _record(tiny_run)
    assert set(json.loads((stopped_run / "metrics.json").read_text())["data"]["segmented"]) == {"train", "val", "test"}


def test_a_run_stopped_before_its_first_checkpoint_says_it_starts_again(
    stopped_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for checkpoint in (stopped_run / "checkpoints").iterdir():
        checkpoint.unlink()
    monkeypatch.setattr(engine, "_fit", lambda prepared, resume_from, logs: resume_from)  # what resume fits from

    assert resume(stopped_run) is None
    assert f"{stopped_run}: no checkpoint was written before it stopped, so training starts from the first epoch" in (
        capsys.readouterr().err
    )


def test_a_run_that_finishes_keeps_no_mid_epoch_checkpoint(stopped_run: Path) -> None:
    """interval.ckpt serves only the resume of an unfinished run: at the end the epoch-end checkpoints remain."""
    checkpoints = stopped_run / "checkpoints"
    shutil.copyfile(checkpoints / "last.ckpt", checkpoints / f"{INTERVAL_CHECKPOINT}.ckpt")

    resume(stopped_run)
    assert (stopped_run / "metrics.json").is_file()
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_resume_keeps_the_earlier_log_and_warns_about_nothing(stopped_run: Path) -> None:
    """Lightning warns that the checkpoint folder is not empty (it is the run's own) and its CSV logger deletes the
    logs/metrics.csv it finds, saying so: a resumed fit logs into a folder of its own instead."""
    log = (stopped_run / "logs" / "metrics.csv").read_bytes()
    step = torch.load(stopped_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resume(stopped_run)
    assert not [str(warning.message) for warning in caught if "exists and is not empty" in str(warning.message)]
    assert (stopped_run / "logs" / "metrics.csv").read_bytes() == log
    assert (stopped_run / "logs" / f"resumed-at-step-{step}" / "hparams.yaml").is_file()


def test_a_moved_run_with_a_relative_data_path_resumes_from_where_it_was_started_or_says_how(
    stopped_run: Path, synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs recorded their data as typed before it was recorded absolute: relative to the folder they started in."""
    started_in = tmp_path / "project"
    shutil.copytree(synth_small, started_in / "cells")
    path = stopped_run / "config.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "data": "cells"}))
    moved = Path(shutil.move(stopped_run, tmp_path / "elsewhere" / "moved"))

    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(DataError) as caught:
        resume(Path("moved"))
    message = str(caught.value)
    assert f"is not at {tmp_path / 'elsewhere' / 'cells'} (moved/config.yaml records it as 'cells'" in message
    assert "resume from that folder, or set data: in moved/config.yaml" in message and "\n" not in message
    assert not (moved / "metrics.json").exists()

    monkeypatch.chdir(started_in)
    assert resume(moved) == moved
    assert (moved / "metrics.json").is_file()
