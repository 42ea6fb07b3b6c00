"""The figures of a comparison report, drawn with matplotlib's Agg backend so they render headless.

Every function takes plain numbers (no run directories, no models) and returns a :class:`~matplotlib.figure.Figure`;
:func:`to_png` turns one into PNG bytes (and a file) and closes it. A model keeps one colour in every figure
(:func:`model_colors`), and classes keep theirs (:func:`class_colors`), so figures can be read side by side.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from blastscope.metrics import class_display_name, format_band
from blastscope.models import list_models

_MODEL_PALETTE = plt.get_cmap("tab10").colors + plt.get_cmap("Dark2").colors  # 18: more than the registry holds
_POSITIVE_COLOR = "#c0392b"
_OTHER_CLASS_COLORS = ("#2e86c1", "#27ae60", "#8e44ad", "#d68910", "#5d6d7e")
_DPI = 110
_RELIABILITY_MARGIN = 0.04
"""The reliability diagram's axes reach this share of their span past [1/C, 1] and [0, 1], so edge dots show whole."""
_COVERAGE_MARGIN = 4.0
"""The risk-coverage plot's x axis reaches this many percent past 100%, so the no-referral ring there is not drawn
half over the frame."""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One epoch of ``history.csv``; metrics that were not logged that epoch are NaN."""

    epoch: int
    phase: str
    train_loss: float
    val_loss: float
    val_weighted_f1: float


@dataclass(frozen=True, slots=True)
class ReliabilityCurve:
    """Binned calibration: mean confidence, observed accuracy and cell count per non-empty bin, plus the ECE."""

    confidence: Sequence[float]
    accuracy: Sequence[float]
    counts: Sequence[int]
    ece: float


@dataclass(frozen=True, slots=True)
class SubjectAccuracy:
    """How well one subject's test cells were classified."""

    subject: str
    true_class: str
    accuracy: float
    n_cells: int


@dataclass(frozen=True, slots=True)
class RankedScore:
    """A model's score with the bounds of its error bar (a confidence interval or mean ± sd)."""

    model: str
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class RiskCoverage:
    """Error rate among called cells against the share of cells called, and where a refer band sits on that plane.

    ``coverage`` and ``error`` are fractions (K,) from :func:`blastscope.evaluation.referral.risk_coverage`;
    ``band`` is the (coverage, error) the point's refer band reached on the same cells, ``band_label`` its rule
    (e.g. ``refer when 0.310 < p(ALL) < 0.720``), ``target`` the error rate it was chosen for, when known, and
    ``n_cells`` how many cells the curve is drawn from.
    """

    coverage: Sequence[float]
    error: Sequence[float]
    band: tuple[float, float | None] | None = None
    band_label: str = "refer band"
    target: float | None = None
    n_cells: int | None = None

    @classmethod
    def from_report(cls, referral: Mapping[str, Any], positive_class: str, target: float | None) -> RiskCoverage:
        """From an evaluation's ``referral`` entry (``referral_report``); the band is marked when it has one."""
        curve, band, n = referral["curve"], referral.get("band"), referral.get("n")
        if band is None:
            return cls(curve["coverage"], curve["error"], target=target, n_cells=n)
        name = class_display_name(positive_class)
        label = "refer no cell"
        if band[0] != band[1]:
            low, high = format_band(*band)
            label = f"refer when {low} < p({name}) < {high}"
        point = (referral["coverage"], referral["error_called"])
        return cls(curve["coverage"], curve["error"], point, label, target, n)


def _percent_label(share: float) -> str:
    """A share as a bar label: whole percents as such, others with one decimal, so 5/8 and 7/8 read 62.5% and 87.5%
    rather than 62% and 88% (Python rounds half to even, one down and the other up)."""
    percent = 100 * share
    return f"{percent:.0f}%" if math.isclose(percent, round(percent), abs_tol=1e-9) else f"{percent:.1f}%"


class _TickPercentFormatter(PercentFormatter):
    """Percent ticks with as few decimals as the ticks need: ``5%``, not ``5.0%``; ``2.5%`` (and ``5.0%`` beside it)
    where a tick falls between whole percents. PercentFormatter's own choice follows the axis span and gave every
    tick of a 0-15% axis a decimal."""

    def set_locs(self, locs: Sequence[float]) -> None:
        """Choose the decimals for the ticks about to be drawn."""
        super().set_locs(locs)
        percents = [100 * loc / self.xmax for loc in locs]
        self.decimals = next(
            (d for d in range(4) if all(math.isclose(p, round(p, d), abs_tol=1e-9) for p in percents)), 3
        )


def model_colors(models: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Colours fixed by registry order, so e.g. resnet50 looks the same in every report; unknown names follow."""
    known = list_models()
    order = known + [name for name in models if name not in known]
    return {name: _MODEL_PALETTE[order.index(name) % len(_MODEL_PALETTE)] for name in models}


def class_colors(classes: Sequence[str]) -> dict[str, str]:
    """The positive class (last, ALL for C-NMC) is always red; the others take calm colours in order."""
    colors = {name: _OTHER_CLASS_COLORS[i % len(_OTHER_CLASS_COLORS)] for i, name in enumerate(classes[:-1])}
    colors[classes[-1]] = _POSITIVE_COLOR
    return colors


def to_png(figure: Figure, path: Path | None = None) -> bytes:
    """Render and close ``figure``; also write the PNG to ``path`` when given."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    data = buffer.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return data


def training_curves(
    history: Sequence[HistoryRow], model: str, run: str = "", scored_epoch: int | None = None
) -> Figure:
    """Loss (train and validation) and validation weighted F1 per epoch, with each phase change marked and, when
    given, the epoch whose checkpoint is scored (a ring on its validation loss); ``run`` names which of several
    trainings it is (e.g. ``fold 1 of 3``) in the title, which may be shown alone."""
    epochs = [row.epoch for row in history]
    figure, (loss_axes, f1_axes) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    loss_axes.plot(epochs, [row.train_loss for row in history], "o-", color="#2e86c1", label="train loss")
    loss_axes.plot(epochs, [row.val_loss for row in history], "s-", color="#d68910", label="validation loss")
    loss_axes.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss")
    scored = [row for row in history if row.epoch == scored_epoch]
    if scored:
        loss_axes.plot(scored[0].epoch, scored[0].val_loss, "o", markersize=13, markerfacecolor="none",
                       markeredgecolor="black", markeredgewidth=1.5, label=f"scored: epoch {scored_epoch}")  # fmt: skip
    f1_axes.plot(
        epochs, [row.val_weighted_f1 for row in history], "o-", color="#27ae60", label="validation weighted F1"
    )
    f1_axes.set(title="Validation weighted F1", xlabel="epoch", ylabel="weighted F1", ylim=(0, 1.02))
    for axes in (loss_axes, f1_axes):
        _mark_phase_changes(axes, history)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        # whole epochs only, one tick if need be: by default a one-epoch run was ticked 0.96, 0.98, 1.00...
        axes.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    figure.suptitle(f"{model}: training curves ({run})" if run else f"{model}: training curves")
    return figure


def _mark_phase_changes(axes: plt.Axes, history: Sequence[HistoryRow]) -> None:
    for before, after in itertools.pairwise(history):
        if after.phase != before.phase:
            boundary = (before.epoch + after.epoch) / 2
            axes.axvline(boundary, color="grey", linestyle="--", linewidth=1, label=f"{after.phase} phase starts")


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], model: str, decision: str) -> Figure:
    """Counts and row percentages (recall per true class); colour shows the row share so classes of any size compare.

    ``decision`` is the title's second line, how the cells were called (e.g. ``called ALL when p(ALL) ≥ 0.428``):
    a bare threshold does not say which class's probability it is compared with.
    """
    counts = np.asarray(matrix, dtype=int)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    size = 1.2 + 1.1 * len(classes)
    figure, axes = plt.subplots(figsize=(size + 1.2, size), layout="constrained")
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if shares[row, column] > 0.6 else "black"
        text = f"{count}\n{100 * shares[row, column]:.1f}%"
        axes.text(column, row, text, ha="center", va="center", color=color, fontsize=11)
    ticks = range(len(classes))
    axes.set_xticks(ticks, labels=classes)
    axes.set_yticks(ticks, labels=classes)
    axes.set(xlabel="predicted class", ylabel="true class", title=f"{model}\n{decision}")
    figure.colorbar(image, ax=axes, label="share of the true class's cells", fraction=0.046)
    return figure


def roc_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]], positive_class: str) -> Figure:
    """All models on one plot: ``curves`` maps model name -> (false positive rates, true positive rates, AUC)."""
    colors = model_colors(list(curves))
    figure, axes = plt.subplots(figsize=(6.4, 6), layout="constrained")
    ranked = sorted(curves.items(), key=lambda item: -_sortable(item[1][2]))
    for model, (fpr, tpr, auc) in ranked:
        axes.plot(fpr, tpr, color=colors[model], linewidth=2, label=f"{model} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance (AUC 0.500)")
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
        xlabel="false positive rate (1 − specificity)",
        ylabel="true positive rate (sensitivity)",
        title=f"ROC curves on the test split (positive class: {positive_class})",
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    return figure


def reliability_diagram(
    before: ReliabilityCurve, after: ReliabilityCurve | None, model: str, where: str, n_classes: int
) -> Figure:
    """Confidence against accuracy per bin, before and after temperature scaling; the diagonal is perfect. ``where``
    names the scored cells in the title, as calibration on validation (where the temperature was fitted) and on
    test read differently.

    The confidence is the predicted class's probability (:mod:`~blastscope.evaluation.calibration`), never below
    1 / ``n_classes``, so the x axis starts there (0.5 for two classes) rather than leaving that much of it empty.
    """
    lowest = 1 / n_classes
    figure, axes = plt.subplots(figsize=(5.6, 6.4), layout="constrained")
    axes.plot([lowest, 1], [lowest, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    _plot_reliability(axes, before, "#d68910", "before scaling")
    title = f"{model}: reliability ({where})\nECE {before.ece:.3f}"
    if after is not None:
        _plot_reliability(axes, after, "#2e86c1", "after temperature scaling")
        title += f" → {after.ece:.3f} after temperature scaling"
    margin = _RELIABILITY_MARGIN  # a dot at 0 or 1 (a bin all right or all wrong) is drawn whole, not cut by the frame
    axes.set(
        xlim=(lowest - margin * (1 - lowest), 1 + margin * (1 - lowest)),
        ylim=(-margin, 1 + margin),
        xlabel=f"mean confidence in bin (the predicted class's probability, ≥ 1/{n_classes})",
        ylabel="observed accuracy in bin",
        title=title,
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", ncols=1, frameon=False)
    return figure


def _plot_reliability(axes: plt.Axes, curve: ReliabilityCurve, color: str, label: str) -> None:
    counts = np.asarray(curve.counts, dtype=float)
    sizes = 20 + 180 * counts / max(counts.max(initial=0), 1)
    axes.plot(curve.confidence, curve.accuracy, color=color, linewidth=1.5)
    axes.scatter(curve.confidence, curve.accuracy, s=sizes, color=color, alpha=0.8, label=f"{label} (dot size: cells)")


def subject_accuracy(subjects: Sequence[SubjectAccuracy], classes: Sequence[str], model: str) -> Figure:
    """One bar per test subject, grouped and coloured by true class, so a subject the model fails stands out.

    Each bar is labelled with its accuracy (:func:`_percent_label`), so a subject with none of its cells right reads
    "0%" rather than as a missing bar; each tick names the subject and, in brackets, its test cells."""
    colors = class_colors(classes)
    order = sorted(subjects, key=lambda s: (classes.index(s.true_class), s.accuracy, s.subject))
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 + 0.38 * len(order)), 4), layout="constrained")
    positions = np.arange(len(order))
    axes.bar(positions, [s.accuracy for s in order], color=[colors[s.true_class] for s in order], width=0.75)
    for position, item in zip(positions, order, strict=True):
        axes.text(position, item.accuracy + 0.01, _percent_label(item.accuracy), ha="center", va="bottom", fontsize=6.5)
    many = len(order) > 12
    ticks = [f"{s.subject} ({s.n_cells})" if many else f"{s.subject}\n({s.n_cells})" for s in order]
    axes.set_xticks(positions, labels=ticks, rotation=90 if many else 0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[name]) for name in classes]
    labels = [f"true class {name}" for name in classes]
    axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    axes.yaxis.set_major_formatter(_TickPercentFormatter(1.0))
    axes.set(
        ylim=(0, 1.1),
        xlabel="subject (its test cells)",
        ylabel="accuracy on the subject's cells",
        title=f"{model}: accuracy per test subject",
    )
    axes.grid(axis="y", alpha=0.3)
    return figure


def ranking(scores: Sequence[RankedScore], metric: str, interval: str) -> Figure:
    """Horizontal bars, best model on top, with error bars; ``interval`` names what the bars span (CI or ± sd)."""
    ordered = sorted(scores, key=lambda s: _sortable(s.value))
    colors = model_colors([s.model for s in ordered])
    figure, axes = plt.subplots(figsize=(7.5, 1.2 + 0.5 * len(ordered)), layout="constrained")
    positions = np.arange(len(ordered))
    values = np.array([s.value for s in ordered])
    errors = np.array([[s.value - s.low for s in ordered], [s.high - s.value for s in ordered]])
    axes.barh(positions, values, color=[colors[s.model] for s in ordered], height=0.6)
    axes.errorbar(
        values, positions, xerr=np.clip(errors, 0, None), fmt="none", ecolor="black", capsize=4, linewidth=1.2
    )
    for position, score in zip(positions, ordered, strict=True):
        axes.text(min(score.high, 1.0) + 0.01, position, f"{score.value:.3f}", va="center", fontsize=9)
    axes.set_yticks(positions, labels=[s.model for s in ordered])
    axes.set(xlim=(0, 1.1), xlabel=f"{metric} (error bars: {interval})", title=f"Models ranked by {metric}")
    axes.grid(axis="x", alpha=0.3)
    return figure


def _sortable(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def risk_coverage(curve: RiskCoverage, model: str, where: str = "test split") -> Figure:
    """The risk-coverage curve (Geifman & El-Yaniv, 2017): errors among the cells called as more are referred.

    The curve refers the cells nearest the threshold first; the star is the refer band chosen on validation, the
    dashed line the error rate it was chosen for, and the ring calling every cell (no referral), drawn over the star
    so that both show where the band refers no cell. ``where`` names the scored cells in the title.
    """
    coverage, error = 100 * np.asarray(curve.coverage, dtype=float), 100 * np.asarray(curve.error, dtype=float)
    figure, axes = plt.subplots(figsize=(6.8, 5.4), layout="constrained")
    axes.plot(coverage, error, color="#2e86c1", linewidth=2, label="referring the cells nearest the threshold first")
    tops = [*error, 1.0]
    cells = f"{curve.n_cells} " if curve.n_cells else ""
    if len(coverage):
        axes.scatter(
            [coverage[-1]],
            [error[-1]],
            s=340,  # a ring around the star where the refer band refers no cell and so sits on it
            facecolors="none",
            edgecolors="#1c2833",
            linewidths=1.2,
            zorder=6,
            clip_on=False,  # at 100% called, near the frame's edge
            label=f"no referral: {error[-1]:.1f}% errors",
        )
    if curve.target is not None:
        axes.axhline(
            100 * curve.target,
            color=_POSITIVE_COLOR,
            linestyle="--",
            linewidth=1.2,
            label=f"target: at most {100 * curve.target:g}% errors",
        )
        tops.append(100 * curve.target)
    if curve.band is not None and curve.band[1] is not None:
        called, wrong = 100 * curve.band[0], 100 * curve.band[1]
        axes.scatter(
            [called],
            [wrong],
            marker="*",
            s=260,
            color="#d68910",
            edgecolors="#1c2833",
            zorder=5,
            clip_on=False,
            label=f"{curve.band_label} (chosen on validation): {100 - called:.0f}% referred, {wrong:.1f}% errors",
        )
        tops.append(wrong)
    axes.set(
        xlim=(0, 100 + _COVERAGE_MARGIN),
        ylim=(0, min(105.0, 1.2 * max(tops))),  # room above 100% errors (every called cell wrong), no ticks past it
        xlabel=f"cells called (share of the {cells}cells; the rest are referred to a person)",
        ylabel="errors among the called cells",
        title=f"{model}: errors against cells called ({where})",
    )
    axes.set_xticks(range(0, 101, 20))  # not past 100%, which the margin would otherwise tick
    axes.xaxis.set_major_formatter(_TickPercentFormatter())
    axes.yaxis.set_major_formatter(_TickPercentFormatter())
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False)
    return figure
