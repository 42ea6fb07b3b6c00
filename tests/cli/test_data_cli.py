"""``blastscope data inspect`` and ``blastscope data split`` on synthetic and real C-NMC cells."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from blastscope.cli import main
from blastscope.data.discover import scan_dataset
from blastscope.data.split import read_split_csv


def test_inspect_reports_classes_subjects_folds_sizes_and_skips(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "cells"
    shutil.copytree(synth_small, dataset)
    first = next(dataset.glob("training_data/fold_*/all/UID_*.png"))
    shutil.copy(first, first.with_name("UID_99_1_1_all.png"))
    (first.parent / "UID_98_1_1_all.png").write_bytes(b"")

    assert main(["data", "inspect", str(dataset)]) == 0

    out = capsys.readouterr().out
    assert "98 image files: 96 distinct cells, 1 exact duplicates, 1 skipped" in out
    assert "classes  hem (index 0), all (index 1, positive)" in out
    assert "Cells per C-NMC fold" in out and "Cells per subject" in out
    assert "Merged subject groups" in out and "99" in out
    assert "64x64" in out
    assert "UID_98_1_1_all.png: empty file" in out


def test_split_writes_csv_and_summary_with_achieved_ratios(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split.csv"

    assert main(["data", "split", str(synth_small), "--out", str(out), "--ratios", "0.5,0.25,0.25", "--seed", "4"]) == 0

    printed = capsys.readouterr().out
    split = read_split_csv(out, scan_dataset(synth_small))
    assert split.subject_level and split.hash in printed
    assert "target 50% / 25% / 25%, seed 4" in printed and "leakage check passed" in printed
    assert [line.split()[0] for line in printed.splitlines() if line.split()[:1] in (["train"], ["val"], ["test"])] == [
        "train",
        "val",
        "test",
    ]
    assert split.hash in (tmp_path / "split.summary.txt").read_text()


def test_cross_validation_writes_one_csv_per_fold(synth_small: Path, tmp_path: Path) -> None:
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "cv.csv"), "--cv", "3"]) == 0

    folds = [read_split_csv(tmp_path / f"cv-fold{index}.csv") for index in (1, 2, 3)]
    tested = [cell.digest for split in folds for cell in split.parts["test"]]
    assert len(tested) == len(set(tested)) == 96


def test_split_by_image_is_announced(synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "s.csv"), "--split-by", "image"]) == 0

    assert "BY IMAGE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["inspect", "{tmp}/missing"], "missing does not exist"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--ratios", "0.5,0.5,0.5"], "must be three numbers"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--cv", "7"], "class 'all' has only 6 subject groups"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--cv", "3", "--ratios", "0.8,0.2,0"], "exclude each other"),
    ],
)
def test_user_errors_are_one_line_messages(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    filled = [argument.format(tmp=tmp_path, synth=synth_small) for argument in arguments]

    assert main(["data", *filled]) == 2

    error = capsys.readouterr().err
    assert error.startswith("blastscope: error:") and message in error and error.count("\n") == 1


@pytest.mark.integration
def test_inspect_cnmc_dev_reports_the_known_counts(cnmc_dev: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(cnmc_dev)]) == 0

    out = capsys.readouterr().out
    assert "6,403 image files: 6,371 distinct cells, 32 exact duplicates, 0 skipped" in out
    assert "  hem    2,144           14              11" in out
    assert "  all    4,227           27              25" in out
    assert "  total  6,371           41              36" in out
    for group in ("51+75+78", "H2+H4+H5", "H3+H10"):
        assert f"\n  {group}\n" in out or out.endswith(f"\n  {group}")
