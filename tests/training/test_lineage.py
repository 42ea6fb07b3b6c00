"""What a run's starting weights already saw: checkpoints record their run's cells, and a new run whose test people
the weights trained on says so, records itself as image-level, or (with --split-by subject) is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from blastscope.data.split import Split, read_split_csv
from blastscope.data.table import Cell, CellTable
from blastscope.errors import LeakageError
from blastscope.runs import load_run
from blastscope.training import TrainConfig, train
from blastscope.training.config import SplitConfig
from blastscope.training.lineage import TRAINING_DATA_KEY, SeenCells, _seen_groups, seen_by_weights
from blastscope.training.prepare import complete_recipe, make_run_split, scan_data

LOGGER = "blastscope.training.lineage"


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "split.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _swapped(run: Path, out: Path, one: str, other: str) -> Path:
    """``run``'s split.csv with parts ``one`` and ``other`` swapped: the new ``other`` holds the people ``run``
    trained (or validated) on."""
    rows = _rows(run)
    for row in rows:
        row["split"] = {one: other, other: one}.get(row["split"], row["split"])
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _groups(run: Path, part: str) -> list[str]:
    return sorted({row["group"] for row in _rows(run) if row["split"] == part})


def _without_record(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` as one written before checkpoints recorded their run's cells."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    del content[TRAINING_DATA_KEY]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, out)
    return out


def _split(config: TrainConfig) -> Split:
    config = complete_recipe(config)
    return make_run_split(config, scan_data(config))


def test_checkpoints_record_the_cells_their_run_trained_and_validated_on(tiny_run: Path) -> None:
    record = torch.load(tiny_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)[
        TRAINING_DATA_KEY
    ]
    rows = _rows(tiny_run)
    for part in ("train", "val"):
        assert record[part]["digests"] == [row["digest"] for row in rows if row["split"] == part]
        assert record[part]["subjects"] == [row["subject"] for row in rows if row["split"] == part]
    assert "test" not in record
    assert record["split_hash"] == yaml.safe_load((tiny_run / "config.yaml").read_text())["split_hash"]


def test_an_older_checkpoint_is_matched_to_the_split_csv_of_its_run_folder(tiny_run_copy: Path) -> None:
    best = tiny_run_copy / "checkpoints" / "best.ckpt"
    _without_record(best, best)
    seen = seen_by_weights(best)

    assert isinstance(seen, SeenCells) and seen.origin == f"found by {tiny_run_copy / 'split.csv'}"
    for part in ("train", "val"):
        assert seen.digests[part] == {row["digest"] for row in _rows(tiny_run_copy) if row["split"] == part}


def test_whose_cells_a_lone_older_classifier_learned_from_cannot_be_checked_and_imagenet_files_are_not_asked(
    tiny_run: Path, tmp_path: Path
) -> None:
    lone = _without_record(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "w.ckpt")
    assert seen_by_weights(lone) == (
        "it records none (written before checkpoints did), and no run folder with a split.csv is around it"
    )
    state = torch.load(lone, map_location="cpu", weights_only=True)["state_dict"]
    backbone = {key.removeprefix("model.backbone."): v for key, v in state.items() if key.startswith("model.backbone.")}
    torch.save(backbone, tmp_path / "backbone.pth")
    assert seen_by_weights(tmp_path / "backbone.pth") is None


def test_weights_that_saw_the_test_people_make_the_split_image_level_naming_them(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's case: weights copied out of their run folder, and a new split testing on people they trained on."""
    weights = Path(shutil.copy(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "w.ckpt"))
    swapped = _swapped(tiny_run, tmp_path / "swapped.csv", "train", "test")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        split = _split(tiny_config(pretrained=str(weights), split=SplitConfig(csv=str(swapped))))

    assert not split.subject_level
    tested = _groups(tiny_run, "train")
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1
    assert said[0].startswith(
        f"--pretrained {weights}: the run these weights come from (as the checkpoint records) trained or validated "
        f"on {len(tested)} of this run's {len(tested)} test subjects ({', '.join(tested[:5])}"
    )
    assert "the run is recorded as image-level" in said[0]

    with pytest.raises(LeakageError, match=r"but --split-by subject promises test people the model never saw"):
        _split(tiny_config(pretrained=str(weights), split=SplitConfig(csv=str(swapped), by="subject")))


def test_weights_that_saw_only_validation_people_say_so_and_the_split_stays_subject_level(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    swapped = _swapped(tiny_run, tmp_path / "swapped.csv", "train", "val")
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        split = _split(tiny_config(pretrained=weights, split=SplitConfig(csv=str(swapped), by="subject")))

    assert split.subject_level
    [said] = [record.getMessage() for record in caplog.records]
    trained = _groups(tiny_run, "train")
    assert f"trained on {len(trained)} of this run's {len(trained)} validation subjects" in said
    assert said.endswith("early stopping are chosen on people the weights trained on")


def test_fine_tuning_a_run_further_on_its_own_split_passes_silently(
    tiny_run: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """Its validation people chose the weights' checkpoint before and do again: nothing new was seen."""
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    config = tiny_config(pretrained=weights, split=SplitConfig(csv=str(tiny_run / "split.csv"), by="subject"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert _split(config).subject_level
    assert not caplog.records


def test_a_person_is_seen_by_an_image_or_by_id_where_the_datasets_share_images() -> None:
    """Subject ids name the same people only within one collection: another dataset's ``2`` is someone else."""
    cells = [Cell(Path(f"/d/{s}_{i}.png"), "all", s, f"{s}-{i}") for s in ("1", "2", "3") for i in range(2)]
    table = CellTable(root=Path("/d"), cells=cells, classes=("all",), kind="folders")
    split = Split({"train": cells[:2], "val": cells[2:4], "test": cells[4:]}, {}, True, None, (1 / 3,) * 3)

    shared = SeenCells({"train": frozenset({"1-0", "elsewhere"})}, {"train": frozenset({"1", "3"})}, "test")
    assert _seen_groups(shared, ("train",), table, split) == {"1", "3"}
    other_data = SeenCells({"train": frozenset({"elsewhere"})}, {"train": frozenset({"1", "3"})}, "test")
    assert _seen_groups(other_data, ("train",), table, split) == set()


def test_a_run_from_weights_that_saw_its_test_people_is_image_level_everywhere_and_counts_add_up(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    """config.yaml names the weights by absolute path and SHA-256; metrics.json and ``load_run`` (which ``evaluate``
    reads) say image-level; cells the split CSV leaves out are counted."""
    weights = Path(shutil.copy(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "w.ckpt")).resolve()
    swapped = _swapped(tiny_run, tmp_path / "swapped.csv", "train", "test")
    rows = _rows(tiny_run)
    with swapped.open() as handle:
        kept = list(csv.DictReader(handle))[:-3]
    with swapped.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)

    run_dir = train(tiny_config(pretrained=str(weights), split=SplitConfig(csv=str(swapped))))

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["weights_source"] == f"file {weights}" and config["pretrained"] == str(weights)
    assert config["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert config["split_subject_level"] is False
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    assert data["subject_level"] is False and data["left_out"] == 3
    assert sum(data["parts"].values()) + data["left_out"] == data["cells"] == len(rows)
    assert not load_run(run_dir).split.subject_level
    assert read_split_csv(run_dir / "split.csv").subject_level  # the parts themselves keep people apart
    TrainConfig.load(run_dir / "config.yaml")  # the new key does not stop a repeat with --config
