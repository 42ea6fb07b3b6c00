"""Preparing a training run: what the data scan found and what a split CSV does are said before training starts."""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from blastscope.data.discover import scan_dataset
from blastscope.data.split import Split, make_split, write_split_csv
from blastscope.errors import BlastscopeError, LeakageError
from blastscope.training import TrainConfig, train
from blastscope.training.config import SplitConfig
from blastscope.training.prepare import complete_recipe, make_run_split, scan_data, unused_flags_line


def test_the_scan_notes_are_said_when_training_starts(
    synth_small: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """A class folder holding only GIFs is no class: ``train`` says so, as ``data inspect`` does."""
    data = tmp_path / "data"
    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        label = "blast" if source.stem.endswith("_all") else "normal"
        (data / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, data / label / f"cell{index}.png")
    (data / "mono").mkdir()
    (data / "mono" / "cell.gif").write_bytes(b"GIF89a")
    with caplog.at_level(logging.WARNING, logger="blastscope.training.prepare"):
        scan_data(complete_recipe(tiny_config(data=str(data))))
    said = [record.getMessage() for record in caplog.records]
    assert "note: not a class: mono/ holds no readable image" in said
    assert any(line.startswith("note: 1 file of another type passed over (.gif 1)") for line in said)


def _edited_split(run: Path, out: Path, edit: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> Path:
    """A copy of ``run``'s split.csv at ``out`` with its rows changed by ``edit``, as a person would in a
    spreadsheet."""
    with (run / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(edit(rows))
    return out


def _moved_one_train_cell_to_test(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    next(row for row in rows if row["split"] == "train")["split"] = "test"
    return rows


def _prepared_split(config: TrainConfig) -> Split:
    config = complete_recipe(config)
    return make_run_split(config, scan_data(config))


def test_a_split_csv_with_a_subject_in_two_parts_is_refused_with_split_by_subject_naming_it(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    edited = _edited_split(tiny_run, tmp_path / "edit.csv", _moved_one_train_cell_to_test)
    moved = next(row for row in csv.DictReader(edited.open()) if row["split"] == "test")
    with pytest.raises(LeakageError, match=rf"edit\.csv: subject group {moved['group']} sits in train and test, but "):
        _prepared_split(tiny_config(split=SplitConfig(csv=str(edited), by="subject")))


def test_a_split_csv_with_a_subject_in_two_parts_trains_by_image_naming_it(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    edited = _edited_split(tiny_run, tmp_path / "edit.csv", _moved_one_train_cell_to_test)
    moved = next(row for row in csv.DictReader(edited.open()) if row["split"] == "test")
    with caplog.at_level(logging.WARNING, logger="blastscope.training.prepare"):
        split = _prepared_split(tiny_config(split=SplitConfig(csv=str(edited))))

    assert not split.subject_level
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"split by image: {edited}: subject group {moved['group']} sits in")


def test_a_split_csv_without_subject_ids_is_refused_with_split_by_subject(
    natural_crop_dataset: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    write_split_csv(make_split(scan_dataset(natural_crop_dataset)), tmp_path / "split.csv")
    config = tiny_config(
        data=str(natural_crop_dataset), split=SplitConfig(csv=str(tmp_path / "split.csv"), by="subject")
    )
    with pytest.raises(LeakageError, match=r"split\.csv: .*\.png has no subject id, but --split-by subject needs one"):
        _prepared_split(config)


def test_cells_a_split_csv_leaves_out_are_counted_and_the_first_named(
    tiny_run: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], caplog: pytest.LogCaptureFixture
) -> None:
    edited = _edited_split(tiny_run, tmp_path / "drop.csv", lambda rows: [r for r in rows if r["split"] != "test"])
    config = tiny_config(split=SplitConfig(csv=str(edited)))
    with caplog.at_level(logging.WARNING, logger="blastscope.training.prepare"):
        split = _prepared_split(config)

    tested = [row for row in csv.DictReader((tiny_run / "split.csv").open()) if row["split"] == "test"]
    assert len(split.left_out) == len(tested) and not split.parts["test"]
    first = split.left_out[0].path
    assert [record.getMessage() for record in caplog.records] == [
        f"{len(tested)} cells of {config.data} are in no part of {edited}: left out (first: {first})"
    ]


def test_a_weights_file_is_recorded_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_config: Callable[..., TrainConfig]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert complete_recipe(tiny_config(pretrained="w.ckpt")).pretrained == str((tmp_path / "w.ckpt").resolve())
    assert complete_recipe(tiny_config(pretrained="auto")).pretrained == "auto"


NO_EPOCHS = "this recipe has no fine-tuning epochs (--epochs-finetune 0); add --epochs-finetune N to fine-tune"
ONE_PHASE = "a randomly initialised model trains every layer in one phase, at --lr-head"


@pytest.mark.parametrize(
    ("flags", "pretrained", "said"),
    [
        ({"lr_finetune": 1e-4}, True, f"--lr-finetune changes nothing here: {NO_EPOCHS}"),
        (
            {"lr_finetune": 1e-4, "unfreeze_stages": "all"},
            True,
            f"--lr-finetune and --unfreeze-stages change nothing here: {NO_EPOCHS}",
        ),
        (
            {"unfreeze_stages": 3, "epochs_finetune": 0, "model": "resnet50"},
            True,
            f"--unfreeze-stages changes nothing here: {NO_EPOCHS}",
        ),
        (
            {"lr_finetune": 1e-4, "epochs_finetune": 2, "model": "cnn"},
            False,
            f"--lr-finetune changes nothing here: {ONE_PHASE}",
        ),
        ({"lr_finetune": 1e-4, "epochs_finetune": 2}, True, None),
        ({}, True, None),
        (
            {"lr_head": 0.1, "head_fit": "logistic"},
            True,
            "--lr-head changes nothing here: --head-fit logistic fits the head in closed form, and fine-tuning trains "
            "it at --lr-finetune",
        ),
        (
            {"lr_head": 0.1, "lr_finetune": 1e-4, "head_fit": "logistic"},
            True,
            f"--lr-finetune changes nothing here: {NO_EPOCHS}; --lr-head changes nothing here: --head-fit logistic "
            "fits the head in closed form, and fine-tuning trains it at --lr-finetune",
        ),
    ],
)
def test_fine_tuning_flags_a_run_never_uses_are_named(flags: dict, pretrained: bool, said: str | None) -> None:
    given = TrainConfig(data="cells", **flags)
    line = unused_flags_line(given, complete_recipe(given), pretrained)
    assert line == (None if said is None else f"note: {said}")


def test_values_a_repeated_config_holds_were_not_given() -> None:
    """`train --config RUN/config.yaml` of a head-only run: its recorded lr_finetune was not the user's flag."""
    recorded = complete_recipe(TrainConfig(data="cells")).to_dict()
    repeated = TrainConfig.from_dict(recorded)
    assert unused_flags_line(repeated, complete_recipe(repeated), True, recorded) is None
    changed = replace(repeated, lr_finetune=1e-5)
    assert "--lr-finetune changes nothing" in str(unused_flags_line(changed, changed, True, recorded))


def test_train_says_so_before_training(tiny_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture) -> None:
    train(tiny_config(epochs_finetune=0, lr_finetune=1e-4))
    assert "note: --lr-finetune changes nothing here" in capsys.readouterr().err


def test_a_model_that_measures_colour_refuses_stain_channels_before_the_run_exists(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = tiny_config(model="efficientnet_lite0_measured", channels="od")
    with pytest.raises(BlastscopeError, match=r"reads rgb input, not --channels od: use --channels rgb"):
        train(config)
    assert not (tmp_path / "runs").exists()
