"""The words and tables every report format shares: scores as text, dataset facts and tables, and model cards.

HTML, Markdown and JSON each lay these out in their own syntax but take the text from here, so the three never
disagree on a number, a rounding, or the wording of the intended use and the image-level warning.
"""

from __future__ import annotations

import re
from typing import Any

from blastscope.data.text_table import in_words
from blastscope.inference.decision import temperature_bound_warning
from blastscope.metrics import class_display_name, format_band, format_threshold
from blastscope.workflows.report.model import (
    METRIC_LABELS,
    TTA_LABEL,
    TTA_SUFFIX,
    Comparison,
    DatasetCard,
    ModelResult,
    PooledFolds,
    is_subject_metric,
)

IMAGE_LEVEL_WARNING = (
    "Warning: this split is image-level, not subject-level: cells of one person may sit in both training and test "
    "data, so these results are likely optimistic."
)
INTENDED_USE = (
    "Research on classifying segmented single-cell microscopy images. Not a diagnostic device: not validated for "
    "clinical use, and no result here may guide the care of a patient."
)

Table = tuple[list[str], list[list[str]]]
"""A header and its rows, every cell already formatted as text."""


def single_class_text(model: ModelResult, cv_folds: int | None = None) -> str:
    """``calls every test cell ALL`` (under cross-validation ``... in folds 1, 2 and 3 of 3``: every fold it did so
    in); empty when it never did."""
    if model.single_class is None:
        return ""
    text = f"calls every test cell {class_display_name(model.single_class)}"
    if not cv_folds:
        return text
    folds = [str(fold) for fold in model.single_class_folds] or ["1"]  # a result built without every fold's counts
    return f"{text} in fold{'s' * (len(folds) > 1)} {in_words(folds)} of {cv_folds}"


def threshold_text(model: ModelResult) -> str:
    """The decision rule in words with where its threshold came from, for the model card."""
    if model.positive_class is None:
        return "the most probable class (multi-class: no threshold)"
    if model.threshold is None:
        return "not recorded"
    positive = class_display_name(model.positive_class)
    rule = f"{positive} when p({positive}) ≥ {format_threshold(model.threshold)}"
    return f"{rule} ({model.threshold_origin})" if model.threshold_origin else f"{rule} (origin not recorded)"


def threshold_short(model: ModelResult) -> str:
    """The ranking's threshold cell: ``0.500 (default)``, ``0.312 (val)`` (chosen on val), ``0.300 (given)``."""
    if len(model.classes) > 2:
        return "argmax"
    if model.threshold is None:
        return "n/a"
    origin = model.threshold_origin
    chosen = re.match(r"chosen on (\S+)", origin)
    if chosen:
        how = chosen.group(1)
    elif origin.startswith("default"):
        how = "default"
    elif origin.startswith("threshold given"):
        how = "given"
    else:
        how = origin.split(",")[0]
    shown = format_threshold(model.threshold)
    return f"{shown} ({how})" if how else shown


def referral_text(model: ModelResult, cv_folds: int | None = None) -> str:
    """What the refer band flags and what that did on the test split (under cross-validation, fold 1's), for the
    model card."""
    referral = model.referral or {}
    all_errors = f"{100 * referral.get('error_all', 0.0):.1f}%"
    band = referral.get("band")
    where = f"the test split of fold 1 of {cv_folds}" if cv_folds else "the test split"
    if band is None:
        return (
            f"No refer band: every cell is called ({all_errors} errors on {where}). "
            "`blastscope evaluate RUN --refer-error 0.05` chooses one on validation."
        )
    if model.positive_class is None:
        raise ValueError(f"model {model.name} has a refer band but no positive class for it to be on")
    positive = class_display_name(model.positive_class)
    target = referral.get("target")
    chosen = f", chosen on validation for at most {100 * target:g}% errors among called cells" if target else ""
    if band[0] == band[1]:  # the empty band at the threshold: validation met the target with every cell called
        met = f": validation already met at most {100 * target:g}% errors with every cell called" if target else ""
        return f"Refers no cell{met}. On {where}: {all_errors} errors, every cell called."
    called = referral.get("error_called")
    low, high = format_band(*band)
    rest = f"{100 * called:.1f}% errors among the rest" if called is not None else "none called"
    return (
        f"Cells with {low} < p({positive}) < {high} are flagged 'uncertain — refer' for a person to "
        f"review, keeping their label{chosen}. On {where}: {100 * (1 - referral['coverage']):.1f}% referred, "
        f"{rest} ({all_errors} over all cells)."
    )


def class_report_table(model: ModelResult) -> Table:
    """scikit-learn's classification report as a table: precision, recall, F1 and support per class, then accuracy,
    macro and weighted (by support) averages, all from the confusion matrix the report shows (pooled over the folds
    under cross-validation, :attr:`ModelResult.report_confusion`)."""
    confusion = model.report_confusion
    scores = model.class_scores(confusion)
    total = sum(score.support for score in scores)
    rows = [
        [class_display_name(s.name), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support)]
        for s in scores
    ]
    if total:
        hits = sum(confusion[i][i] for i in range(len(scores)))
        rows.append(["accuracy", "", "", f"{hits / total:.3f}", str(total)])
        for label, weights in (("macro avg", [1] * len(scores)), ("weighted avg", [s.support for s in scores])):
            averages = [
                _weighted_mean([getattr(s, key) for s in scores], weights) for key in ("precision", "recall", "f1")
            ]
            rows.append([label, *(f"{value:.3f}" for value in averages), str(total)])
    return ["class", "precision", "recall", "F1", "support"], rows


def _weighted_mean(values: list[float], weights: list[int]) -> float:
    return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)


def class_report_caption(model: ModelResult, comparison: Comparison) -> str:
    """What the classification report shows, and at which threshold."""
    if model.pooled is not None:
        return f"Classification report {pooled_text(model, model.pooled)}."
    fold = f" (fold 1 of {comparison.cv_folds})" if comparison.cv_folds else ""
    return f"Classification report on the test split{fold}, decided at {threshold_text(model)}."


def pooled_text(model: ModelResult, pooled: PooledFolds, decided: bool = True) -> str:
    """Where a pooled figure's cells come from: ``pooled over the 3 folds' test subjects (each tested once), each
    decided at its fold's threshold (0.500 in every fold)``; without ``decided`` only the first part, for figures no
    threshold enters (ROC curves, reliability)."""
    text = f"pooled over the {pooled.folds} folds' test subjects (each tested once)"
    if not decided:
        return text
    if len(model.classes) > 2:
        return f"{text}, each decided by its fold's model (most probable class)"
    values = [format_threshold(threshold) for threshold in pooled.thresholds if threshold is not None]
    where = f"{values[0]} in every fold" if len(set(values)) == 1 else f"{in_words(values)}, fold by fold"
    return f"{text}, each decided at its fold's threshold ({where})"


def metric_table(model: ModelResult, comparison: Comparison) -> Table:
    """Every metric in :data:`METRIC_LABELS` for one model's section, with TTA beside each when it was scored."""
    if not comparison.tta:
        return ["metric", "value"], [
            [label, score_text(model, key, comparison)] for key, label in METRIC_LABELS.items()
        ]
    rows = [
        [label, score_text(model, key, comparison), score_text(model, key + TTA_SUFFIX, comparison)]
        for key, label in METRIC_LABELS.items()
    ]
    return ["metric", "value", TTA_LABEL], rows


def budget_table(comparison: Comparison) -> Table:
    """The training and evaluation budget every model shared."""
    return ["setting", "value"], [[key, str(value)] for key, value in comparison.budget.items()]


def score_text(model: ModelResult, metric: str, comparison: Comparison) -> str:
    """``0.912 ± 0.010`` under cross-validation, ``0.912 [0.880, 0.940]`` with a CI, ``n/a`` when not measured.

    Subject accuracy on one split adds how many test subjects were called right, ``0.875 (7 of 8)``; a subject-level
    score that could not be measured says why, ``n/a (no subject ids)``.
    """
    value = model.score(metric)
    if value is None:
        if is_subject_metric(metric) and model.subject_scores_missing:
            return f"n/a ({model.subject_scores_missing})"
        return "n/a"
    spread = model.spread(metric)
    if comparison.cv_folds and spread is not None:
        return f"{value:.3f} ± {(spread[1] - spread[0]) / 2:.3f}"
    if spread is not None:
        return f"{value:.3f} [{spread[0]:.3f}, {spread[1]:.3f}]"
    if metric.removesuffix(TTA_SUFFIX) == "subject_accuracy" and model.n_subjects and not comparison.cv_folds:
        return f"{value:.3f} ({round(value * model.n_subjects)} of {model.n_subjects})"
    return f"{value:.3f}"


def dataset_tables(card: DatasetCard) -> list[tuple[str, list[str], list[list[str]]]]:
    """Captioned tables of cells per part and class and, when the data has subject ids, subjects per class and part."""
    names = [class_display_name(name) for name in card.classes]
    per_part = [
        [
            part,
            *(str(card.cells_per_part[part].get(name, 0)) for name in card.classes),
            str(sum(card.cells_per_part[part].values())),
        ]
        for part in card.cells_per_part
    ]
    totals = card.cells_per_class()
    per_part.append(["all parts", *(str(totals[name]) for name in card.classes), str(sum(totals.values()))])
    tables = [("Cells per split part and class", ["part", *names, "total"], per_part)]
    if card.subjects:
        subject_counts = card.subjects_per_class()
        tables.append(
            (
                "Subjects per class",
                ["class", "subjects"],
                [[class_display_name(n), str(subject_counts[n])] for n in card.classes],
            )
        )
        rows = [[subject, class_display_name(label), part, str(cells)] for subject, label, part, cells in card.subjects]
        tables.append(("Cells per subject", ["subject", "class", "part", "cells"], rows))
    return tables


def dataset_facts(card: DatasetCard, comparison: Comparison) -> list[str]:
    """One-line facts about the data: source, classes, split level, duplicates and skips, attribution, notes."""
    names = ", ".join(class_display_name(name) for name in card.classes)
    positive = (
        f"positive: {class_display_name(card.positive_class)}"
        if card.positive_class is not None
        else "no positive class: each cell gets its most probable class"
    )
    level = "subject-level (no person in two parts)" if card.subject_level else "image-level (persons may be shared)"
    facts = [
        f"Data: {card.root} ({card.kind})",
        f"Classes: {names} ({positive})",
        f"Split: {level}"
        + (
            f"; {comparison.cv_folds}-fold cross-validation (every subject tested in one fold), part counts of fold 1"
            if comparison.cv_folds
            else ""
        ),
        f"Exact duplicate files counted once: {card.duplicates}; files skipped (unreadable, hidden or linked twice): "
        f"{card.skipped}",
        f"Attribution: {card.attribution}",
    ]
    return facts + [f"Note: {note}" for note in card.notes]


def calibration_warning(model: ModelResult) -> str | None:
    """:func:`~blastscope.inference.decision.temperature_bound_warning` for the model's operating point (the
    first fold's under cross-validation), else None: a temperature at a bound of its fit looks like a calibration
    success in the ECE column while every probability it scales is untrustworthy."""
    point = model.operating_point or {}
    temperature = point.get("temperature")
    if temperature is None or temperature == 1.0:
        return None
    return temperature_bound_warning(float(temperature), point.get("n_cells"))


def model_card(model: ModelResult, card: DatasetCard, cv_folds: int | None = None) -> list[tuple[str, str]]:
    """(heading, text) pairs of a model card: intended use, weights, threshold, limitations, settings, run folder."""
    totals = card.cells_per_class()
    data_line = ", ".join(f"{totals[name]} {class_display_name(name)}" for name in card.classes)
    limitations = [
        f"Trained and tested on one dataset ({card.root}: {data_line} cells); accuracy on other laboratories, stains, "
        "microscopes or segmentation pipelines is unknown.",
        "A small test split gives wide confidence intervals: compare models by their intervals, not point values.",
    ]
    if not model.pretrained:
        limitations.append(
            "Trained from random initialisation (no pretrained weights), which needs more data and epochs."
        )
    if not card.subject_level:
        limitations.append("The split is image-level, so cells of a test person were seen in training: optimistic.")
    if model.single_class is not None:
        limitations.insert(
            0,
            f"On this test split it {single_class_text(model, cv_folds)}: at this threshold it does not tell the "
            "classes apart.",
        )
    if warning := calibration_warning(model):
        limitations.insert(0, f"Calibration: the {warning}.")
    threshold = threshold_text(model)
    if cv_folds:  # the card describes the first fold's run
        threshold = f"fold 1 of {cv_folds}: {threshold}; each fold's run decides at its own"
    return [
        ("Intended use", INTENDED_USE),
        ("Weights", model.weights_source),
        ("Decision threshold", threshold),
        *([("Referral", referral_text(model, cv_folds))] if model.referral is not None else []),
        ("Limitations", " ".join(limitations)),
        ("Training settings", _settings_text(model.settings)),
        ("Run directory", model.run_dir),
    ]


def _settings_text(settings: dict[str, Any]) -> str:
    """The settings that were set, as ``key value`` pairs; empty values are left out."""
    return "; ".join(f"{key} {value}" for key, value in settings.items() if value not in (None, "", [], {}))
