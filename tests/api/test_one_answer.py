"""One checkpoint, one answer: evaluate, the Python API (PyTorch and ONNX), `predict` and `POST /predict` agree.

A threshold chosen on validation by `evaluate` is stored in the run; every door then decides at it, says so, and gives
each test cell the same label with the same probabilities (fp32, within 1e-4). `--threshold` overrides it for one call.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import blastscope
from blastscope.cli import main
from blastscope.export.onnx import export_run
from blastscope.runs import load_run
from blastscope.serving.app import create_app

ATOL = 1e-4


@pytest.fixture
def chosen(tiny_cnn_run_copy: Path) -> tuple[Path, list[dict[str, str]]]:
    """The tiny cnn run (it exports in seconds) after `evaluate --target-sensitivity 1.0` (a threshold chosen on
    validation, never 0.5 here) and an fp32 ONNX export; with the evaluation's per-cell rows of the test split."""
    assert main(["evaluate", str(tiny_cnn_run_copy), "--target-sensitivity", "1.0", "--bootstrap", "0"]) == 0
    export_run(load_run(tiny_cnn_run_copy), log=lambda _: None)
    rows = list(csv.DictReader((tiny_cnn_run_copy / "evaluation-test" / "predictions.csv").open()))
    return tiny_cnn_run_copy, rows


def test_every_door_gives_the_stored_answer(chosen, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, rows = chosen
    point = load_run(run_dir).operating_point
    positive = point.positive_class
    assert point.source.startswith("val:") and point.split == "val" and point.chosen_by == "evaluate"
    assert point.threshold != 0.5 and point.temperature != 1.0
    paths = [row["path"] for row in rows]
    reference_p = np.array([float(row[f"p_{positive}"]) for row in rows])
    reference_labels = [row["decided_label"] for row in rows]
    assert all(float(row["threshold"]) == pytest.approx(point.threshold) for row in rows)
    assert reference_labels == [positive if p >= point.threshold else _other(point, positive) for p in reference_p]

    answers: dict[str, tuple[list[str], np.ndarray, set[float], set[str]]] = {}
    for backend in ("torch", "onnx"):
        classifier = blastscope.load(run_dir, backend=backend)
        assert classifier.operating_point == point
        predictions = classifier.predict(paths)
        answers[f"load({backend})"] = _answer(predictions, positive)

    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), *paths, "--out", str(out)]) == 0
    assert f">= {point.threshold:.4f}" in capsys.readouterr().err
    cli_rows = list(csv.DictReader(out.open()))
    answers["predict"] = (
        [row["label"] for row in cli_rows],
        np.array([float(row[f"p_{positive}"]) for row in cli_rows]),
        {float(row["threshold"]) for row in cli_rows},
        {row["positive_class"] for row in cli_rows},
    )

    client = TestClient(create_app(blastscope.load(run_dir)))
    health = client.get("/health").json()
    assert health["operating_point"]["threshold"] == pytest.approx(point.threshold)
    files = [("files", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in paths]
    served = client.post("/predict", files=files).json()["predictions"]
    answers["POST /predict"] = _answer_dicts(served, positive)

    for door, (labels, p_positive, thresholds, positives) in answers.items():
        assert labels == reference_labels, door
        np.testing.assert_allclose(p_positive, reference_p, atol=ATOL, err_msg=door)
        assert len(thresholds) == 1 and thresholds.pop() == pytest.approx(point.threshold, abs=1e-6), door
        assert positives == {positive}, door  # the class the threshold is on, in every door's rows


def test_threshold_override_changes_the_labels_for_that_call_only(chosen, tmp_path: Path) -> None:
    run_dir, rows = chosen
    point = load_run(run_dir).operating_point
    positive = point.positive_class
    p_positive = np.array([float(row[f"p_{positive}"]) for row in rows])
    override = float(np.median(p_positive)) + 1e-6  # about half the cells on each side
    out = tmp_path / "override.csv"
    assert (
        main(["predict", str(run_dir), *[row["path"] for row in rows], "--out", str(out), "--threshold", str(override)])
        == 0
    )
    cli_rows = list(csv.DictReader(out.open()))
    expected = [positive if p >= override else _other(point, positive) for p in p_positive]
    assert [row["label"] for row in cli_rows] == expected
    assert {row["decided_by"].split(",")[0] for row in cli_rows} == {"threshold given"}
    assert expected != [row["decided_label"] for row in rows]  # the override decided differently from the stored point
    assert load_run(run_dir).operating_point == point  # and was not stored


def _other(point, positive: str) -> str:
    return next(name for name in point.classes if name != positive)


def _answer(predictions, positive: str) -> tuple[list[str], np.ndarray, set[float], set[str]]:
    return _answer_dicts([prediction.to_dict() for prediction in predictions], positive)


def _answer_dicts(entries: list[dict], positive: str) -> tuple[list[str], np.ndarray, set[float], set[str]]:
    return (
        [entry["label"] for entry in entries],
        np.array([entry["probabilities"][positive] for entry in entries]),
        {entry["threshold"] for entry in entries},
        {entry["positive_class"] for entry in entries},
    )
