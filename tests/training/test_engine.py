"""train(config) end to end on the synthetic cells: the run directory and what load_run reads back, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from blastscope.cli import main
from blastscope.data.discover import scan_dataset
from blastscope.data.split import make_split, write_split_csv
from blastscope.errors import DataError
from blastscope.evaluation.run_evaluation import evaluate_run
from blastscope.inference.decision import TEMPERATURE_BOUNDS, temperature_bound_warning
from blastscope.models.measured import MeasuredTimmClassifier
from blastscope.runs import load_run
from blastscope.training import TrainConfig, train
from blastscope.training import trainer as trainer_module
from blastscope.training.config import SplitConfig


def test_a_run_directory_holds_everything_downstream_needs(tiny_config: Callable[..., TrainConfig]) -> None:
    run_dir = train(tiny_config())
    assert run_dir.name.endswith("-efficientnet_lite0")
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt"}

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["classes"] == ["hem", "all"]
    assert config["weights_pretrained"] is True and "ImageNet" in config["weights_source"]
    assert config["preprocessing"]["input_size"] == 32 and len(config["split_hash"]) > 6
    assert {"torch", "lightning", "timm", "blastscope"} <= set(config["versions"])
    assert config["resolved_precision"] in ("bf16-mixed", "32-true")
    assert config["augmentation"]["rotation"] is True and "stain_norm" in config["augmentation"]  # every switch

    with (run_dir / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert list(history[0]) == [
        "epoch",
        "phase",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "val_weighted_f1",
        "lr",
        "epoch_seconds",
    ]
    assert [(row["epoch"], row["phase"]) for row in history] == [("1", "frozen"), ("2", "finetune")]
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())  # each phase starts at its recorded rate
    assert float(history[0]["lr"]) == pytest.approx(recipe["lr_head"])
    assert float(history[1]["lr"]) == pytest.approx(recipe["lr_finetune"]) != recipe["lr_head"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == metrics["data"]["parts"]["test"] > 0
    assert metrics["training"]["images_per_second"] > 0 and metrics["data"]["skipped_files"] == 0

    for name in ("best", "last"):
        checkpoint = torch.load(run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)
        assert any(key.startswith("model.") for key in checkpoint["state_dict"])

    trained = load_run(run_dir)
    assert trained.display_name == "efficientnet_lite0 (pretrained)"
    assert not trained.model.training and trained.classes == ("hem", "all")
    assert (trained.split.hash, trained.split.content_hash) == (config["split_hash"], config["split_content_hash"])
    with torch.no_grad():
        assert trained.model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_a_head_member_tempered_to_a_bound_of_its_fit_is_announced(
    tiny_config: Callable[..., TrainConfig], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A member at T = 20 is all but uniform: the average is then the other member alone, which the line says."""
    monkeypatch.setattr(MeasuredTimmClassifier, "member_temperatures", lambda self: (TEMPERATURE_BOUNDS[1], 0.8))
    run_dir = train(tiny_config(model="efficientnet_lite0_measured", epochs_finetune=0))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["member_temperatures"] == [TEMPERATURE_BOUNDS[1], 0.8]
    upper = temperature_bound_warning(TEMPERATURE_BOUNDS[1], metrics["data"]["parts"]["val"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: head member")]
    assert warnings == [f"warning: head member 1 of 2: {upper}"], warnings


def test_random_init_trains_all_layers_in_one_phase(tiny_config: Callable[..., TrainConfig]) -> None:
    run_dir = train(tiny_config(pretrained="none", epochs_frozen=1, epochs_finetune=1))
    with (run_dir / "history.csv").open() as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["full", "full"]
    assert load_run(run_dir).display_name == "efficientnet_lite0 (random init)"


def test_fitting_restores_the_process_wide_settings_it_changes(tiny_config: Callable[..., TrainConfig]) -> None:
    fill = torch.utils.deterministic.fill_uninitialized_memory
    train(tiny_config(epochs_finetune=0))
    assert torch.utils.deterministic.fill_uninitialized_memory == fill


def test_colour_norm_by_subject_is_recorded_and_the_end_of_training_scores_as_evaluate_does(
    tiny_colour_run: Path,
) -> None:
    config = yaml.safe_load((tiny_colour_run / "config.yaml").read_text())
    assert config["colour_norm"] == config["preprocessing"]["colour_norm"] == "subject"
    assert load_run(tiny_colour_run).preprocessing.colour_norm == "subject"
    assert TrainConfig.from_dict(config).colour_norm == "subject"  # --config repeats it
    metrics = json.loads((tiny_colour_run / "metrics.json").read_text())["test"]
    evaluated = evaluate_run(tiny_colour_run, bootstrap=0).plain["metrics"]
    assert metrics["n"] == evaluated["n"] > 0
    assert metrics["confusion_matrix"] == evaluated["confusion_matrix"]
    for key in ("accuracy", "weighted_f1", "loss", "roc_auc"):
        assert metrics[key] == pytest.approx(evaluated[key])


def test_colour_norm_by_subject_refuses_cells_without_subjects_before_any_run_folder(
    tmp_path: Path, natural_crop_dataset: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    with pytest.raises(DataError, match="13 cells have no subject id .* or train with --colour-norm none") as caught:
        train(tiny_config(data=str(natural_crop_dataset), colour_norm="subject"))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_colour_norm_by_subject_refuses_a_split_csv_that_splits_subjects(
    tmp_path: Path, synth_small: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    by_image = make_split(scan_dataset(synth_small), seed=0, by="image")
    write_split_csv(by_image, tmp_path / "split.csv")
    split = SplitConfig(csv=str(tmp_path / "split.csv"))
    with pytest.raises(DataError, match="puts cells of one subject in several parts.*--colour-norm none"):
        train(tiny_config(colour_norm="subject", split=split))
    assert not (tmp_path / "runs").exists()


def test_an_unusable_dataset_stops_before_training(
    tmp_path: Path, synth_small: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    one_class = tmp_path / "one-class"
    shutil.copytree(synth_small, one_class)
    for file in one_class.rglob("*"):
        if file.is_file() and "hem" in file.parent.name:
            file.unlink()
    with pytest.raises(DataError):
        train(tiny_config(data=str(one_class)))
    assert not (tmp_path / "runs").exists()


def test_corrupt_images_are_skipped_and_counted(
    tmp_path: Path, synth_small: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(synth_small, damaged)
    victims = sorted(p for p in damaged.rglob("*.png"))[:2]
    for victim in victims:
        victim.write_bytes(b"not an image")
    run_dir = train(tiny_config(data=str(damaged), epochs_finetune=0))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["skipped_files"] == 2
    assert {Path(path).name for path, _ in metrics["data"]["skipped"]} == {v.name for v in victims}


class _Corrupt(L.Callback):
    """Breaks every image after the first epoch, once the datasets were built from them."""

    def __init__(self, images: list[Path]) -> None:
        self.images = images

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for image in self.images:
            image.write_bytes(b"not an image any more")


def test_an_image_that_breaks_mid_run_ends_in_one_line_naming_it_also_from_a_worker(
    tmp_path: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(shutil.copytree(synth_small, tmp_path / "cells"))
    images = sorted(data.rglob("*.png"))
    built = trainer_module.build_callbacks
    monkeypatch.setattr(trainer_module, "build_callbacks", lambda *args: [*built(*args), _Corrupt(images)])
    tiny = ["--model", "cnn", "--image-size", "32", "--batch-size", "16", "--epochs-finetune", "2", "--no-progress"]
    assert TrainConfig().num_workers > 0  # the default: the image is read in a DataLoader worker process
    assert main(["train", "--data", str(data), *tiny, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("blastscope: error:")]
    assert "Traceback" not in err and "DataLoader worker" not in line
    assert any(str(image) in line for image in images) and "changed after training started" in line
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_random_init_trains_every_layer_at_the_head_learning_rate(tiny_run: Path) -> None:
    """Fine-tuning rates protect pretrained weights; from scratch there are none, so the from-scratch rate applies."""
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert not config["weights_pretrained"] and config["lr_head"] > config["lr_finetune"]
    with (tiny_run / "history.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert first["phase"] == "full" and float(first["lr"]) == pytest.approx(config["lr_head"])
