"""`blastscope predict` on a real tiny run: good and bad files, CSV/JSON output, Grad-CAM overlays, exit status."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from blastscope.cli import main


@pytest.fixture
def run_dir(tiny_run_copy: Path) -> Path:
    return tiny_run_copy


@pytest.fixture
def images(synth_small: Path, tmp_path: Path) -> Path:
    """A folder of three real cells, one corrupt file, one empty file, and a text file that is skipped by extension."""
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted(synth_small.rglob("*.png"))[:3]:
        shutil.copy(source, folder / source.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_csv_lists_every_image_and_every_failure(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(images), "--out", str(out)]) == 1
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open())}
    assert list(rows) == sorted(p.name for p in images.iterdir() if p.suffix != ".txt")  # input order, failures too
    for name in ("corrupt.png", "empty.jpg"):
        assert rows[name]["label"] == "" and rows[name]["error"]
    good = [row for row in rows.values() if not row["error"]]
    assert len(good) == 3
    for row in good:
        assert row["label"] in {"all", "hem"}
        assert float(row["p_all"]) + float(row["p_hem"]) == pytest.approx(1.0, abs=1e-5)
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "empty.jpg" in err and "2 of 5 files could not be read" in err


def test_json_and_gradcam_for_good_files(run_dir: Path, images: Path, tmp_path: Path) -> None:
    good = sorted(images.glob("UID_*.png"))
    out, overlays = tmp_path / "preds.json", tmp_path / "gradcam"
    assert main(["predict", str(run_dir), *map(str, good), "--out", str(out), "--gradcam", str(overlays), "--tta"]) == 0
    rows = json.loads(out.read_text())
    assert [row["file"] for row in rows] == list(map(str, good))
    assert all(row["error"] is None and set(row["probabilities"]) == {"all", "hem"} for row in rows)
    for path in good:
        overlay = Image.open(overlays / f"{path.stem}_gradcam.png")
        assert overlay.size == (32, 32) and overlay.mode == "RGB"


def test_stdout_table_when_no_out(run_dir: Path, images: Path, capsys) -> None:
    first = sorted(images.glob("UID_*.png"))[0]
    assert main(["predict", str(run_dir), str(first), "--backend", "torch"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,label,p_hem,p_all,threshold,decided_by,error" and lines[1].startswith(str(first))


def test_user_errors_exit_2(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    assert main(["predict", str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert main(["predict", str(run_dir), str(images), "--backend", "onnx"]) == 2
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "preds.xlsx")]) == 2
    assert main(["predict", str(tmp_path), str(images)]) == 2
    assert main(["predict", str(run_dir), str(images), "--batch-size", "0"]) == 2
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "no" / "preds.csv")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "--batch-size must be at least 1" in errors[4] and "does not exist" in errors[5]
    assert len(errors) == 6 and all(line.startswith("blastscope: error: ") for line in errors)
