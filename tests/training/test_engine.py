"""train(config) end to end on tiny synthetic cells: the run directory, load_run, checkpoints, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from blastscope.errors import DataError
from blastscope.runs import load_run
from blastscope.training import TrainConfig, train


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
    assert float(history[0]["lr"]) == pytest.approx(1e-3) and float(history[1]["lr"]) == pytest.approx(1e-4)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == metrics["data"]["parts"]["test"] > 0
    assert metrics["training"]["images_per_second"] > 0 and metrics["data"]["skipped_files"] == 0

    for name in ("best", "last"):
        checkpoint = torch.load(run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)
        assert any(key.startswith("model.") for key in checkpoint["state_dict"])

    trained = load_run(run_dir)
    assert trained.display_name == "efficientnet_lite0 (pretrained)"
    assert not trained.model.training and trained.classes == ("hem", "all")
    assert trained.split.hash == config["split_hash"]
    with torch.no_grad():
        assert trained.model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_random_init_trains_all_layers_in_one_phase(tiny_config: Callable[..., TrainConfig]) -> None:
    run_dir = train(tiny_config(pretrained="none", epochs_frozen=1, epochs_finetune=1))
    with (run_dir / "history.csv").open() as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["full", "full"]
    assert load_run(run_dir).display_name == "efficientnet_lite0 (random init)"


def test_cached_features_feed_the_head_what_the_backbone_would(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    from blastscope.data.datamodule import CellDataModule
    from blastscope.models import create_model
    from blastscope.training.features import extract_features

    run_dir = train(tiny_config(cached_features=True, epochs_finetune=0))
    with (run_dir / "history.csv").open() as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["frozen"]
    split = load_run(run_dir).split
    bundle = create_model("efficientnet_lite0", image_size=32)
    datamodule = CellDataModule(
        split.parts, ["hem", "all"], bundle.preprocessing, {}, batch_size=4, num_workers=0, seed=0
    )
    dataset = datamodule.dataset("train", augment=False)
    cached = extract_features(bundle.model.train(), dataset, batch_size=4)
    assert bundle.model.training  # extraction ran in eval mode, then restored the mode it found
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        direct = bundle.model.eval().forward_features(images)
    torch.testing.assert_close(cached.tensors[0], direct)
    assert cached.tensors[1].tolist() == [dataset[i][1] for i in range(len(dataset))]


def test_frozen_stages_run_in_bf16_only_on_cpus_that_have_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu", bf16_frozen_stages=False))
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="gpu"))
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert not trainer.use_bf16_frozen_stages(TrainConfig(accelerator="cpu"))


def test_fitting_restores_the_process_wide_settings_it_changes(tiny_config: Callable[..., TrainConfig]) -> None:
    fill = torch.utils.deterministic.fill_uninitialized_memory
    train(tiny_config(epochs_finetune=0))
    assert torch.utils.deterministic.fill_uninitialized_memory == fill


def test_an_unusable_dataset_stops_before_training(
    tmp_path: Path, tiny_cells: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    one_class = tmp_path / "one-class"
    shutil.copytree(tiny_cells, one_class)
    for file in one_class.rglob("*"):
        if file.is_file() and "hem" in file.parent.name:
            file.unlink()
    with pytest.raises(DataError):
        train(tiny_config(data=str(one_class)))
    assert not (tmp_path / "runs").exists()


def test_corrupt_images_are_skipped_and_counted(
    tmp_path: Path, tiny_cells: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_cells, damaged)
    victims = sorted(p for p in damaged.rglob("*.png"))[:2]
    for victim in victims:
        victim.write_bytes(b"not an image")
    run_dir = train(tiny_config(data=str(damaged), epochs_finetune=0))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["skipped_files"] == 2
    assert {Path(path).name for path, _ in metrics["data"]["skipped"]} == {v.name for v in victims}


def test_random_init_trains_every_layer_at_the_head_learning_rate(tiny_run: Path) -> None:
    """Fine-tuning rates protect pretrained weights; from scratch there are none, so the from-scratch rate applies."""
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert not config["weights_pretrained"] and config["lr_head"] > config["lr_finetune"]
    with (tiny_run / "history.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert first["phase"] == "full" and float(first["lr"]) == pytest.approx(config["lr_head"])


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


@pytest.mark.parametrize("text", ["model: [unclosed\n", "- just\n- a list\n"])
def test_a_damaged_config_yaml_is_a_one_line_error_naming_it(tiny_run_copy: Path, text: str) -> None:
    from blastscope.errors import BlastscopeError

    (tiny_run_copy / "config.yaml").write_text(text)
    with pytest.raises(BlastscopeError, match="config.yaml") as caught:
        load_run(tiny_run_copy)
    assert "\n" not in str(caught.value)


def test_a_checkpoint_of_another_network_is_a_one_line_error_naming_it(tiny_run: Path) -> None:
    from blastscope.errors import BlastscopeError
    from blastscope.models import create_model
    from blastscope.runs.folder import checkpoint_path, load_network_weights

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    other = create_model(config["model"], num_classes=len(config["classes"]) + 3, pretrained="none")
    path = checkpoint_path(tiny_run, "best")
    with pytest.raises(BlastscopeError, match="does not fit this network") as caught:
        load_network_weights(other.model, path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
