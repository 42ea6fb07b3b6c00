"""The cases in ../shared/cases that cross layers: upper-case class folders evaluated by a run trained on all/hem, and
an upload with an AppleDouble file beside a good cell. (The file-level cases are in tests/data/test_shared_cases.py.)

They are read where they lie, never copied into the repository; the tests skip when ../shared/cases is missing and
fail instead when CI=true.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

import blastscope
from blastscope.cli import main
from blastscope.data.classes import positive_class
from blastscope.data.discover import scan_dataset
from blastscope.serving.app import create_app


def test_upper_case_class_folders_make_all_positive_and_a_run_on_all_hem_evaluates_them(
    cases: Path, tiny_run_copy: Path, tmp_path: Path
) -> None:
    table = scan_dataset(cases / "class-names")
    assert positive_class(table.classes) == "ALL"
    out = tmp_path / "evaluation"
    argv = ["evaluate", str(tiny_run_copy), "--data", str(cases / "class-names"), "--bootstrap", "0", "--out", str(out)]
    assert main(argv) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n_cells"] == len(table.cells) == 8
    assert evaluation["plain"]["metrics"]["positive_class"] == "all"  # the run's name for ALL: sensitivity is ALL's
    support = {name: row["support"] for name, row in evaluation["plain"]["metrics"]["per_class"].items()}
    assert support == {"hem": 4, "all": 4}


def test_a_good_cell_and_its_appledouble_twin_uploaded_together(cases: Path, tiny_run: Path) -> None:
    folder = cases / "uploads"
    client = TestClient(create_app(blastscope.load(tiny_run)))
    files = [("files", (path.name, path.read_bytes(), "image/png")) for path in sorted(folder.iterdir())]
    response = client.post("/predict", files=files)
    assert response.status_code == 200
    entries = {entry["file"]: entry for entry in response.json()["predictions"]}
    assert entries["cell.png"]["label"] in ("hem", "all")
    assert entries["._cell.png"]["error"] and entries["._cell.png"]["status"] == 415
