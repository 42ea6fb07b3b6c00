"""`evaluate --data` on another dataset matches class names ignoring case; evaluate and serve name the positive class
before they start."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from blastscope.cli import main
from blastscope.runs import load_run


def _folders(cells: Path, target: Path, names: dict[str, str]) -> Path:
    """The C-NMC-layout cells as a class-per-folder tree with the given folder names (``all`` -> ``names["all"]``)."""
    for index, source in enumerate(sorted(cells.rglob("*.png"))):
        label = "all" if source.stem.endswith("_all") else "hem"
        destination = target / names[label] / f"cell{index}.png"
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target


def test_a_run_on_all_hem_evaluates_ALL_HEM_on_its_own_class_names(
    tiny_run_copy: Path, synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = yaml.safe_load((tiny_run_copy / "config.yaml").read_text())
    assert recipe["positive_class"] is None and recipe["resolved_positive_class"] == "all"  # read from its name
    data = _folders(synth_small, tmp_path / "upper", {"all": "ALL", "hem": "HEM"})
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(tiny_run_copy), "--data", str(data), "--bootstrap", "0", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith("positive class: ALL (the run's")
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["classes"] == ["hem", "all"] and evaluation["operating_point"]["positive_class"] == "all"
    assert evaluation["n_cells"] == len(load_run(tiny_run_copy).split.parts["test"])  # the cells it never saw
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["label"] for row in rows} == {"all", "hem"}  # the run's names, as its probabilities' columns
    assert evaluation["plain"]["metrics"]["sensitivity"] is not None


def test_classes_that_really_differ_are_refused_in_one_line(
    tiny_run_copy: Path, synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folders(synth_small, tmp_path / "other", {"all": "ALL", "hem": "normal"})
    assert main(["evaluate", str(tiny_run_copy), "--data", str(data), "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("blastscope: error:") and "differ from the run's hem, all" in error[-1]
    assert "ALL, normal" in error[-1]


def test_serve_names_the_positive_class_before_serving(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    assert main(["serve", str(tiny_run), "--port", "0", "--backend", "torch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("positive class: ALL (the run's") for line in lines)
    assert any(line.startswith("decision: ALL when p(ALL) >= 0.5000") for line in lines)
