"""``blastscope predict`` with a run that normalises colours per person: one grouping line, a person column, and
chunks that answer as one call does."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from blastscope.api import load
from blastscope.cli import main


@pytest.fixture
def named(synth_small: Path, tmp_path: Path) -> list[Path]:
    """Cells of subjects 1 and H1, C-NMC names, in two folders."""
    files = sorted(path for path in synth_small.rglob("UID_*.png") if path.name.split("_")[1] in {"1", "H1"})
    out = []
    for path in files:
        folder = tmp_path / "cells" / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        out.append(Path(shutil.copy(path, folder / path.name)))
    return out


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_cells_are_grouped_by_subject_in_one_line_and_chunks_agree(
    tiny_colour_run: Path, named: list[Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "p.csv"
    args = ["predict", str(tiny_colour_run), *map(str, named), "--out", str(out), "--batch-size", "3"]
    assert main([*args, "--gradcam", str(tmp_path / "cams")]) == 0
    assert "colours normalised per person: 2 subjects from C-NMC names" in capsys.readouterr().err
    got = rows(out)
    assert [row["person"] for row in got] == [path.name.split("_")[1].upper() for path in named]
    classifier = load(tiny_colour_run)
    whole = classifier.predict_proba(named)[:, classifier.classes.index("all")]
    np.testing.assert_allclose([float(row["p_all"]) for row in got], whole, atol=1e-5)


def test_person_by_all_and_folder(tiny_colour_run: Path, named: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_colour_run), *map(str, named), "--out", str(out), "--person-by", "all"]) == 0
    assert f"all {len(named)} images taken as one person's: run predict once per person" in capsys.readouterr().err
    assert {row["person"] for row in rows(out)} == {"all"}
    assert main(["predict", str(tiny_colour_run), *map(str, named), "--out", str(out), "--person-by", "folder"]) == 0
    assert "colours normalised per person: 2 folders, each one person's" in capsys.readouterr().err
    assert len({row["person"] for row in rows(out)}) == 2


def test_a_run_without_colour_norm_ignores_person_by(tiny_run: Path, named: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_run), *map(str, named[:2]), "--out", str(out), "--person-by", "folder"]) == 0
    assert "person" not in rows(out)[0] and "colours normalised" not in capsys.readouterr().err


def test_a_mix_of_cnmc_names_and_others_is_refused_in_one_line_and_one_image_is_one_image(
    tiny_colour_run: Path, named: list[Path], tmp_path: Path, capsys
) -> None:
    plain = Path(shutil.copy(named[0], tmp_path / "cell.png"))
    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_colour_run), str(named[0]), str(named[-1]), str(plain), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"blastscope: error: {plain}: not a C-NMC cell name UID_<subject>_..., while the names of 2 other images give "
        "2 subjects, so whose cells are whose is unknown; rename it, or use --person-by folder or all"
    )
    assert main(["predict", str(tiny_colour_run), str(plain), "--out", str(out)]) == 0
    assert f"{load(tiny_colour_run).name}: 1 image, backend" in capsys.readouterr().err


def test_a_broken_file_in_a_persons_folder_is_skipped_not_a_reason_to_refuse_the_folder(
    tiny_colour_run: Path, named: list[Path], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "person"
    folder.mkdir()
    for path in named[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_text("not an image")
    out = tmp_path / "p.csv"
    assert main(["predict", str(tiny_colour_run), str(folder), "--out", str(out)]) == 1  # 1: a file was skipped
    err = capsys.readouterr().err
    assert "subject" in err and "from C-NMC names" in err and "broken.png" in err
    predicted = [row for row in rows(out) if row.get("label")]
    assert len(predicted) == 3 and all(row["person"] for row in predicted)
