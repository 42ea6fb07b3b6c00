"""The comparison as machine-readable files: ``results.csv`` (one row per model) and ``results.json`` (everything).

These are what scripts and notebooks read after a comparison, so the columns are plain numbers, never formatted
text: a CI column pair for a single split, an ``_sd`` column under cross-validation.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blastscope.workflows.report.content import IMAGE_LEVEL_WARNING, INTENDED_USE, model_card
from blastscope.workflows.report.model import (
    HEADLINE_METRICS,
    SUBJECT_METRICS,
    TTA_SUFFIX,
    Comparison,
    ModelResult,
    present_values,
    sample_sd,
)
from blastscope.workflows.report.ranking import best_statement, ranks

ROW_METRICS = (*HEADLINE_METRICS, "loss", "balanced_accuracy", "macro_f1", *SUBJECT_METRICS)
"""A results row's score columns, in order; the headline metrics carry their bootstrap CI on one split."""


def result_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One flat record per model, best first (by ``comparison.rank_by``; ``rank`` shared by tied models and None for
    a model without that score, see :func:`~blastscope.workflows.report.ranking.ranks`): scores with their CI bounds
    or fold sd, test log loss, balanced accuracy and macro F1, the subject-level scores (with the number of test
    subjects, or why they are missing), with TTA every one of these again under its ``_tta`` name, the class it called
    every test cell (None unless it did), calibration, the positive class (None for multi-class models), threshold
    and its origin, the refer band with the share of test cells it referred and the error rate among the rest
    (binary models), speed, run folder."""
    rows = []
    for rank, model in zip(ranks(comparison), comparison.ranked, strict=True):
        row: dict[str, Any] = {
            "rank": rank,
            "ranked_by": comparison.rank_by,
            "model": model.name,
            "display_name": model.display_name,
            "weights_source": model.weights_source,
            "pretrained": model.pretrained,
        }
        for suffix in ("", TTA_SUFFIX) if comparison.tta else ("",):
            for metric in ROW_METRICS:
                row.update(_score_columns(model, metric + suffix, metric in HEADLINE_METRICS, comparison))
            if not suffix:
                row["n_subjects"] = model.n_subjects
                row["subject_scores_missing"] = model.subject_scores_missing
        row["calls_every_cell"] = model.single_class
        before, after = model.report_reliability
        row["ece"] = before.ece if before else None
        row["ece_after_scaling"] = after.ece if after else None
        row["positive_class"] = model.positive_class
        row["threshold"] = model.threshold
        row["threshold_origin"] = model.threshold_origin
        referral = model.referral or {}
        row["refer_band"] = referral.get("band")
        row["referred_share"] = 1 - referral["coverage"] if referral.get("coverage") is not None else None
        row["error_among_called"] = referral.get("error_called")
        row["train_seconds"] = model.train_seconds
        row["images_per_second"] = model.images_per_second
        row["run_dir"] = model.run_dir
        rows.append(row)
    return rows


def _score_columns(model: ModelResult, metric: str, with_ci: bool, comparison: Comparison) -> dict[str, Any]:
    """``metric`` and its spread: ``_sd`` over folds under cross-validation, else ``_ci_low``/``_ci_high`` when the
    bootstrap gives the metric an interval (``with_ci``)."""
    columns: dict[str, Any] = {metric: model.score(metric)}
    if comparison.cv_folds:
        values = present_values(fold.get(metric) for fold in model.fold_metrics)
        columns[f"{metric}_sd"] = sample_sd(values) if values else None
    elif with_ci:
        columns[f"{metric}_ci_low"], columns[f"{metric}_ci_high"] = model.intervals.get(metric, (None, None))
    return columns


def write_results_csv(comparison: Comparison, path: Path) -> None:
    """The rows of :func:`result_rows` as CSV; a comparison without models still gets a header."""
    rows = result_rows(comparison)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["rank", "model"])
        writer.writeheader()
        writer.writerows(rows)


def write_results_json(comparison: Comparison, path: Path) -> None:
    """Everything the report shows as numbers and text, plus each model's full metrics, settings and model card.

    Under cross-validation a model's ``confusion_matrix``, ``classification_report`` and ``subjects`` are the first
    fold's; ``pooled_folds`` holds every fold's test cells together, which the report's figures show.
    """
    path.write_text(json.dumps(_results_document(comparison), indent=2, default=_json_fallback), encoding="utf-8")


def _results_document(comparison: Comparison) -> dict[str, Any]:
    return {
        "title": comparison.title,
        "created": comparison.created,
        "subject_level": comparison.dataset.subject_level,
        "warning": None if comparison.dataset.subject_level else IMAGE_LEVEL_WARNING,
        "intended_use": INTENDED_USE,
        "interval": comparison.interval_label,
        "cv_folds": comparison.cv_folds,
        "positive_class": comparison.dataset.positive_class,
        "ranked_by": comparison.rank_by,
        "best": best_statement(comparison),
        "tta": comparison.tta,
        "budget": comparison.budget,
        "ranking": result_rows(comparison),
        "dataset": asdict(comparison.dataset),
        "models": {
            model.name: {
                "display_name": model.display_name,
                "weights_source": model.weights_source,
                "metrics": model.metrics,
                "intervals": model.intervals,
                "fold_metrics": model.fold_metrics,
                "confusion_matrix": model.confusion,
                "classification_report": [asdict(score) for score in model.class_scores()],
                "calls_every_cell": model.single_class,
                "fold_confusion_matrices": model.fold_confusions,
                "calls_every_cell_in_folds": model.single_class_folds,
                "pooled_folds": _pooled_document(model),
                "positive_class": model.positive_class,
                "threshold": model.threshold,
                "threshold_origin": model.threshold_origin,
                "operating_point": model.operating_point,
                "referral": model.referral,
                "subjects": [asdict(s) for s in model.subjects],
                "settings": model.settings,
                "model_card": dict(model_card(model, comparison.dataset, comparison.cv_folds)),
            }
            for model in comparison.ranked
        },
    }


def _pooled_document(model: ModelResult) -> dict[str, Any] | None:
    """Cross-validation: every fold's test cells together (``PooledFolds``), with the classification report of their
    confusion matrix, as the report shows them; None when the result has no pooled folds."""
    if model.pooled is None:
        return None
    scores = model.class_scores(model.pooled.confusion)
    return {**asdict(model.pooled), "classification_report": [asdict(score) for score in scores]}


def _json_fallback(value: object) -> object:
    """JSON fallback for the few non-JSON types settings may hold (paths, tuples inside dataclasses, numpy scalars)."""
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    return str(value)
