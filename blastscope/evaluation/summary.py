"""What ``blastscope evaluate`` prints: an aligned table of the metrics with their intervals, and what they rest on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blastscope.data.text_table import in_words
from blastscope.evaluation.bootstrap import MIN_UNITS_PER_CLASS
from blastscope.evaluation.referral import ReferralChoice
from blastscope.evaluation.run_evaluation import EvaluationResult
from blastscope.inference.decision import OperatingPoint
from blastscope.metrics import class_display_name, format_band, one_class_warning
from blastscope.runs.folder import OPERATING_POINT_FILE, read_config
from blastscope.runs.trained import temperature_warnings, unfinished_warnings

FEW_UNITS = 5
RANKING_KEYS = ("roc_auc", "pr_auc")  # always shown: n/a when a class is missing from the scored cells
SUMMARY_ROWS = (
    ("weighted_f1", "weighted F1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro F1"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("loss", "log loss"),
)


def format_summary(result: EvaluationResult) -> str:
    """An aligned, human-readable report of ``result``.

    Warnings first when the run's training did not end, and when the scored cells hold one class only (ROC-AUC and
    PR-AUC then print n/a) or the model calls them all one class, then the notes, the model, the data, ``decision:
    <OperatingPoint.describe()>``, where that point came from and its refer band, a table of metric, value, 95% CI
    (n/a, with the reason, when a class has fewer than 2 units to resample; the value on the called cells with a
    refer band, the TTA value when run), what referral did, calibration (with a warning when the point's
    temperature, or an ensemble member's, sits at a bound of its fit), subject-level scores and the confusion
    matrix; then, apart, the transductive section when run, under a title naming the view and K, its label, and with
    "transductive" on every line.

    Parameters
    ----------
    result : EvaluationResult

    Returns
    -------
    str
        Lines joined by newlines, without a trailing one.
    """
    plain, tta = result.plain, result.tta
    point = result.point
    lines = [f"note: {note}" for note in result.notes]
    present = _present_classes(plain["metrics"])
    if len(present) == 1 and len(result.classes) > 1:
        lines.insert(0, f"warning: {_one_true_class_warning(present[0], result.n_cells)}")
    elif single := plain["metrics"].get("single_predicted_class"):
        lines.insert(0, f"warning: {one_class_warning(single)}")
    config = read_config(Path(result.run_dir))
    lines[:0] = [f"warning: {line}" for line in unfinished_warnings(Path(result.run_dir), config)]
    lines += [
        f"model: {result.display_name}; weights: {result.weights_source}"
        + ("" if result.checkpoint == "best" else f"; scored with the {result.checkpoint} checkpoint"),
        f"data: {result.data}: {result.n_cells} cells"
        + (_subjects_text(plain["subjects"]) if plain["subjects"] else "")
        + (f"; segmented {result.segmented_cells} of {result.n_cells} cells" if result.segmented_cells else "")
        + (f"; colours normalised per person ({result.colour_people} people)" if result.colour_people else ""),
        f"decision: {point.describe()}",
        f"operating point: {_point_source(result)}",
    ]
    if band_line := _band_line(result):
        lines.append(band_line)
    referral = plain.get("referral") or {}
    called = referral.get("metrics_called")
    boot = plain["bootstrap"]
    ci_header = f"95% CI ({boot['n_resamples']} resamples of {boot['unit']}s)" if boot else ""
    header = ["metric", "value", ci_header] + (["called cells"] if called else []) + (["with TTA"] if tta else [])
    rows = [header]
    for key, label in SUMMARY_ROWS:
        value = plain["metrics"][key]
        if value is None and key not in RANKING_KEYS:
            continue
        rows.append(
            [_metric_label(key, label, point), _number(value), _ci_text(boot, key)]
            + ([_number(called[key])] if called else [])
            + ([_number(tta["metrics"][key])] if tta else [])
        )
    lines += ["", *_aligned(rows)]
    if boot and (intervals := _intervals_line(boot, present)):
        lines.append(intervals)
    if referral.get("band") is not None:
        lines += ["", _referral_text(referral, result.split)]
    lines += ["", _calibration_text(plain["calibration"], point)]
    lines += [f"warning: {line}" for line in temperature_warnings(config, result.point)]
    if plain["subjects"]:
        level = plain["subjects"]["subject_level"]
        lines.append(
            f"subject level (mean probability per subject): accuracy {level['accuracy']:.4f}, "
            f"weighted F1 {level['weighted_f1']:.4f} over {_count(level['n'], 'subject')}"
        )
    lines += ["", "confusion matrix (rows = true class, columns = predicted):"]
    names = [class_display_name(c) for c in result.classes]
    matrix = plain["metrics"]["confusion_matrix"]
    lines += _aligned([["", *names]] + [[name, *map(str, row)] for name, row in zip(names, matrix, strict=True)])
    if result.transductive:
        lines += ["", *_transductive_lines(result)]
    if result.attribution:
        lines += ["", f"credit: {result.attribution}"]
    return "\n".join(lines)


def _subjects_text(subjects: dict[str, Any]) -> str:
    """`` from 8 subjects``; when some subjects' cells carry two labels, says so, as each counts once per label."""
    mixed = subjects.get("mixed_subjects") or []
    if not mixed:
        return f" from {_count(subjects['n_subjects'], 'subject')}"
    verb = "has" if len(mixed) == 1 else "have"
    return (
        f" from {subjects['n_subjects']} subject units ({in_words(mixed)} {verb} cells of more than one class, each "
        "label scored as its own subject)"
    )


def _transductive_lines(result: EvaluationResult) -> list[str]:
    """The transductive section's label, its metrics with their intervals and its subject-level scores."""
    section = result.transductive or {}
    boot = section["bootstrap"]
    ci_header = f"95% CI ({boot['n_resamples']} resamples of {boot['unit']}s)" if boot else ""
    rows = [["transductive metric", "value", ci_header]]
    for key, label in SUMMARY_ROWS:
        if (value := section["metrics"][key]) is not None or key in RANKING_KEYS:
            name = f"transductive {_metric_label(key, label, result.point)}"
            rows.append([name, _number(value), _ci_text(boot, key)])
    view = "plain view, not the TTA views" if result.tta else "plain view"
    lines = [f"transductive ({view}, K={section['neighbours']})", section["label"], *_aligned(rows)]
    if section["subjects"]:
        level = section["subjects"]["subject_level"]
        lines.append(
            f"transductive subject level (mean probability per subject): accuracy {level['accuracy']:.4f}, "
            f"weighted F1 {level['weighted_f1']:.4f} over {_count(level['n'], 'subject')}"
        )
    return lines


def _point_source(result: EvaluationResult) -> str:
    if result.point_source == "stored":
        path = Path(result.run_dir) / OPERATING_POINT_FILE
        where = str(path) if path.is_file() else f"none stored in {result.run_dir}: the default"
        return f"the run's stored one ({where})"
    if result.stored_to:
        return f"chosen by this evaluation and stored in {result.stored_to}"
    return "chosen by this evaluation, not stored"


def _band_line(result: EvaluationResult) -> str | None:
    """The refer band: what this evaluation chose on validation (or why none), else the stored band, if any."""
    if result.referral_choice is not None:
        choice = ReferralChoice.from_dict(result.referral_choice)
        return choice.describe() if choice.band is None else f"refer band: {choice.describe()}"
    band = result.point.refer_band
    if band is None:
        return None
    name = class_display_name(result.point.positive_class)  # type: ignore[arg-type]
    low, high = format_band(*band, decimals=4)
    return f"refer band: refer when {low} < p({name}) < {high} (stored with the operating point)"


def _referral_text(referral: dict[str, Any], split: str) -> str:
    """What the band did on the scored cells: the share referred and the error rate among the rest."""
    where = f"the {split} split" if split != "all" else "these cells"
    called = referral["n"] - referral["n_referred"]
    error_called = referral["error_called"]
    among = f"{100 * error_called:.1f}% errors among the {called} called" if error_called is not None else "none called"
    return (
        f"referral on {where}: {referral['n_referred']} of {referral['n']} cells referred "
        f"({100 * (1 - referral['coverage']):.1f}%); {among} ({100 * referral['error_all']:.1f}% over all cells; "
        "labels are the threshold's either way)"
    )


def _metric_label(key: str, label: str, point: OperatingPoint) -> str:
    if not point.binary:
        return label
    positive = point.positive_class
    negative = point.classes[1 - point.positive_index]  # type: ignore[operator]
    if key == "sensitivity":
        return f"{label} ({class_display_name(positive)})"  # type: ignore[arg-type]
    if key == "specificity":
        return f"{label} ({class_display_name(negative)})"
    return label


def _ci_text(boot: dict[str, Any] | None, key: str) -> str:
    """The interval, ``n/a`` where the bootstrap ran but gives none (too few units, or undefined on every resample),
    empty for a metric without one."""
    interval = boot["metrics"].get(key) if boot else None
    if not interval:
        return ""
    if interval["low"] is None:
        return "n/a"
    return f"[{interval['low']:.4f}, {interval['high']:.4f}]"


def _present_classes(metrics: dict[str, Any]) -> list[str]:
    """The classes with scored cells, in the run's order (which is the bootstrap's order of ``units_per_class``)."""
    return [name for name in metrics["classes"] if metrics["per_class"][name]["support"] > 0]


def _one_true_class_warning(label: str, n_cells: int) -> str:
    name = class_display_name(label)
    return (
        f"only one class ({name}) is left among the {_count(n_cells, 'scored cell')}: ROC-AUC and PR-AUC are not "
        f"defined (n/a) and F1 summarises {name} alone; accuracy is the share called {name}"
    )


def _intervals_line(boot: dict[str, Any], present: Sequence[str]) -> str | None:
    """Why there are no intervals (a class with fewer than 2 units), or that they understate (fewer than 5)."""
    unit, counts = boot["unit"], boot["units_per_class"]
    fewest = min(counts)
    if fewest < MIN_UNITS_PER_CLASS:
        short = [
            f"{_count(count, unit)} of {class_display_name(name)}"
            for name, count in zip(present, counts, strict=True)
            if count < MIN_UNITS_PER_CLASS
        ]
        return (
            f"(95% CI n/a: {' and '.join(short)}; an interval needs at least {MIN_UNITS_PER_CLASS} {unit}s of each "
            "class, as one alone is the same in every resample)"
        )
    if fewest < FEW_UNITS:
        return f"(only {_count(fewest, unit)} in the smallest class: the intervals understate the uncertainty)"
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _calibration_text(calibration: dict[str, Any], point: OperatingPoint) -> str:
    text = f"calibration: ECE {calibration['before']['ece']:.4f} ({calibration['before']['n_bins']} bins)"
    if calibration["after"] is None:
        return text + "; the operating point has no temperature scaling"
    fitted = f"fitted on {point.split} ({point.n_cells} cells)" if point.split else "the operating point's"
    return text + (
        f" -> {calibration['after']['ece']:.4f} after temperature scaling (T = {calibration['temperature']:.3f}, "
        f"{fitted})"
    )


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
