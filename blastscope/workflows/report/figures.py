"""The report's figures, drawn once as PNG bytes: embedded in the HTML and written beside the Markdown.

Drawing lives apart from rendering so that both formats show exactly the same images under the same captions; the
keys name each figure's file (``figures/<key>.png``) and let a renderer find a model's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.figure import Figure

from blastscope.data.text_table import in_words
from blastscope.evaluation import plots
from blastscope.metrics import class_display_name, format_threshold
from blastscope.workflows.report.content import pooled_text
from blastscope.workflows.report.model import Comparison, ModelResult, is_subject_metric, metric_label, value_or

MODEL_FIGURE_KINDS = ("curves", "confusion", "reliability", "subjects", "referral")
"""The figures a model can have, in the order its section shows them; each is drawn only when its data exists."""


@dataclass(frozen=True, slots=True)
class ReportFigure:
    """One drawn figure: its file key, the caption shown under it, and the PNG bytes."""

    key: str
    caption: str
    png: bytes


ONE_PHASE = {
    "frozen": "one phase, the head alone on the frozen backbone",
    "full": "one phase, every layer from random initialisation",
}
"""The training-curves caption of a run whose ``history.csv`` has one phase (no change to mark), by that phase."""


def draw_figures(comparison: Comparison) -> list[ReportFigure]:
    """The ranking chart, the ROC curves of all models (when any has one), then each model's figures in rank order."""
    label = metric_label(comparison.rank_by)
    bars = comparison.interval_label
    if is_subject_metric(comparison.rank_by) and not comparison.cv_folds:
        bars = "none for subject-level scores"
    chart = plots.ranking([_ranked_score(model, comparison.rank_by) for model in comparison.models], label, bars)
    _label_bars(chart, comparison)
    missing = ", ".join(model.name for model in comparison.unranked)
    unranked = f" {missing}: no {label}, drawn as 0 and ranked last." if missing else ""
    figures = [ReportFigure("ranking", f"Ranking by {label}; error bars: {bars}.{unranked}", plots.to_png(chart))]
    roc = _roc_figure(comparison)
    if roc is not None:
        figures.append(roc)
    for model in comparison.ranked:
        figures.extend(_model_figures(model, comparison))
    return figures


def _roc_figure(comparison: Comparison) -> ReportFigure | None:
    """The ROC curves of every model that has one: over its folds' pooled test cells when every model has them (under
    cross-validation), else on the test split (the first fold's, and saying so, under cross-validation)."""
    pooled = all(model.pooled is not None for model in comparison.models)
    curves = {}
    for model in comparison.models:
        roc, auc = model.roc, model.metrics.get("roc_auc")
        if pooled and model.pooled is not None:
            roc, auc = model.pooled.roc, model.pooled.roc_auc
        if roc is not None:
            curves[model.name] = (roc[0], roc[1], value_or(auc, -math.inf))
    if not curves:
        return None
    if comparison.dataset.positive_class is None:
        raise ValueError(f"ROC curves of {', '.join(curves)} without a positive class for them to be about")
    positive = class_display_name(comparison.dataset.positive_class)
    figure = plots.roc_curves(curves, positive)
    if not pooled:
        caption = "ROC curves of all models on the same test split" + _fold_note(comparison) + "."
        return ReportFigure("roc", caption, plots.to_png(figure))
    folds = comparison.cv_folds
    caption = (
        f"ROC curves of all models, each over its {folds} folds' test cells pooled (every subject tested once, by the "
        "fold's model that never trained on them); legend: the area under each pooled curve (the ranking's ROC-AUC is "
        "the mean over folds)."
    )
    figure.axes[0].set_title(f"ROC curves, {folds} folds' test cells pooled (positive class: {positive})")
    return ReportFigure("roc", caption, plots.to_png(figure))


def model_figure_keys(model: ModelResult) -> list[str]:
    """Keys of every figure ``model`` may have, in display order; look each up, as some may not have been drawn."""
    return [f"{kind}-{model.name}" for kind in MODEL_FIGURE_KINDS]


def _model_figures(model: ModelResult, comparison: Comparison) -> list[ReportFigure]:
    """Training curves, confusion matrix, reliability diagram, per-subject accuracy and the risk-coverage curve, each
    when its data exists; under cross-validation all but the training curves pool every fold's test cells when the
    result has them (:attr:`ModelResult.pooled`), else show the first fold."""
    label = model.display_name
    figures = []
    first_fold = f"fold 1 of {comparison.cv_folds}" if comparison.cv_folds else ""
    if model.history:
        phases = list(dict.fromkeys(row.phase for row in model.history))
        marked = "dashed: the phase change" if len(phases) > 1 else ONE_PHASE.get(phases[0], f"one phase, {phases[0]}")
        if model.best_epoch is not None:
            marked += f"; ringed: epoch {model.best_epoch}, whose checkpoint is scored"
        caption = f"Loss and validation weighted F1 per epoch{_fold_note(comparison)}; {marked}."
        curves = plots.training_curves(model.history, label, first_fold, scored_epoch=model.best_epoch)
        figures.append(ReportFigure(f"curves-{model.name}", caption, plots.to_png(curves)))
    figures.append(_confusion_figure(model, comparison))
    pooled = model.pooled
    before, after = model.report_reliability
    if before is not None:
        tested = f"test split of {first_fold}" if first_fold else "test split"
        where = f"{pooled.folds} folds' test cells pooled" if pooled is not None else tested
        diagram = plots.reliability_diagram(before, after, label, where, len(model.classes))
        figures.append(
            ReportFigure(
                f"reliability-{model.name}", _reliability_caption(model, comparison, after), plots.to_png(diagram)
            )
        )
    subjects = model.subjects if pooled is None else pooled.subjects
    if subjects:
        shown = [
            plots.SubjectAccuracy(s.subject, class_display_name(s.true_class), s.accuracy, s.n_cells) for s in subjects
        ]
        where = _fold_note(comparison) if pooled is None else f", {pooled_text(model, pooled)}"
        caption = f"Accuracy per test subject{where}, coloured by the subject's true class."
        last = [model.positive_class] if model.positive_class is not None else []  # the positive class is red
        order = [name for name in model.classes if name != model.positive_class] + last
        figure = plots.subject_accuracy(shown, [class_display_name(name) for name in order], label)
        figures.append(ReportFigure(f"subjects-{model.name}", caption, plots.to_png(figure)))
    curve = model.risk_coverage if pooled is None else pooled.risk_coverage
    if curve is not None:
        figures.append(_referral_figure(model, comparison, curve))
    return figures


def _confusion_figure(model: ModelResult, comparison: Comparison) -> ReportFigure:
    """The confusion matrix the report shows (:attr:`ModelResult.report_confusion`), titled with how it decided
    (``called ALL when p(ALL) ≥ 0.428``, as the model card reads it)."""
    names = [class_display_name(name) for name in model.classes]
    pooled = model.pooled
    thresholds = set(pooled.thresholds) if pooled is not None else {model.threshold}
    if len(model.classes) > 2 or model.positive_class is None:
        decision = "most probable class"
    elif None in thresholds and pooled is None:  # the plot would name a threshold that did not decide
        decision = "threshold n/a"
    else:
        positive = class_display_name(model.positive_class)
        one = len(thresholds) == 1 and None not in thresholds
        rule = format_threshold(thresholds.pop()) if one else "its fold's threshold"
        decision = f"called {positive} when p({positive}) ≥ {rule}"
    if pooled is not None:
        decision = f"{pooled.folds} folds pooled,\n{decision}"
    matrix = plots.confusion_matrix(model.report_confusion, names, model.display_name, decision)
    where = pooled_text(model, pooled) if pooled is not None else "on the test split" + _fold_note(comparison)
    caption = f"Confusion matrix {where}: counts and share of each true class."
    return ReportFigure(f"confusion-{model.name}", caption, plots.to_png(matrix))


def _reliability_caption(model: ModelResult, comparison: Comparison, after: plots.ReliabilityCurve | None) -> str:
    """What the reliability diagram shows: before and (when a temperature was fitted) after scaling, and whose cells."""
    pooled = model.pooled
    if pooled is None:
        what = (
            "Reliability diagram before and after temperature scaling (fitted on the validation split)"
            if after is not None
            else "Reliability diagram (no temperature was fitted)"
        )
        return what + _fold_note(comparison) + "."
    if after is None:
        what = "Reliability diagram (no fold's temperature was fitted)"
    elif len(pooled.scaled_folds) == pooled.folds:
        what = "Reliability diagram before and after each fold's temperature scaling (fitted on its validation split)"
    else:
        folds = in_words([str(fold) for fold in pooled.scaled_folds])
        what = (
            "Reliability diagram before and after temperature scaling (fitted on the validation split of fold"
            f"{'s' * (len(pooled.scaled_folds) > 1)} {folds}; the other folds' cells count unscaled)"
        )
    return f"{what}, {pooled_text(model, pooled, decided=False)}."


def _referral_figure(model: ModelResult, comparison: Comparison, curve: plots.RiskCoverage) -> ReportFigure:
    """The risk-coverage curve: of the pooled folds' test cells when recorded, else of the test split."""
    pooled = model.pooled
    if pooled is None:
        caption = (
            "Errors among the test cells it calls against the share it calls, the rest referred to a person"
            + _fold_note(comparison)
            + ": the curve refers the cells nearest the threshold first; a star marks the refer band chosen on "
            "validation."
        )
        return ReportFigure(
            f"referral-{model.name}", caption, plots.to_png(plots.risk_coverage(curve, model.display_name))
        )
    star = (
        "; a star marks what the folds' refer bands, each chosen on its fold's validation split, did together"
        if curve.band is not None
        else ""
    )
    caption = (
        "Errors among the test cells it calls against the share it calls, the rest referred to a person, "
        f"{pooled_text(model, pooled)}: the curve refers the cells nearest their fold's threshold first{star}."
    )
    figure = plots.risk_coverage(curve, model.display_name, f"{pooled.folds} folds' test cells pooled")
    return ReportFigure(f"referral-{model.name}", caption, plots.to_png(figure))


def _label_bars(chart: Figure, comparison: Comparison) -> None:
    """Label the ranking chart's bars with each model's weights, e.g. ``cnn`` over ``random init``, and mark models
    that called every test cell one class (``all ALL``).

    The bars keep their model names while drawn, so each model keeps its colour from every other figure.
    """
    labels = {}
    for model in comparison.models:
        single = f" · all {class_display_name(model.single_class)}" if model.single_class else ""
        labels[model.name] = f"{model.name}\n{model.weights_source}{single}"
    axes = chart.axes[0]
    ticks = [labels.get(tick.get_text(), tick.get_text()) for tick in axes.get_yticklabels()]
    axes.set_yticks(axes.get_yticks(), labels=ticks, fontsize=8.5)


def _ranked_score(model: ModelResult, metric: str) -> plots.RankedScore:
    """A model's bar in the ranking chart by ``metric``; a missing score is drawn as 0 without an error bar."""
    value = value_or(model.score(metric), 0.0)
    low, high = model.spread(metric) or (value, value)
    return plots.RankedScore(model.name, value, low, high)


def _fold_note(comparison: Comparison) -> str:
    """Caption suffix saying that, under cross-validation, a figure not pooled over the folds shows the first fold."""
    return f" (fold 1 of {comparison.cv_folds})" if comparison.cv_folds else ""
