"""The ranking in words and tables: what the models were ranked by, the ranking table, its notes, and the summary
``blastscope compare`` prints.

Every format takes its ranking text from here, so the page, the Markdown file and the terminal say the same thing about
which model came first, by what, and which models could not be ranked.
"""

from __future__ import annotations

import math

from blastscope.data.text_table import in_words, text_table
from blastscope.metrics import class_display_name
from blastscope.workflows.report.content import (
    Table,
    calibration_warning,
    score_text,
    single_class_text,
    threshold_short,
)
from blastscope.workflows.report.model import (
    DEFAULT_RANK_METRIC,
    TTA_LABEL,
    TTA_SUFFIX,
    Comparison,
    ModelResult,
    is_subject_metric,
    metric_label,
)

RANKING_METRICS = (
    "weighted_f1",
    "accuracy",
    "loss",
    "roc_auc",
    "sensitivity",
    "specificity",
    "subject_accuracy",
    "subject_balanced_accuracy",
)
"""The ranking's score columns: the headline metrics, with the test log loss beside accuracy as papers show them, then
the subject-level scores; the metric ranked by comes first (:func:`ranking_columns`)."""

SUMMARY_METRICS = ("weighted_f1", "roc_auc", "subject_accuracy")
"""The printed summary's score columns, after the metric ranked by."""

TTA_ROW = f"↳ {TTA_LABEL}"
"""The model cell of the row under each model that holds its scores with test-time augmentation."""

NO_RANK = "—"
"""The rank cell of a model without the score ranked by: listed last, in the order given, but not ranked."""


def ranking_columns(comparison: Comparison, metrics: tuple[str, ...] = RANKING_METRICS) -> list[str]:
    """The score columns of a ranking: the metric ranked by (without its TTA suffix) first, then the rest of
    ``metrics``."""
    ranked_by = comparison.rank_by.removesuffix(TTA_SUFFIX)
    return [ranked_by, *(metric for metric in metrics if metric != ranked_by)]


def ranking_table(comparison: Comparison) -> Table:
    """One row per model, best first: weights, scores with their spread, the decision threshold, calibration, time
    and speed. A model that called every test cell one class says so beside its name. With TTA, a row under each model
    holds the same scores with test-time augmentation."""
    columns = ranking_columns(comparison)
    header = ["rank", "model", "weights"]
    header += ["test " + metric_label(m) if m == "loss" else metric_label(m) for m in columns]
    fold_1 = " (fold 1)" if comparison.cv_folds else ""  # one run per model stands for all folds here
    ece = " pooled" if any(model.pooled is not None for model in comparison.models) else ""
    header += [f"threshold{fold_1}", f"ECE{ece} (→ after scaling)", f"train time{fold_1}", f"images/s{fold_1}"]
    rows = []
    for rank, model in zip(ranks(comparison), comparison.ranked, strict=True):
        name = model.name
        if model.single_class is not None:
            name += f" ({single_class_text(model, comparison.cv_folds)})"
        row = [_rank_text(rank), name, model.weights_source]
        row += [score_text(model, metric, comparison) for metric in columns]
        row += [threshold_short(model)]
        row += [_ece_text(model), _seconds_text(model.train_seconds), _speed_text(model.images_per_second)]
        rows.append(row)
        if comparison.tta:
            scores = [score_text(model, metric + TTA_SUFFIX, comparison) for metric in columns]
            rows.append(["", TTA_ROW, "", *scores, "same", "", "", ""])
    return header, rows


def ranks(comparison: Comparison) -> list[int | None]:
    """Each model's rank, in :attr:`Comparison.ranked` order: models tied on the score share the better rank (1, 1,
    3), and a model without the score has none (None).

    Ties are equal scores (to rounding error); they are listed in the order the models were given, which says nothing
    about which is better.
    """
    result: list[int | None] = []
    group: tuple[float, int] | None = None  # (score, rank) of the tie group being filled
    for position, model in enumerate(comparison.ranked, start=1):
        value = model.score(comparison.rank_by)
        if value is None or math.isnan(value):  # ranked last (Comparison.unranked)
            result.append(None)
            continue
        if group is None or not _tied(group[0], value):
            group = (value, position)
        result.append(group[1])
    return result


def tie_groups(comparison: Comparison) -> list[tuple[int, list[ModelResult]]]:
    """Each rank that two or more models share (:func:`ranks`), best first, with its models in the order given."""
    groups: dict[int, list[ModelResult]] = {}
    for rank, model in zip(ranks(comparison), comparison.ranked, strict=True):
        if rank is not None:
            groups.setdefault(rank, []).append(model)
    return [(rank, models) for rank, models in groups.items() if len(models) > 1]


def ranking_statement(comparison: Comparison) -> str:
    """:func:`ranked_by_statement`, then :func:`best_statement`."""
    return f"{ranked_by_statement(comparison)} {best_statement(comparison)}".rstrip()


def ranked_by_statement(comparison: Comparison) -> str:
    """What the models were ranked by and what the brackets mean."""
    label = metric_label(comparison.rank_by)
    if comparison.rank_by == DEFAULT_RANK_METRIC:
        label += " (the C-NMC 2019 challenge metric)"
    return f"Ranked by {label}; brackets: {comparison.interval_label}."


def best_statement(comparison: Comparison) -> str:
    """Which model came first and by what, and whether the runner-up's spread overlaps its own.

    Returns
    -------
    str
        E.g. ``Best by weighted F1: resnet50 (0.912 [0.880, 0.940]); its interval overlaps that of cnn (0.890 [0.850,
        0.930]), so these data do not settle which of the two is better.``; when the first models tie, names them all
        and says the first is listed first only because it was given first; when no model has the score, says so and
        that the order is the one given; empty without models.
    """
    label = metric_label(comparison.rank_by)
    unranked = {model.name for model in comparison.unranked}
    scored = [model for model in comparison.ranked if model.name not in unranked]
    if not scored:
        if not comparison.models:
            return ""
        reason = _missing_reason(comparison.models[0], comparison.rank_by)
        return f"No model has a {label} ({reason}): not ranked, listed in the order given."
    best = scored[0]
    groups = tie_groups(comparison)
    if groups and groups[0][0] == 1:
        tied = in_words(
            [f"{model.name} ({score_text(model, comparison.rank_by, comparison)})" for model in groups[0][1]]
        )
        return (
            f"Best by {label}: a tie between {tied}; {best.name} is listed first only because it was given first, "
            "not because it scored higher."
        )
    text = f"Best by {label}: {best.name} ({score_text(best, comparison.rank_by, comparison)})"
    if len(scored) > 1 and _overlap(best, scored[1], comparison.rank_by):
        runner_up = scored[1]
        text += (
            f"; its interval overlaps that of {runner_up.name} ({score_text(runner_up, comparison.rank_by, comparison)}"
            "), so these data do not settle which of the two is better"
        )
    return text + "."


def ranking_notes(comparison: Comparison) -> list[str]:
    """Plain-word remarks under the ranking: models that called every test cell one class, models tied below first
    place, models ranked last for want of the score, what the TTA rows, subject-level columns and threshold column
    mean."""
    notes = []
    flat = [model for model in comparison.ranked if model.single_class is not None]
    if flat:
        who = "; ".join(f"{model.name} {single_class_text(model, comparison.cv_folds)}" for model in flat)
        verb = "decides" if len(flat) == 1 else "decide"
        notes.append(
            f"{len(flat)} of {len(comparison.models)} models {verb} every test cell alike ({who}): their accuracy and "
            "F1 only restate the test split's class balance, not anything learned about the cells. Their ROC-AUC, "
            "which does not depend on the threshold, shows whether a better threshold could help."
        )
    label = metric_label(comparison.rank_by)
    for rank, group in tie_groups(comparison):
        if rank > 1:  # a tie for first is said in the sentence above the table (best_statement)
            value = score_text(group[0], comparison.rank_by, comparison)
            notes.append(
                f"Tied on {label} ({value}), sharing rank {rank}: {in_words([model.name for model in group])}; listed "
                "in the order given, which says nothing about which is better."
            )
    unranked = comparison.unranked
    if unranked and len(unranked) < len(comparison.models):
        who = ", ".join(f"{model.name} ({_missing_reason(model, comparison.rank_by)})" for model in unranked)
        notes.append(f"Ranked last, having no {label}: {who}.")
    if comparison.tta:
        notes.append(
            f"Rows '{TTA_ROW}': the same model at the same threshold, each test cell's probabilities averaged over "
            "its 8 flips and 90° rotations (test-time augmentation)."
        )
    if any(model.subject_scores_missing is None for model in comparison.models):
        counted = (
            ""
            if comparison.cv_folds
            else " (in brackets: how many test subjects were called right; no interval: the evaluation gives "
            "none for subject-level scores)"
        )
        notes.append(
            "Subject accuracy and subject balanced accuracy: one call per test subject, from the mean probability of "
            f"their cells at the model's threshold{counted}."
        )
    if comparison.dataset.positive_class is not None:
        positive = class_display_name(comparison.dataset.positive_class)
        notes.append(
            f"Threshold: each model calls a cell {positive} when p({positive}) ≥ its threshold; the column says where "
            "the threshold came from (the model card has the details). A threshold is never chosen on the test split."
        )
    return notes


def summary_text(comparison: Comparison) -> str:
    """What ``blastscope compare`` prints when done: what it ranked by, a short aligned ranking table (with TTA rows
    when scored), the models ranked last for want of the score, and :func:`best_statement`."""
    columns = ranking_columns(comparison, SUMMARY_METRICS)
    rows = []
    for rank, model in zip(ranks(comparison), comparison.ranked, strict=True):
        rows.append([_rank_text(rank), model.name, *(score_text(model, m, comparison) for m in columns)])
        if comparison.tta:
            rows.append(["", f"  {TTA_ROW}", *(score_text(model, m + TTA_SUFFIX, comparison) for m in columns)])
    table = text_table(["rank", "model", *(metric_label(m) for m in columns)], rows)
    lines = [ranked_by_statement(comparison), *("  " + line for line in table.splitlines())]
    unranked = comparison.unranked
    if unranked and len(unranked) < len(comparison.models):
        who = ", ".join(model.name for model in unranked)
        lines.append(f"Ranked last, having no {metric_label(comparison.rank_by)}: {who}.")
    return "\n".join([*lines, best_statement(comparison)])


def _rank_text(rank: int | None) -> str:
    """A rank cell: the number, or :data:`NO_RANK` for a model without the score."""
    return NO_RANK if rank is None else str(rank)


def _tied(first: float, second: float) -> bool:
    """Whether two scores are equal up to rounding error (the same value reached by other arithmetic)."""
    return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)


def _missing_reason(model: ModelResult, metric: str) -> str:
    """Why ``model`` has no ``metric``: the subject-level reason when there is one, else ``not measured``."""
    if is_subject_metric(metric) and model.subject_scores_missing:
        return model.subject_scores_missing
    return "not measured"


def _overlap(first: ModelResult, second: ModelResult, metric: str) -> bool:
    """Whether the two models' intervals (CI, or mean ± sd) for ``metric`` overlap; False when either has none."""
    a, b = first.spread(metric), second.spread(metric)
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def _ece_text(model: ModelResult) -> str:
    """Expected calibration error, and after temperature scaling when that was fitted: of every fold's test cells
    together under cross-validation (as the reliability diagram shows), else of the test split."""
    before, after = model.report_reliability
    if before is None:
        return "n/a"
    text = f"{before.ece:.3f}" + (f" → {after.ece:.3f}" if after is not None else "")
    return text + (
        " (temperature at its bound: not to be trusted, see the model card)" if calibration_warning(model) else ""
    )


def _seconds_text(seconds: float | None) -> str:
    """``3 min 12 s`` from a minute on, ``42.5 s`` below."""
    if seconds is None:
        return "n/a"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{seconds:.1f} s"


def _speed_text(images_per_second: float | None) -> str:
    """Inference speed in images per second, one decimal."""
    return "n/a" if images_per_second is None else f"{images_per_second:.1f}"
