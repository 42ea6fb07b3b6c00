"""What a comparison report shows, as plain numbers: the dataset card, each model's result, and the comparison.

:mod:`blastscope.workflows.compare` fills these records from trained runs; every renderer reads only them, so a
report can be written (and tested) without training anything. The ranking rules (fold means under cross-validation,
bootstrap intervals otherwise) live here so that every output format ranks and bounds scores the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from blastscope.evaluation import plots

HEADLINE_METRICS = ("weighted_f1", "accuracy", "roc_auc", "sensitivity", "specificity")
"""Metrics with a 95% CI (single split) or mean ± sd (cross-validation) in the ranking; weighted F1 ranks."""

METRIC_LABELS = {
    "weighted_f1": "weighted F1",
    "accuracy": "accuracy",
    "roc_auc": "ROC-AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
}
"""Every metric a model's section lists, in order, with the name a reader sees."""


@dataclass(slots=True)
class DatasetCard:
    """What the models were trained and tested on, and where it comes from."""

    root: str
    kind: str
    classes: tuple[str, ...]
    cells_per_part: dict[str, dict[str, int]]
    """split part (train/val/test) -> class -> cells."""
    subjects: list[tuple[str, str, str, int]]
    """(subject, class, part, cells), one row per subject; empty when the data carries no subject ids."""
    subject_level: bool
    attribution: str
    duplicates: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def cells_per_class(self) -> dict[str, int]:
        """Cells of each class over all parts."""
        return {name: sum(part.get(name, 0) for part in self.cells_per_part.values()) for name in self.classes}

    def subjects_per_class(self) -> dict[str, int]:
        """Distinct subjects of each class over all parts."""
        return {name: len({row[0] for row in self.subjects if row[1] == name}) for name in self.classes}


@dataclass(slots=True)
class ModelResult:
    """One model's evaluation on the shared test split, with what is needed for its model card."""

    name: str
    display_name: str
    weights_source: str
    pretrained: bool
    classes: tuple[str, ...]
    threshold: float
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float]]
    confusion: list[list[int]]
    roc: tuple[list[float], list[float]] | None
    reliability_before: plots.ReliabilityCurve | None
    reliability_after: plots.ReliabilityCurve | None
    subjects: list[plots.SubjectAccuracy]
    history: list[plots.HistoryRow]
    train_seconds: float | None
    images_per_second: float | None
    settings: dict[str, Any]
    run_dir: str
    fold_metrics: list[dict[str, float | None]] = field(default_factory=list)
    """Cross-validation only: the headline metrics of every fold (the fields above describe the first fold)."""

    def score(self, metric: str) -> float | None:
        """The number a ranking shows: the fold mean under cross-validation, else the test split's value."""
        if self.fold_metrics:
            values = present_values(fold.get(metric) for fold in self.fold_metrics)
            return statistics.fmean(values) if values else None
        return self.metrics.get(metric)

    def spread(self, metric: str) -> tuple[float, float] | None:
        """Error bar bounds: mean ± sd over folds under cross-validation, else the 95% CI."""
        if self.fold_metrics:
            values = present_values(fold.get(metric) for fold in self.fold_metrics)
            if not values:
                return None
            mean, sd = statistics.fmean(values), sample_sd(values)
            return mean - sd, mean + sd
        return self.intervals.get(metric)


@dataclass(slots=True)
class Comparison:
    """Everything a report shows: the shared budget, the data, and every model's result."""

    dataset: DatasetCard
    models: list[ModelResult]
    budget: dict[str, Any]
    created: str
    cv_folds: int | None = None
    bootstrap_unit: str = "subjects"
    title: str = "blastscope model comparison"

    @property
    def ranked(self) -> list[ModelResult]:
        """Models by weighted F1, best first; a model without a score ranks last."""
        return sorted(self.models, key=lambda m: -value_or(m.score("weighted_f1"), -math.inf))

    @property
    def interval_label(self) -> str:
        """What the error bars and brackets mean, for captions and table notes."""
        if self.cv_folds:
            return f"mean ± sd over {self.cv_folds} subject-grouped folds"
        return f"95% bootstrap CI, resampling {self.bootstrap_unit}"


def present_values(values: Iterable[float | None]) -> list[float]:
    """The values that were measured: None (not computed) and NaN (undefined, e.g. one class only) dropped."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation, 0 for a single value (one fold has no spread to show)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def value_or(value: float | None, default: float) -> float:
    """``value``, or ``default`` when it is None or NaN, so that sorting and plotting never meet a missing number."""
    return default if value is None or math.isnan(value) else value
