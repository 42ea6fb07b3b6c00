"""The comparison shows each binary model's refer band and risk-coverage curve, from its evaluation."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from blastscope.errors import BlastscopeError
from blastscope.evaluation.referral import choose_refer_band
from blastscope.evaluation.scoring import evaluate_predictions
from blastscope.inference.decision import OperatingPoint
from blastscope.workflows.compare.config import BUDGETS, CompareConfig, check_request
from blastscope.workflows.compare.results import budget_table, referral_fields
from blastscope.workflows.report import Comparison, DatasetCard, ModelResult, write_report

CLASSES = ("hem", "all")


def _logits(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.stack([np.zeros(n), (2 * y - 1) * 1.5 + rng.normal(0, 1.5, n)], axis=1)


def _evaluation(point: OperatingPoint, target: float | None) -> dict:
    """The parts of ``EvaluationResult.to_dict()`` the report reads about referral."""
    y, logits = _logits(1, 300)
    plain = evaluate_predictions(y, logits, None, point, bootstrap=0)
    choice = {"target": target} if target is not None else None
    return {"plain": plain, "operating_point": point.to_dict(), "referral_choice": choice}


def _model(name: str, fields: dict) -> ModelResult:
    return ModelResult(
        name=name,
        display_name=f"{name} (random init)",
        weights_source="random init",
        pretrained=False,
        classes=CLASSES,
        positive_class="all",
        metrics={"weighted_f1": 0.8},
        intervals={},
        confusion=[[120, 30], [25, 125]],
        roc=None,
        reliability_before=None,
        reliability_after=None,
        subjects=[],
        history=[],
        train_seconds=None,
        images_per_second=None,
        settings={},
        run_dir=f"runs/{name}",
        threshold=0.5,
        threshold_origin="default threshold, by train",
        **fields,
    )


def test_the_report_shows_the_band_its_test_numbers_and_the_curve(tmp_path: Path) -> None:
    base = OperatingPoint.default(CLASSES, "all")
    y_val, logits_val = _logits(0, 600)
    p_val = np.exp(logits_val) / np.exp(logits_val).sum(axis=1, keepdims=True)
    band = choose_refer_band(y_val, p_val, base, 0.05).band
    banded = referral_fields(_evaluation(replace(base, refer_band=band), 0.05))
    plain = referral_fields(_evaluation(base, None))
    referral = banded["referral"]
    assert referral["band"] == list(band) and referral["target"] == 0.05 and 0 < referral["n_referred"] < 300  # type: ignore[arg-type]
    assert "curve" not in referral and "metrics_called" not in referral
    assert banded["risk_coverage"].band == (referral["coverage"], referral["error_called"])
    assert plain["referral"]["band"] is None and plain["risk_coverage"].band is None

    card = DatasetCard("data", "folders", CLASSES, "all", {"test": {"hem": 150, "all": 150}}, [], True, "synthetic")
    comparison = Comparison(card, [_model("cnn", banded), _model("vgg16", plain)], {}, "2026-01-01 00:00 UTC")
    files = write_report(comparison, tmp_path)
    assert {"referral-cnn.png", "referral-vgg16.png"} <= {path.name for path in files.figures}
    markdown = files.markdown.read_text()
    assert "(figures/referral-cnn.png)" in markdown and "a star marks the refer band chosen on validation" in markdown
    low, high = band  # type: ignore[misc]
    assert f"**Referral**: Cells with {low:.3f} < p(ALL) < {high:.3f} are flagged 'uncertain — refer'" in markdown
    assert "chosen on validation for at most 5% errors among called cells" in markdown
    assert f"{100 * referral['error_called']:.1f}% errors among the rest" in markdown
    assert "**Referral**: No refer band: every cell is called" in markdown
    assert "uncertain — refer" in files.html.read_text()
    results = json.loads(files.json.read_text())
    assert results["models"]["cnn"]["referral"]["band"] == list(band)  # type: ignore[arg-type]
    with files.csv.open(newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert float(rows["cnn"]["error_among_called"]) == referral["error_called"]
    assert rows["vgg16"]["refer_band"] == "" and rows["vgg16"]["error_among_called"] == str(
        plain["referral"]["error_called"]
    )


def test_an_empty_band_reads_as_referring_no_cell(tmp_path: Path) -> None:
    """A band with both edges at the threshold (validation met the target with every cell called) refers nothing: the
    model card said "Cells with 0.5 < p(ALL) < 0.5 are flagged 'uncertain — refer'"."""
    base = OperatingPoint.default(CLASSES, "all")
    empty = referral_fields(_evaluation(replace(base, refer_band=(0.5, 0.5)), 0.2))
    card = DatasetCard("data", "folders", CLASSES, "all", {"test": {"hem": 150, "all": 150}}, [], True, "synthetic")
    files = write_report(Comparison(card, [_model("cnn", empty)], {}, "2026-01-01 00:00 UTC"), tmp_path)
    markdown = files.markdown.read_text()
    errors = f"{100 * empty['referral']['error_all']:.1f}%"
    assert "0.5 < p(ALL) < 0.5" not in markdown
    assert (
        "**Referral**: Refers no cell: validation already met at most 20% errors with every cell called. "
        f"On the test split: {errors} errors, every cell called." in markdown
    )


def test_multiclass_models_have_no_referral() -> None:
    point = OperatingPoint.default(("a", "b", "c"))
    rng = np.random.default_rng(0)
    plain = evaluate_predictions(rng.integers(0, 3, 30), rng.normal(size=(30, 3)), None, point, bootstrap=0)
    fields = referral_fields({"plain": plain, "operating_point": point.to_dict(), "referral_choice": None})
    assert fields == {"referral": None, "risk_coverage": None}


def test_compare_checks_refer_error_first_and_says_where_bands_come_from() -> None:
    with pytest.raises(BlastscopeError, match="--refer-error 1.5 is outside"):
        check_request(CompareConfig(models=("cnn",), refer_error=1.5))
    budget = BUDGETS["demo"]
    rows = [
        budget_table(CompareConfig(**options), budget, [])["refer band"]
        for options in ({"refer_error": 0.05}, {"threshold": "val"}, {})
    ]
    assert rows == [
        "chosen on each run's validation split for at most 5% errors among called cells; stored in each run",
        "none: a newly chosen threshold drops a run's stored band",
        "each run's stored one, if any",
    ]
