"""From evaluations to the report's records: one :class:`ModelResult` per model, and the shared budget table.

:func:`model_result_from_evaluation` joins one evaluation (``EvaluationResult.to_dict()``) with its run's recipe,
timings and history; where the model decided comes from :func:`decision_fields`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from blastscope.evaluation import plots
from blastscope.inference.decision import OperatingPoint
from blastscope.workflows.compare.cards import read_history
from blastscope.workflows.compare.config import Budget, CompareConfig, threshold_text
from blastscope.workflows.report import FOLD_METRICS, SUBJECT_METRICS, TTA_LABEL, TTA_SUFFIX, ModelResult, metric_label

Evaluations = dict[tuple[str, int], tuple[Path, dict[str, Any]]]
"""(model, fold) -> (run folder, ``EvaluationResult.to_dict()``)."""

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
        From the first fold's run; ``fold_metrics`` holds every fold's :func:`evaluation_scores` when ``folds > 1``.
    """
    run_dir, evaluation = evaluations[model, 0]
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = model_result_from_evaluation(evaluation, recipe, metrics, run_dir)
    if folds > 1:
        result.fold_metrics = [evaluation_scores(evaluations[model, fold][1]) for fold in range(folds)]
        result.fold_confusions = [
            evaluations[model, fold][1]["plain"]["metrics"]["confusion_matrix"] for fold in range(folds)
        ]
    return result


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
        ``threshold`` (float: the threshold on p(positive); 0.5 and unused for multi-class data), ``threshold_origin``
        (str, ``OperatingPoint.origin()``, e.g. "chosen on val (240 cells) for best weighted F1, reaching 0.9120
        there, by compare; temperature 1.310") and ``operating_point`` (dict, the full ``OperatingPoint.to_dict()``).
    """
    point = OperatingPoint.from_dict(evaluation["operating_point"])
    return {"threshold": point.threshold, "threshold_origin": point.origin(), "operating_point": point.to_dict()}


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
    units = {(evaluation["plain"].get("bootstrap") or {}).get("unit") for _, evaluation in evaluations.values()}
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
        :data:`TRAINING_SETTINGS` (``image_size`` from the run's preprocessing when it has one) and ``augmentation``
        (the switches that are on, or ``defaults``).
    """
    settings = {key: recipe.get(key) for key in TRAINING_SETTINGS}
    settings["image_size"] = (recipe.get("preprocessing") or {}).get("input_size", recipe.get("image_size"))
    switched_on = sorted(key for key, value in (recipe.get("augmentation") or {}).items() if value is True)
    settings["augmentation"] = ", ".join(switched_on) if switched_on else "defaults"
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
