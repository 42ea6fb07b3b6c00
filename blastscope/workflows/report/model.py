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
"""Metrics with a 95% CI (single split) or mean ± sd (cross-validation) in the ranking."""

SUBJECT_METRICS = ("subject_accuracy", "subject_balanced_accuracy")
"""Scores of one decision per test subject (the mean probability of their cells, decided at the model's threshold)."""

RANK_METRICS = (*HEADLINE_METRICS, "balanced_accuracy", "macro_f1", *SUBJECT_METRICS)
"""What a comparison can be ranked by (``--rank-by``; higher is better); ``weighted_f1``, the C-NMC 2019 challenge
metric, by default. With test-time augmentation each also has a :data:`TTA_SUFFIX` variant."""

DEFAULT_RANK_METRIC = "weighted_f1"

TTA_SUFFIX = "_tta"
"""Appended to a metric's name for its value with test-time augmentation (8 views), at the same operating point."""

TTA_LABEL = "with TTA (8 views)"
"""How every table names the numbers with test-time augmentation."""

FOLD_METRICS = (*RANK_METRICS, "loss")
"""What each fold of a cross-validation reports in ``ModelResult.fold_metrics`` (with TTA, each also with
:data:`TTA_SUFFIX`): the rankable metrics and the test log loss, which the ranking shows beside accuracy (without an
interval: the bootstrap does not resample it)."""

METRIC_LABELS = {
    "weighted_f1": "weighted F1",
    "accuracy": "accuracy",
    "loss": "log loss",
    "roc_auc": "ROC-AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "balanced_accuracy": "balanced accuracy",
    "macro_f1": "macro F1",
    "subject_accuracy": "subject accuracy",
    "subject_balanced_accuracy": "subject balanced accuracy",
}
"""Every metric a model's section lists, in order, with the name a reader sees."""


def rank_metric_choices(tta: bool) -> tuple[str, ...]:
    """The metrics a comparison can be ranked by: :data:`RANK_METRICS`, and with ``tta`` their TTA variants too."""
    return RANK_METRICS + (tuple(name + TTA_SUFFIX for name in RANK_METRICS) if tta else ())


def metric_label(metric: str) -> str:
    """The name a reader sees: ``weighted F1``, or ``weighted F1 with TTA (8 views)`` for ``weighted_f1_tta``."""
    if metric.endswith(TTA_SUFFIX):
        return f"{METRIC_LABELS[metric.removesuffix(TTA_SUFFIX)]} {TTA_LABEL}"
    return METRIC_LABELS[metric]


def is_subject_metric(metric: str) -> bool:
    """Whether ``metric`` (or its TTA variant) scores one decision per subject."""
    return metric.removesuffix(TTA_SUFFIX) in SUBJECT_METRICS


@dataclass(slots=True)
class DatasetCard:
    """What the models were trained and tested on, and where it comes from."""

    root: str
    kind: str
    classes: tuple[str, ...]
    positive_class: str | None
    """The class every model's threshold, sensitivity and ROC curve are about, as the runs recorded it (never read
    from the order of :attr:`classes`); None for data of more than two classes (most probable class)."""
    cells_per_part: dict[str, dict[str, int]]
    """split part (train/val/test) -> class -> cells."""
    subjects: list[tuple[str, str, str, int]]
    """(subject, class, part, cells), one row per subject; empty when the data carries no subject ids."""
    subject_level: bool
    attribution: str
    duplicates: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_positive(self.positive_class, self.classes, f"the dataset card of {self.root}")

    def cells_per_class(self) -> dict[str, int]:
        """Cells of each class over all parts."""
        return {name: sum(part.get(name, 0) for part in self.cells_per_part.values()) for name in self.classes}

    def subjects_per_class(self) -> dict[str, int]:
        """Distinct subjects of each class over all parts."""
        return {name: len({row[0] for row in self.subjects if row[1] == name}) for name in self.classes}


@dataclass(frozen=True, slots=True)
class PooledFolds:
    """Cross-validation: every fold's test cells together, each scored by the fold's model that never trained on it.

    The folds' test parts are disjoint and cover every subject, so each subject is tested exactly once, and each cell is
    decided at its own fold's operating point (temperature and threshold). This is the whole picture the per-model
    figures and the classification report show; the ranking keeps the fold mean ± sd.
    """

    folds: int
    thresholds: list[float | None]
    """Each fold's threshold on p(positive), in fold order; None for multi-class folds (most probable class)."""
    scaled_folds: list[int]
    """The folds (1-based) whose operating point has a temperature; the others' cells count unscaled in
    :attr:`reliability_after`."""
    confusion: list[list[int]]
    """The sum of the folds' test confusion matrices (rows true, columns decided)."""
    roc: tuple[list[float], list[float]] | None
    """False and true positive rates over every fold's p(positive) (at its fold's temperature); None for multi-class
    or one-class data."""
    roc_auc: float | None
    """The area under :attr:`roc`; None without it."""
    reliability_before: plots.ReliabilityCurve | None
    """Every fold's reliability bins before temperature scaling, merged (bins of equal confidence range added)."""
    reliability_after: plots.ReliabilityCurve | None
    """The same after each fold's temperature; None when no fold has one."""
    subjects: list[plots.SubjectAccuracy]
    """Every fold's test subjects, each once; empty without subject ids."""
    risk_coverage: plots.RiskCoverage | None
    """Binary models: the risk-coverage curve of every fold's cells, each ranked by its margin from its fold's
    threshold, with the point every fold's refer band reached together."""


@dataclass(slots=True)
class ModelResult:
    """One model's evaluation on the shared test split, with what is needed for its model card."""

    name: str
    display_name: str
    weights_source: str
    pretrained: bool
    classes: tuple[str, ...]
    positive_class: str | None
    """The class its threshold is on (its operating point's); None for multi-class models (most probable class)."""
    metrics: dict[str, float | None]
    """The test split's numbers by name: ``classification_metrics``' numeric entries (e.g. ``loss``: log loss), the
    :data:`SUBJECT_METRICS` (None without subject scores) and, with TTA, each of :data:`FOLD_METRICS` again under its
    :data:`TTA_SUFFIX` name."""
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
    """Cross-validation only: the :data:`FOLD_METRICS` of every fold (the fields above describe the first fold)."""
    fold_confusions: list[list[list[int]]] = field(default_factory=list)
    """Cross-validation only: every fold's test confusion matrix (rows true, columns decided), in fold order."""
    threshold: float | None = None
    """The threshold on p(positive class) the test cells were decided at; None when not recorded (or multi-class)."""
    threshold_origin: str = ""
    """Where that threshold came from (``OperatingPoint.origin()``), e.g. ``default threshold, by train``."""
    operating_point: dict[str, Any] | None = None
    """The whole operating point (``OperatingPoint.to_dict()``), for results.json."""
    referral: dict[str, Any] | None = None
    """Binary models: what the refer band did on the test cells (``band`` or None, ``n``, ``n_referred``,
    ``coverage``, ``error_all``, ``error_called``) and the ``target`` error rate it was chosen for (None if unknown)."""
    risk_coverage: plots.RiskCoverage | None = None
    """Binary models: errors among called test cells against the share called, with the band marked."""
    n_subjects: int | None = None
    """How many test subjects the subject-level scores decided (the first fold's); None without subject scores."""
    subject_scores_missing: str | None = None
    """Why the subject-level scores are n/a (``no subject ids``); None when they were measured."""
    best_epoch: int | None = None
    """The epoch (1-based, as in history.csv) of the checkpoint scored, the best by ``--monitor`` over every phase;
    None for runs recorded before metrics.json kept it."""
    pooled: PooledFolds | None = None
    """Cross-validation: every fold's test cells together, which the confusion matrix, classification report, ROC,
    reliability, per-subject and risk-coverage figures show. None for one split, and for a result built without it,
    whose figures show the first fold (and say so)."""

    def __post_init__(self) -> None:
        _check_positive(self.positive_class, self.classes, f"model {self.name}")

    @property
    def report_confusion(self) -> list[list[int]]:
        """The confusion matrix the report shows: :attr:`pooled`'s when recorded, else :attr:`confusion`."""
        return self.pooled.confusion if self.pooled is not None else self.confusion

    @property
    def report_reliability(self) -> tuple[plots.ReliabilityCurve | None, plots.ReliabilityCurve | None]:
        """The reliability curves (before, after temperature scaling) the report shows and its ECE column reads:
        :attr:`pooled`'s when recorded, else the test split's."""
        if self.pooled is not None:
            return self.pooled.reliability_before, self.pooled.reliability_after
        return self.reliability_before, self.reliability_after

    @property
    def single_class(self) -> str | None:
        """The class this model called every test cell, when it decided all of them alike; else None. Under
        cross-validation, that of the first fold where it did (:attr:`single_class_folds` lists them all).

        Such a model learned nothing usable about the cells (at its threshold): its accuracy and F1 only restate
        the test split's class balance.
        """
        for confusion in self.fold_confusions or [self.confusion]:
            if (only := _only_class_decided(confusion, self.classes)) is not None:
                return only
        return None

    @property
    def single_class_folds(self) -> list[int]:
        """Cross-validation only: the folds (1-based) whose every test cell this model decided as one class."""
        return [
            i + 1 for i, confusion in enumerate(self.fold_confusions) if _only_class_decided(confusion, self.classes)
        ]

    def class_scores(self, confusion: Sequence[Sequence[int]] | None = None) -> list[ClassScore]:
        """Precision, recall, F1 and support of each class, from ``confusion`` (rows true, columns decided; by default
        :attr:`confusion`), zero where undefined."""
        matrix = self.confusion if confusion is None else confusion
        decided = _decided_per_class(matrix, len(self.classes))
        scores = []
        for index, name in enumerate(self.classes):
            hits = matrix[index][index]
            support = sum(matrix[index])
            predicted = decided[index]
            precision = hits / predicted if predicted else 0.0
            recall = hits / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            scores.append(ClassScore(name, precision, recall, f1, support))
        return scores

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


@dataclass(frozen=True, slots=True)
class ClassScore:
    """One row of a classification report: how well one class was found on the test split."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


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
    rank_by: str = DEFAULT_RANK_METRIC
    """The metric of :func:`rank_metric_choices` the models are ranked by."""
    tta: bool = False
    """Whether every model was also scored with test-time augmentation (the ``_tta`` metrics)."""

    def __post_init__(self) -> None:
        """Refuse models whose positive class is not the dataset card's: one report line would contradict another."""
        positive = self.dataset.positive_class
        others = [f"{model.name} ({model.positive_class})" for model in self.models if model.positive_class != positive]
        if others:
            raise ValueError(f"positive class {positive}, but {', '.join(others)} decided about another class")

    @property
    def ranked(self) -> list[ModelResult]:
        """Models by :attr:`rank_by`, best first; a model without that score ranks last (see :attr:`unranked`)."""
        return sorted(self.models, key=lambda m: -value_or(m.score(self.rank_by), -math.inf))

    @property
    def unranked(self) -> list[ModelResult]:
        """The models ranked last because their :attr:`rank_by` score is n/a, in ranking order."""
        return [model for model in self.ranked if math.isnan(value_or(model.score(self.rank_by), math.nan))]

    @property
    def interval_label(self) -> str:
        """What the error bars and brackets mean, for captions and table notes."""
        if self.cv_folds:
            return f"mean ± sd over {self.cv_folds} subject-grouped folds"
        return f"95% bootstrap CI, resampling {self.bootstrap_unit}"


def _check_positive(positive: str | None, classes: Sequence[str], what: str) -> None:
    """Binary classes have a positive class among them; more classes have none (a wrong one would swap sensitivity
    and specificity in every line that names it)."""
    fits = positive in classes if len(classes) == 2 else positive is None
    if not fits:
        raise ValueError(f"{what}: positive class {positive!r} does not fit the classes {', '.join(classes)}")


def _decided_per_class(confusion: Sequence[Sequence[int]], n_classes: int) -> list[int]:
    """A confusion matrix's (rows true, columns decided) column sums: how many cells were decided as each class."""
    return [sum(row[column] for row in confusion) for column in range(n_classes)]


def _only_class_decided(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> str | None:
    """The class every cell of a confusion matrix (rows true, columns decided) was decided as, if only one was."""
    counts = _decided_per_class(confusion, len(classes))
    if len(counts) < 2 or sum(counts) == 0:
        return None
    used = [column for column, count in enumerate(counts) if count]
    return classes[used[0]] if len(used) == 1 else None


def present_values(values: Iterable[float | None]) -> list[float]:
    """The values that were measured: None (not computed) and NaN (undefined, e.g. one class only) dropped."""
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def sample_sd(values: Sequence[float]) -> float:
    """Sample standard deviation, 0 for a single value (one fold has no spread to show)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def value_or(value: float | None, default: float) -> float:
    """``value``, or ``default`` when it is None or NaN, so that sorting and plotting never meet a missing number."""
    return default if value is None or math.isnan(value) else value
