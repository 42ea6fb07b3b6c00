"""``blastscope synth``: writes the demo dataset (or smear fields), refuses to clobber one, explains bad arguments in
one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from blastscope.cli import main


def test_writes_the_requested_dataset_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["synth", str(tmp_path), "--subjects-per-class", "2", "--cells-per-subject", "3", "--image-size", "24"])
    assert code == 0
    assert len(list(tmp_path.glob("training_data/fold_*/*/UID_*.png"))) == 12
    assert "wrote 12 synthetic cells" in capsys.readouterr().out


def test_refuses_an_existing_dataset_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["synth", str(tmp_path), "--subjects-per-class", "1", "--cells-per-subject", "1", "--image-size", "24"]
    assert main(arguments) == 0
    (tmp_path / "training_data" / "stale.txt").write_text("left from before")
    assert main(arguments) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0
    assert not (tmp_path / "training_data" / "stale.txt").exists()


def test_bad_values_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path), "--image-size", "4"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("blastscope: error:") and "16 px" in error and error.count("\n") == 1


def test_smear_fields_with_their_true_boxes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path), "--smear", "2", "--seed", "3"]) == 0
    fields = sorted(tmp_path.glob("smear_*.png"))
    assert [path.name for path in fields] == ["smear_000.png", "smear_001.png"]
    assert Image.open(fields[0]).size == (640, 480)
    rows = list(csv.DictReader((tmp_path / "smear_boxes.csv").open()))
    assert {row["file"] for row in rows} == {"smear_000.png", "smear_001.png"}
    assert [row["cut_by_border"] for row in rows if row["file"] == "smear_001.png"].count("True") == 1
    assert "wrote 2 synthetic smear fields" in capsys.readouterr().out
    assert not (tmp_path / "training_data").exists()
    assert main(["synth", str(tmp_path), "--smear", "1"]) == 2  # never clobbered silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(tmp_path), "--smear", "1", "--overwrite"]) == 0
    assert sorted(tmp_path.glob("smear_*.png")) == fields[:1]
