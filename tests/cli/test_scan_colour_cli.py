"""``blastscope scan`` with a run that normalises colours per person: one call's smears are one person's."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from blastscope.cli import main


@pytest.fixture(scope="module")
def smears(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smears")
    assert main(["synth", str(folder), "--smear", "2"]) == 0
    return folder


def probabilities(out: Path) -> list[str]:
    return [row["p_all"] for row in csv.DictReader((out / "cells.csv").open())]


def test_all_smears_of_a_call_are_one_person_unless_each_file_is(tiny_colour_run: Path, smears: Path, tmp_path, capsys):
    assert main(["scan", str(tiny_colour_run), str(smears), "--out", str(tmp_path / "all")]) == 0
    assert "the white cells of all 2 photographs taken as one person's" in capsys.readouterr().err
    by_file = tmp_path / "file"
    assert main(["scan", str(tiny_colour_run), str(smears), "--out", str(by_file), "--person-by", "file"]) == 0
    assert "each photograph's white cells taken as one person's" in capsys.readouterr().err
    together, apart = probabilities(tmp_path / "all"), probabilities(by_file)
    assert len(together) == len(apart) > 0 and together != apart


def test_a_photograph_with_too_few_cells_is_named_in_the_warning(tiny_colour_run: Path, smears: Path, tmp_path, caplog):
    first = sorted(smears.iterdir())[0]
    out = tmp_path / "file"
    with caplog.at_level("WARNING", logger="blastscope.inference.predict"):
        assert main(["scan", str(tiny_colour_run), str(first), "--out", str(out), "--person-by", "file"]) == 0
    assert f"(e.g. photograph {first}: " in caplog.text and "these images" not in caplog.text
