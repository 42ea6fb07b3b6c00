"""The report's figures, drawn once as PNG bytes: embedded in the HTML and written beside the Markdown.

Drawing lives apart from rendering so that both formats show exactly the same images under the same captions; the
keys name each figure's file (``figures/<key>.png``) and let a renderer find a model's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.figure import Figure

from blastscope.evaluation import plots
from blastscope.metrics import class_display_name
from blastscope.workflows.report.model import Comparison, ModelResult, is_subject_metric, metric_label, value_or

MODEL_FIGURE_KINDS = ("curves", "confusion", "reliability", "subjects", "referral")
"""The figures a model can have, in the order its section shows them; each is drawn only when its data exists."""


@dataclass(frozen=True, slots=True)
class ReportFigure:
    """One drawn figure: its file key, the caption shown under it, and the PNG bytes."""

    key: str
    caption: str
    png: bytes


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
    curves = {
        model.name: (model.roc[0], model.roc[1], value_or(model.metrics.get("roc_auc"), -math.inf))
        for model in comparison.models
        if model.roc is not None
    }
    if curves:
        positive = class_display_name(comparison.dataset.classes[-1])
        caption = "ROC curves of all models on the same test split" + _fold_note(comparison) + "."
        figures.append(ReportFigure("roc", caption, plots.to_png(plots.roc_curves(curves, positive))))
    for model in comparison.ranked:
        figures.extend(_model_figures(model, comparison))
    return figures


def model_figure_keys(model: ModelResult) -> list[str]:
    """Keys of every figure ``model`` may have, in display order; look each up, as some may not have been drawn."""
    return [f"{kind}-{model.name}" for kind in MODEL_FIGURE_KINDS]


def _model_figures(model: ModelResult, comparison: Comparison) -> list[ReportFigure]:
    """Training curves, confusion matrix, reliability diagram, per-subject accuracy and the risk-coverage curve, each
    when its data exists."""
    names = [class_display_name(name) for name in model.classes]
    label = model.display_name
    figures = []
    if model.history:
        caption = f"Loss and validation weighted F1 per epoch{_fold_note(comparison)}; dashed: the phase change."
        figures.append(
            ReportFigure(f"curves-{model.name}", caption, plots.to_png(plots.training_curves(model.history, label)))
        )
    caption = "Confusion matrix on the test split" + _fold_note(comparison) + ": counts and share of each true class."
    matrix = plots.confusion_matrix(model.confusion, names, label, 0.5 if model.threshold is None else model.threshold)
    if model.threshold is None or len(model.classes) > 2:  # the plot would name a threshold that did not decide
        matrix.axes[0].set_title(f"{label}\n{'most probable class' if len(model.classes) > 2 else 'threshold n/a'}")
    figures.append(ReportFigure(f"confusion-{model.name}", caption, plots.to_png(matrix)))
    if model.reliability_before is not None:
        caption = (
            (
                "Reliability diagram before and after temperature scaling (fitted on the validation split)"
                if model.reliability_after is not None
                else "Reliability diagram (no temperature was fitted)"
            )
            + _fold_note(comparison)
            + "."
        )
        diagram = plots.reliability_diagram(model.reliability_before, model.reliability_after, label)
        figures.append(ReportFigure(f"reliability-{model.name}", caption, plots.to_png(diagram)))
    if model.subjects:
        shown = [
            plots.SubjectAccuracy(s.subject, class_display_name(s.true_class), s.accuracy, s.n_cells)
            for s in model.subjects
        ]
        caption = f"Accuracy per test subject{_fold_note(comparison)}, coloured by the subject's true class."
        figures.append(
            ReportFigure(f"subjects-{model.name}", caption, plots.to_png(plots.subject_accuracy(shown, names, label)))
        )
    if model.risk_coverage is not None:
        caption = (
            "Errors among the test cells it calls against the share it calls, the rest referred to a person"
            + _fold_note(comparison)
            + ": the curve refers the cells nearest the threshold first; a star marks the refer band chosen on "
            "validation."
        )
        figure = plots.risk_coverage(model.risk_coverage, label)
        figures.append(ReportFigure(f"referral-{model.name}", caption, plots.to_png(figure)))
    return figures


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
    """Caption suffix saying that, under cross-validation, per-split figures show the first fold."""
    return f" (fold 1 of {comparison.cv_folds})" if comparison.cv_folds else ""
