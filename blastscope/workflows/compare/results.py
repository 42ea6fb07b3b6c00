"""From evaluations to the report's records: one :class:`ModelResult` per model, and the shared budget table.

:func:`model_result_from_evaluation` joins one evaluation (``EvaluationResult.to_dict()``) with its run's recipe,
timings and history; where the model decided comes from :func:`decision_fields`. Under cross-validation
:func:`pooled_folds` puts every fold's test cells together for the report's figures and classification report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import auc, roc_curve

from blastscope.data.text_table import in_words
from blastscope.errors import BlastscopeError
from blastscope.evaluation import plots
from blastscope.evaluation.referral import risk_coverage
from blastscope.inference.decision import OperatingPoint
from blastscope.workflows.compare.cards import read_history
from blastscope.workflows.compare.config import Budget, CompareConfig, threshold_text
from blastscope.workflows.compare.jobs import FoldEvaluation
from blastscope.workflows.report import (
    FOLD_METRICS,
    SUBJECT_METRICS,
    TTA_LABEL,
    TTA_SUFFIX,
    ModelResult,
    PooledFolds,
    metric_label,
)

Evaluations = dict[tuple[str, int], FoldEvaluation]
"""(model, fold) -> that run's evaluation on its fold's test part."""

TRAINING_SETTINGS = (
    "image_size",
    "epochs_frozen",
    "epochs_finetune",
    "lr_head",
    "lr_finetune",
    "unfreeze_stages",
    "batch_size",
    "weight_decay",
    "label_smoothing",
    "class_balance",
    "head_fit",
    "seed",
    "resolved_precision",
    "cached_features",
    "split_hash",
)
"""The recipe fields a model card lists, in order (``augmentation`` follows them)."""


def model_result(model: str, evaluations: Evaluations, folds: int) -> ModelResult:
    """The report's view of one model: the first fold in detail, every fold's headline metrics under CV.

    Parameters
    ----------
    model : str
    evaluations : dict
        :data:`Evaluations` of every model and fold.
    folds : int
        1 for one shared split, K under cross-validation.

    Returns
    -------
    ModelResult
        From the first fold's run. When ``folds > 1``, ``fold_metrics`` and ``fold_confusions`` hold every fold's
        :func:`evaluation_scores` and confusion matrix, and ``pooled`` every fold's test cells (:func:`pooled_folds`).
    """
    first = evaluations[model, 0]
    recipe = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    metrics = json.loads((first.run_dir / "metrics.json").read_text())
    result = model_result_from_evaluation(first.evaluation, recipe, metrics, first.run_dir)
    if folds > 1:
        every = [evaluations[model, fold] for fold in range(folds)]
        result.fold_metrics = [evaluation_scores(fold.evaluation) for fold in every]
        result.fold_confusions = [fold.evaluation["plain"]["metrics"]["confusion_matrix"] for fold in every]
        result.pooled = pooled_folds(every)
    return result


def pooled_folds(folds: Sequence[FoldEvaluation]) -> PooledFolds:
    """Every fold's test cells together: each subject tested once, by the fold model that never trained on it.

    Parameters
    ----------
    folds : sequence of FoldEvaluation
        One model's evaluations, in fold order, of folds whose test parts are disjoint (``kfold_splits``).

    Returns
    -------
    PooledFolds
        The summed confusion matrices, every fold's per-subject rows, the merged reliability bins, and from the
        per-cell rows the ROC curve and the risk-coverage curve of the pooled cells (binary models).

    Raises
    ------
    ValueError
        When a test cell appears in two folds' evaluations: pooling them would test it twice.
    """
    evaluations = [fold.evaluation for fold in folds]
    points = [OperatingPoint.from_dict(evaluation["operating_point"]) for evaluation in evaluations]
    rows = [row for fold in folds for row in fold.predictions]
    paths = [row["path"] for row in rows]
    if len(set(paths)) != len(paths):
        raise ValueError(f"the {len(folds)} folds' test parts overlap, so pooling them would test some cells twice")
    matrices = np.array([evaluation["plain"]["metrics"]["confusion_matrix"] for evaluation in evaluations])
    calibrations = [evaluation["plain"].get("calibration") or {} for evaluation in evaluations]
    befores = [calibration.get("before") for calibration in calibrations]
    afters = [calibration.get("after") for calibration in calibrations]
    positives = {point.positive_class for point in points}
    if len(positives) > 1:
        raise ValueError(f"the {len(folds)} folds decide about different positive classes ({positives}); cannot pool")
    binary = all(point.binary for point in points)
    roc, auc = _pooled_roc(rows, points[0]) if binary else (None, None)
    return PooledFolds(
        folds=len(folds),
        thresholds=[point.threshold if point.binary else None for point in points],
        scaled_folds=[index + 1 for index, after in enumerate(afters) if after],
        confusion=matrices.sum(axis=0).tolist(),
        roc=roc,
        roc_auc=auc,
        reliability_before=_merged_bins(befores) if all(befores) else None,
        reliability_after=_merged_bins([after or before for after, before in zip(afters, befores, strict=True)])
        if any(afters) and all(befores)
        else None,
        subjects=sorted(
            (
                plots.SubjectAccuracy(str(s["subject"]), s["true_class"], float(s["accuracy"]), int(s["n_cells"]))
                for evaluation in evaluations
                for s in (evaluation["plain"].get("subjects") or {}).get("per_subject", [])
            ),
            key=lambda s: (s.true_class, s.accuracy, s.subject),
        ),
        risk_coverage=_pooled_risk_coverage(rows, evaluations, points) if binary and rows else None,
    )


def _pooled_roc(
    rows: Sequence[dict[str, Any]], point: OperatingPoint
) -> tuple[tuple[list[float], list[float]] | None, float | None]:
    """The ROC curve and its area over every pooled cell's p(positive); (None, None) when one class is missing."""
    y_true = np.array([point.classes.index(row["label"]) for row in rows], dtype=np.int64)
    if len(np.unique(y_true)) < len(point.classes):
        return None, None
    p_positive = np.array([row[f"p_{point.positive_class}"] for row in rows], dtype=np.float64)
    fpr, tpr, _ = roc_curve(y_true == point.positive_index, p_positive)
    return (fpr.tolist(), tpr.tolist()), float(auc(fpr, tpr))


def _merged_bins(curves: Sequence[dict[str, Any]]) -> plots.ReliabilityCurve:
    """One reliability curve from several folds' (:func:`~blastscope.evaluation.calibration.reliability`): the cells
    of bins covering the same confidence range added, and the ECE of the merged bins.

    A bin's mean confidence lies inside its range, so it names the bin (the last range closed by a bin of its own for
    a confidence of exactly 1.0, as there).
    """
    sizes = {int(curve["n_bins"]) for curve in curves}
    if len(sizes) != 1:
        raise ValueError(f"the folds' reliability curves have different bin counts ({sorted(sizes)}); cannot merge")
    edges = np.linspace(0.0, 1.0, sizes.pop() + 1)
    totals: dict[int, list[float]] = {}  # bin -> [cells, sum of confidences, correct cells]
    for curve in curves:
        for confidence, accuracy, count in zip(curve["confidence"], curve["accuracy"], curve["counts"], strict=True):
            total = totals.setdefault(int(np.searchsorted(edges, confidence, side="right")) - 1, [0.0, 0.0, 0.0])
            total[0] += count
            total[1] += confidence * count
            total[2] += accuracy * count
    merged = [totals[index] for index in sorted(totals)]
    cells = sum(total[0] for total in merged)
    return plots.ReliabilityCurve(
        confidence=[total[1] / total[0] for total in merged],
        accuracy=[total[2] / total[0] for total in merged],
        counts=[int(total[0]) for total in merged],
        ece=sum(abs(total[2] - total[1]) for total in merged) / cells,
    )


def _pooled_risk_coverage(
    rows: Sequence[dict[str, Any]], evaluations: Sequence[dict[str, Any]], points: Sequence[OperatingPoint]
) -> plots.RiskCoverage:
    """The risk-coverage curve of every pooled cell, each ranked by its margin from its own fold's threshold, with
    the point every fold's refer band reached on its cells (when any fold has a band).

    Each p(positive) is moved piecewise linearly so that its fold's threshold lands at 0.5: that keeps the margin
    scaled to each side, which is all :func:`~blastscope.evaluation.referral.risk_coverage` ranks cells by.
    """
    positive = points[0].positive_class
    p = np.array([row[f"p_{positive}"] for row in rows], dtype=np.float64)
    threshold = np.array([row["threshold"] for row in rows], dtype=np.float64)
    wrong = np.array([row["decided_label"] != row["label"] for row in rows])
    referred = np.array([bool(row["referred"]) for row in rows])
    scale = np.where(p >= threshold, 1.0 - threshold, threshold)
    margin = np.abs(p - threshold) / np.maximum(scale, np.finfo(np.float64).tiny)
    centred = 0.5 + np.where(p >= threshold, 0.5, -0.5) * margin
    coverage, error = risk_coverage(centred, wrong, 0.5)
    with_band = [index + 1 for index, point in enumerate(points) if point.refer_band is not None]
    choices = [evaluation.get("referral_choice") for evaluation in evaluations]
    targets = {choice["target"] if choice else None for choice in choices}
    target = targets.pop() if len(targets) == 1 else None
    curve = plots.RiskCoverage(coverage.tolist(), error.tolist(), target=target, n_cells=len(rows))
    if not with_band:
        return curve
    called = ~referred
    band = (float(called.mean()), float(wrong[called].mean()) if called.any() else None)
    without = [str(index + 1) for index, point in enumerate(points) if point.refer_band is None]
    label = "each fold's refer band"
    if without:
        several = "s" * (len(with_band) > 1)
        label = (
            f"the refer band{several} of fold{several} {in_words([str(fold) for fold in with_band])} "
            f"(none in fold{'s' * (len(without) > 1)} {in_words(without)})"
        )
    return plots.RiskCoverage(coverage.tolist(), error.tolist(), band, label, target, len(rows))


def evaluation_scores(evaluation: dict[str, Any]) -> dict[str, float | None]:
    """The numbers a comparison ranks and tabulates, from one evaluation.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()``; its ``tta`` section, when present, gives the :data:`TTA_SUFFIX` names.

    Returns
    -------
    dict
        Every name of :data:`FOLD_METRICS` (and with TTA each again with the suffix) -> value, None when not measured.
        The subject-level scores (the evaluation's ``subjects.subject_level`` accuracy and balanced accuracy) are None
        when :func:`subject_scores_missing` gives a reason.
    """
    honest = subject_scores_missing(evaluation) is None
    scores = _section_scores(evaluation["plain"], honest)
    if evaluation.get("tta"):
        scores.update({name + TTA_SUFFIX: value for name, value in _section_scores(evaluation["tta"], honest).items()})
    return scores


def _section_scores(section: dict[str, Any], with_subjects: bool) -> dict[str, float | None]:
    """:data:`FOLD_METRICS` of one section (``plain`` or ``tta``) of an evaluation."""
    subject_level = ((section.get("subjects") or {}).get("subject_level") or {}) if with_subjects else {}
    from_subjects = {name: subject_level.get(name.removeprefix("subject_")) for name in SUBJECT_METRICS}
    return {
        name: from_subjects[name] if name in from_subjects else section["metrics"].get(name) for name in FOLD_METRICS
    }


def subject_scores_missing(evaluation: dict[str, Any]) -> str | None:
    """Why an evaluation has no honest subject-level scores, or None when it has them.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()``.

    Returns
    -------
    str or None
        ``no subject ids`` when some test cell has none (the evaluation then scores no subjects); ``image-level
        split`` when the test subjects also gave cells to training (their scores would flatter the model).
    """
    if not evaluation["plain"].get("subjects"):
        return "no subject ids"
    if not evaluation.get("subject_level", True):
        return "image-level split"
    return None


def model_result_from_evaluation(
    evaluation: dict[str, Any], recipe: dict[str, Any], metrics: dict[str, Any], run_dir: Path
) -> ModelResult:
    """Join an evaluation with the run's recipe, timings and training history.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()`` of the run's test part.
    recipe : dict
        The run's ``config.yaml``.
    metrics : dict
        The run's ``metrics.json`` (``training``: train seconds and images per second).
    run_dir : path
        The run folder (its ``history.csv`` gives the training curves).

    Returns
    -------
    ModelResult
        With the fields of :func:`decision_fields`; the report derives the test loss and the classification report
        from ``metrics`` and the confusion matrix.
    """
    plain = evaluation["plain"]
    calibration = plain.get("calibration") or {}
    training = metrics.get("training") or {}
    roc = plain.get("roc")
    missing = subject_scores_missing(evaluation)
    intervals = _intervals(plain)
    if evaluation.get("tta"):
        intervals.update({name + TTA_SUFFIX: bounds for name, bounds in _intervals(evaluation["tta"]).items()})
    return ModelResult(
        **decision_fields(evaluation),
        **referral_fields(evaluation),
        name=evaluation["model"],
        display_name=evaluation["display_name"],
        weights_source=evaluation["weights_source"],
        pretrained=bool(evaluation["pretrained"]),
        classes=tuple(evaluation["classes"]),
        metrics={
            **{
                key: value
                for key, value in plain["metrics"].items()
                if isinstance(value, (int, float)) or value is None
            },
            **evaluation_scores(evaluation),
        },
        intervals=intervals,
        n_subjects=None if missing else plain["subjects"]["n_subjects"],
        subject_scores_missing=missing,
        confusion=plain["metrics"]["confusion_matrix"],
        roc=(roc["fpr"], roc["tpr"]) if roc else None,
        reliability_before=_reliability(calibration.get("before")),
        reliability_after=_reliability(calibration.get("after")),
        subjects=[
            plots.SubjectAccuracy(str(row["subject"]), row["true_class"], float(row["accuracy"]), int(row["n_cells"]))
            for row in (plain.get("subjects") or {}).get("per_subject", [])
        ],
        history=read_history(run_dir / "history.csv"),
        best_epoch=training.get("best_epoch"),
        train_seconds=training.get("train_seconds"),
        images_per_second=training.get("images_per_second"),
        settings=training_settings(recipe),
        run_dir=str(run_dir),
    )


def decision_fields(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Where a model decided in an evaluation, for its ``ModelResult``.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()``.

    Returns
    -------
    dict
        ``positive_class`` (str, the class the threshold is on; None for multi-class data), ``threshold`` (float: the
        threshold on p(positive); 0.5 and unused for multi-class data), ``threshold_origin`` (str,
        ``OperatingPoint.origin()``, e.g. "chosen on val (240 cells) for best weighted F1, reaching 0.9120 there, by
        compare; temperature 1.310") and ``operating_point`` (dict, the full ``OperatingPoint.to_dict()``).
    """
    point = OperatingPoint.from_dict(evaluation["operating_point"])
    return {
        "positive_class": point.positive_class,
        "threshold": point.threshold,
        "threshold_origin": point.origin(),
        "operating_point": point.to_dict(),
    }


def runs_positive_class(evaluations: Evaluations) -> str | None:
    """The positive class every run of a comparison decided about, from their operating points.

    Parameters
    ----------
    evaluations : dict
        :data:`Evaluations` of every model and fold.

    Returns
    -------
    str or None
        The class; None when the data has more than two classes (each cell gets its most probable class).

    Raises
    ------
    BlastscopeError
        When the runs disagree (e.g. a run reused from an older comparison): one report cannot name two positive
        classes, and sensitivity of one is specificity of the other.
    """
    by_class: dict[str | None, list[str]] = {}
    for (model, fold), found in evaluations.items():
        positive = OperatingPoint.from_dict(found.evaluation["operating_point"]).positive_class
        by_class.setdefault(positive, []).append(f"{model} fold {fold + 1} ({found.run_dir})")
    if len(by_class) > 1:
        which = "; ".join(f"{positive}: {', '.join(runs)}" for positive, runs in by_class.items())
        raise BlastscopeError(
            f"the runs of this comparison decide about different positive classes ({which}); retrain the odd ones "
            "out with the same --positive-class, or compare into a new --out"
        )
    return next(iter(by_class), None)


def referral_fields(evaluation: dict[str, Any]) -> dict[str, Any]:
    """What the refer band did on the test cells, for a binary model's ``ModelResult``.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()``.

    Returns
    -------
    dict
        ``referral`` (``band``, ``n``, ``n_referred``, ``coverage``, ``error_all``, ``error_called`` and the
        ``target`` it was chosen for, ``None`` when not chosen by this evaluation) and ``risk_coverage`` (the curve
        with the band marked); both ``None`` for multi-class models.
    """
    referral = evaluation["plain"].get("referral")
    if referral is None:
        return {"referral": None, "risk_coverage": None}
    choice = evaluation.get("referral_choice")
    target = choice["target"] if choice else None
    summary = {key: value for key, value in referral.items() if key not in ("curve", "metrics_called")}
    positive = OperatingPoint.from_dict(evaluation["operating_point"]).positive_class
    curve = None
    if referral["curve"]["coverage"]:
        curve = plots.RiskCoverage.from_report(referral, positive, target)  # type: ignore[arg-type]
    return {"referral": {**summary, "target": target}, "risk_coverage": curve}


def _intervals(section: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The bootstrap intervals of one section (``plain`` or ``tta``) of an evaluation, by metric."""
    boot = section.get("bootstrap") or {"metrics": {}}
    return {
        name: (interval["low"], interval["high"])
        for name, interval in boot["metrics"].items()
        if interval.get("low") is not None
    }


def _reliability(data: dict[str, Any] | None) -> plots.ReliabilityCurve | None:
    if not data:
        return None
    return plots.ReliabilityCurve(data["confidence"], data["accuracy"], data["counts"], float(data["ece"]))


def bootstrap_unit(evaluations: Evaluations) -> str:
    """What the bootstrap resampled, for the report's captions.

    Parameters
    ----------
    evaluations : dict
        :data:`Evaluations`.

    Returns
    -------
    str
        ``subjects`` when every evaluation resampled subjects, else ``cells``.
    """
    units = {(fold.evaluation["plain"].get("bootstrap") or {}).get("unit") for fold in evaluations.values()}
    return "subjects" if units == {"subject"} else "cells"


def training_settings(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a reader of a model card needs, with the input size the model really used.

    Parameters
    ----------
    recipe : dict
        The run's ``config.yaml``.

    Returns
    -------
    dict
        :data:`TRAINING_SETTINGS` (``image_size`` from the run's preprocessing when it has one; ``lr_finetune`` and
        ``unfreeze_stages`` None, left off the card, without a fine-tuning phase; ``cached_features`` None for random
        init) and ``augmentation`` (the switches that are on, or ``defaults``; "none" for a head trained on cached
        features only, which never saw an augmented image).
    """
    settings = {key: recipe.get(key) for key in TRAINING_SETTINGS}
    if not recipe.get("epochs_finetune") or recipe.get("weights_pretrained") is False:
        for key in ("lr_finetune", "unfreeze_stages"):  # a head-only or from-scratch run has no fine-tuning phase
            settings[key] = None
    settings["image_size"] = (recipe.get("preprocessing") or {}).get("input_size", recipe.get("image_size"))
    switched_on = sorted(key for key, value in (recipe.get("augmentation") or {}).items() if value is True)
    settings["augmentation"] = ", ".join(switched_on) if switched_on else "defaults"
    settings["head_fit"] = recipe.get("head_fit", "adam")  # recorded before --head-fit: trained with Adam
    if settings["head_fit"] == "logistic":
        settings["lr_head"] = None  # fitted in closed form, then trained (if at all) at --lr-finetune
    if recipe.get("weights_pretrained") is False:
        settings["head_fit"] = settings["cached_features"] = None  # one phase, every layer learning: nothing frozen
    elif recipe.get("cached_features") and not recipe.get("epochs_finetune"):
        settings["augmentation"] = "none (the head trained on features cached once from unaugmented images)"
    return settings


def budget_table(config: CompareConfig, budget: Budget, results: Sequence[ModelResult]) -> dict[str, Any]:
    """The report's table of what every model shared.

    Parameters
    ----------
    config : CompareConfig
    budget : Budget
    results : sequence of ModelResult
        For the input size each model really used.

    Returns
    -------
    dict
        Row label -> value, in the order the report shows them.
    """
    sizes = {result.name: result.settings.get("image_size") for result in results}
    return {
        "budget": f"{budget.name} ({budget.purpose})",
        "models": ", ".join(config.models),
        "split": f"{config.cv}-fold subject-grouped cross-validation"
        if config.cv
        else "one shared train/val/test split",
        "seed": config.seed,
        "epochs (frozen backbone + fine-tuning)": f"{budget.epochs_frozen} + {budget.epochs_finetune}",
        "image size": ", ".join(f"{name} {size} px" for name, size in sizes.items()),
        "batch size": budget.batch_size,
        "pretrained": config.pretrained,
        "decision threshold": threshold_text(config.threshold),
        "refer band": _refer_band_text(config),
        "test-time augmentation": f"every score also {TTA_LABEL}: flips and 90° rotations averaged, same threshold"
        if config.tta
        else "off",
        "ranked by": metric_label(config.rank_by),
        "bootstrap resamples": budget.bootstrap,
    }


def _refer_band_text(config: CompareConfig) -> str:
    """Where each run's refer band comes from, for the budget table."""
    if config.refer_error is not None:
        return (
            f"chosen on each run's validation split for at most {100 * config.refer_error:g}% errors among called "
            "cells; stored in each run"
        )
    if config.threshold is not None:
        return "none: a newly chosen threshold drops a run's stored band"
    return "each run's stored one, if any"
