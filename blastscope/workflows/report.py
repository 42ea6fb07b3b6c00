"""The comparison report: self-contained ``report.html``, ``report.md`` with PNGs, ``results.csv`` and ``results.json``.

The report reads only :class:`Comparison` — plain numbers gathered by :mod:`blastscope.workflows.compare` — so it can
be written (and tested) without training anything. The HTML embeds every figure as a base64 data URI and carries its
CSS inline, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blastscope.evaluation import plots
from blastscope.metrics import display_name

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

IMAGE_LEVEL_WARNING = (
    "Warning: this split is image-level, not subject-level: cells of one person may sit in both training and test "
    "data, so these results are likely optimistic."
)
INTENDED_USE = (
    "Research on classifying segmented single-cell microscopy images. Not a diagnostic device: not validated for "
    "clinical use, and no result here may guide the care of a patient."
)


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
        return {name: sum(part.get(name, 0) for part in self.cells_per_part.values()) for name in self.classes}

    def subjects_per_class(self) -> dict[str, int]:
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
            values = _present(fold.get(metric) for fold in self.fold_metrics)
            return statistics.fmean(values) if values else None
        return self.metrics.get(metric)

    def spread(self, metric: str) -> tuple[float, float] | None:
        """Error bar bounds: mean ± sd over folds under cross-validation, else the 95% CI."""
        if self.fold_metrics:
            values = _present(fold.get(metric) for fold in self.fold_metrics)
            if not values:
                return None
            mean, sd = statistics.fmean(values), _sd(values)
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
        return sorted(self.models, key=lambda m: -_finite(m.score("weighted_f1")))

    @property
    def interval_label(self) -> str:
        if self.cv_folds:
            return f"mean ± sd over {self.cv_folds} subject-grouped folds"
        return f"95% bootstrap CI, resampling {self.bootstrap_unit}"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    markdown: Path
    csv: Path
    json: Path
    figures: list[Path]


@dataclass(frozen=True, slots=True)
class _Figure:
    key: str
    caption: str
    png: bytes


def write_report(comparison: Comparison, out_dir: Path) -> ReportFiles:
    """Write the four report files (and the PNGs the Markdown links to) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _draw_figures(comparison)
    figure_dir = out_dir / "figures"
    figure_paths = []
    for figure in figures:
        path = figure_dir / f"{figure.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(figure.png)
        figure_paths.append(path)
    files = ReportFiles(
        html=out_dir / "report.html",
        markdown=out_dir / "report.md",
        csv=out_dir / "results.csv",
        json=out_dir / "results.json",
        figures=figure_paths,
    )
    by_key = {figure.key: figure for figure in figures}
    files.html.write_text(_html(comparison, by_key), encoding="utf-8")
    files.markdown.write_text(_markdown(comparison, by_key, figure_dir.name), encoding="utf-8")
    _write_csv(comparison, files.csv)
    files.json.write_text(json.dumps(_json(comparison), indent=2, default=_plain), encoding="utf-8")
    return files


# --- figures ---------------------------------------------------------------------------------------------------------


def _draw_figures(comparison: Comparison) -> list[_Figure]:
    figures = [
        _Figure(
            "ranking",
            f"Ranking by weighted F1; error bars: {comparison.interval_label}.",
            plots.to_png(
                plots.ranking(
                    [_ranked_score(model) for model in comparison.models], "weighted F1", comparison.interval_label
                )
            ),
        )
    ]
    curves = {
        model.name: (model.roc[0], model.roc[1], _finite(model.metrics.get("roc_auc")))
        for model in comparison.models
        if model.roc is not None
    }
    if curves:
        positive = display_name(comparison.dataset.classes[-1])
        caption = "ROC curves of all models on the same test split" + _fold_note(comparison) + "."
        figures.append(_Figure("roc", caption, plots.to_png(plots.roc_curves(curves, positive))))
    for model in comparison.ranked:
        figures.extend(_model_figures(model, comparison))
    return figures


def _model_figures(model: ModelResult, comparison: Comparison) -> list[_Figure]:
    names = [display_name(name) for name in model.classes]
    label = model.display_name
    figures = []
    if model.history:
        caption = "Loss and validation weighted F1 per epoch; the dashed line marks the phase change."
        figures.append(
            _Figure(f"curves-{model.name}", caption, plots.to_png(plots.training_curves(model.history, label)))
        )
    caption = "Confusion matrix on the test split" + _fold_note(comparison) + ": counts and share of each true class."
    matrix = plots.confusion_matrix(model.confusion, names, label, model.threshold)
    figures.append(_Figure(f"confusion-{model.name}", caption, plots.to_png(matrix)))
    if model.reliability_before is not None:
        caption = "Reliability diagram before and after temperature scaling (fitted on the validation split)."
        diagram = plots.reliability_diagram(model.reliability_before, model.reliability_after, label)
        figures.append(_Figure(f"reliability-{model.name}", caption, plots.to_png(diagram)))
    if model.subjects:
        shown = [
            plots.SubjectAccuracy(s.subject, display_name(s.true_class), s.accuracy, s.n_cells) for s in model.subjects
        ]
        caption = "Accuracy per test subject, coloured by the subject's true class."
        figures.append(
            _Figure(f"subjects-{model.name}", caption, plots.to_png(plots.subject_accuracy(shown, names, label)))
        )
    return figures


def _ranked_score(model: ModelResult) -> plots.RankedScore:
    value = _finite(model.score("weighted_f1"), default=0.0)
    low, high = model.spread("weighted_f1") or (value, value)
    return plots.RankedScore(model.name, value, low, high)


def _fold_note(comparison: Comparison) -> str:
    return f" (fold 1 of {comparison.cv_folds})" if comparison.cv_folds else ""


# --- tables shared by HTML and Markdown ------------------------------------------------------------------------------


def _ranking_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "model", "weights"]
    header += [METRIC_LABELS[m] for m in HEADLINE_METRICS]
    header += ["ECE (→ after scaling)", "train time", "images/s"]
    rows = []
    for rank, model in enumerate(comparison.ranked, start=1):
        row = [str(rank), model.name, model.weights_source]
        row += [_score_text(model, metric, comparison) for metric in HEADLINE_METRICS]
        row += [_ece_text(model), _seconds_text(model.train_seconds), _number_text(model.images_per_second, "{:.1f}")]
        rows.append(row)
    return header, rows


def _score_text(model: ModelResult, metric: str, comparison: Comparison) -> str:
    value = model.score(metric)
    if value is None:
        return "n/a"
    spread = model.spread(metric)
    if comparison.cv_folds and spread is not None:
        return f"{value:.3f} ± {(spread[1] - spread[0]) / 2:.3f}"
    if spread is not None:
        return f"{value:.3f} [{spread[0]:.3f}, {spread[1]:.3f}]"
    return f"{value:.3f}"


def _ece_text(model: ModelResult) -> str:
    if model.reliability_before is None:
        return "n/a"
    text = f"{model.reliability_before.ece:.3f}"
    if model.reliability_after is not None:
        text += f" → {model.reliability_after.ece:.3f}"
    return text


def _seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{seconds:.1f} s"


def _number_text(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def _dataset_tables(card: DatasetCard) -> list[tuple[str, list[str], list[list[str]]]]:
    names = [display_name(name) for name in card.classes]
    parts = list(card.cells_per_part)
    per_part = [
        [
            part,
            *(str(card.cells_per_part[part].get(name, 0)) for name in card.classes),
            str(sum(card.cells_per_part[part].values())),
        ]
        for part in parts
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
                [[display_name(n), str(subject_counts[n])] for n in card.classes],
            )
        )
        rows = [[subject, display_name(label), part, str(cells)] for subject, label, part, cells in card.subjects]
        tables.append(("Cells per subject", ["subject", "class", "part", "cells"], rows))
    return tables


def _dataset_facts(card: DatasetCard, comparison: Comparison) -> list[str]:
    names = [display_name(name) for name in card.classes]
    level = "subject-level (no person in two parts)" if card.subject_level else "image-level (persons may be shared)"
    facts = [
        f"Data: {card.root} ({card.kind})",
        f"Classes: {', '.join(names)} (positive: {names[-1]})",
        f"Split: {level}"
        + (f"; {comparison.cv_folds}-fold cross-validation, counts of fold 1" if comparison.cv_folds else ""),
        f"Exact duplicate files counted once: {card.duplicates}; unreadable files skipped: {card.skipped}",
        f"Attribution: {card.attribution}",
    ]
    return facts + [f"Note: {note}" for note in card.notes]


def _model_card(model: ModelResult, card: DatasetCard) -> list[tuple[str, str]]:
    totals = card.cells_per_class()
    data_line = ", ".join(f"{totals[name]} {display_name(name)}" for name in card.classes)
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
    return [
        ("Intended use", INTENDED_USE),
        ("Weights", model.weights_source),
        ("Decision threshold", f"p({display_name(model.classes[-1])}) ≥ {model.threshold:g}"),
        ("Limitations", " ".join(limitations)),
        ("Training settings", _settings_text(model.settings)),
        ("Run directory", model.run_dir),
    ]


def _settings_text(settings: dict[str, Any]) -> str:
    return "; ".join(f"{key} {value}" for key, value in settings.items() if value not in (None, "", [], {}))


# --- HTML ------------------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1320px; margin: 2em auto;
       padding: 0 1em; color: #1c2833; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #d5d8dc; padding-bottom: 0.2em; margin-top: 2em; }
.warning { background: #fdecea; border-left: 6px solid #c0392b; padding: 0.8em 1em; font-weight: 600; }
.muted { color: #5d6d7e; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d5d8dc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f6f7; } tr:nth-child(even) td { background: #fbfcfc; }
table.ranking td:nth-child(n+4) { white-space: nowrap; } table.ranking { font-size: 0.86em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eaeded; }
figcaption { color: #5d6d7e; font-size: 0.9em; }
.model { border: 1px solid #d5d8dc; border-radius: 6px; padding: 0 1.2em 1em; margin: 1.5em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
dl.card dt { font-weight: 600; margin-top: 0.5em; } dl.card dd { margin-left: 1.2em; }
"""


def _html(comparison: Comparison, figures: dict[str, _Figure]) -> str:
    card = comparison.dataset
    body = [f"<h1>{_e(comparison.title)}</h1>"]
    if not card.subject_level:
        body.insert(0, f'<p class="warning">{_e(IMAGE_LEVEL_WARNING)}</p>')
    body.append(f'<p class="muted">Created {_e(comparison.created)}. {_e(INTENDED_USE)}</p>')
    body.append(f'<p class="muted">Data: {_e(card.attribution)}.</p>')
    body.append("<h2>Ranking</h2>")
    body.append(
        f"<p>Ranked by weighted F1 (the C-NMC 2019 challenge metric); brackets: {_e(comparison.interval_label)}.</p>"
    )
    body.append(_html_table(*_ranking_table(comparison), css_class="ranking"))
    body.append(_html_figure(figures["ranking"]))
    body.append("<h2>Shared budget</h2>")
    body.append(_html_table(["setting", "value"], [[key, str(value)] for key, value in comparison.budget.items()]))
    if "roc" in figures:
        body.append("<h2>ROC curves</h2>")
        body.append(_html_figure(figures["roc"]))
    body.append("<h2>Models</h2>")
    for model in comparison.ranked:
        body.append(_html_model(model, comparison, figures))
    body.append("<h2>Dataset card</h2>")
    body.append("<ul>" + "".join(f"<li>{_e(fact)}</li>" for fact in _dataset_facts(card, comparison)) + "</ul>")
    for caption, header, rows in _dataset_tables(card):
        body.append(f"<h3>{_e(caption)}</h3>")
        body.append(_html_table(header, rows))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(comparison.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_model(model: ModelResult, comparison: Comparison, figures: dict[str, _Figure]) -> str:
    parts = [f'<section class="model" id="model-{_e(model.name)}">', f"<h3>{_e(model.display_name)}</h3>"]
    rows = [[METRIC_LABELS.get(key, key), _score_text(model, key, comparison)] for key in METRIC_LABELS]
    parts.append(_html_table(["metric", "value"], rows))
    parts.append(
        '<dl class="card">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _model_card(model, comparison.dataset))
        + "</dl>"
    )
    grid = [_html_figure(figures[key]) for key in _model_figure_keys(model) if key in figures]
    parts.append('<div class="grid">' + "".join(grid) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _model_figure_keys(model: ModelResult) -> list[str]:
    return [f"{kind}-{model.name}" for kind in ("curves", "confusion", "reliability", "subjects")]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(figure: _Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure><img alt="{_e(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(figure.caption)}</figcaption></figure>"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- Markdown --------------------------------------------------------------------------------------------------------


def _markdown(comparison: Comparison, figures: dict[str, _Figure], figure_dir: str) -> str:
    card = comparison.dataset
    lines = [f"# {comparison.title}", ""]
    if not card.subject_level:
        lines += [f"> **{IMAGE_LEVEL_WARNING}**", ""]
    lines += [f"Created {comparison.created}. {INTENDED_USE}", "", f"Data: {card.attribution}.", ""]
    lines += ["## Ranking", "", f"Ranked by weighted F1; brackets: {comparison.interval_label}.", ""]
    lines += _md_table(*_ranking_table(comparison))
    image = _md_image(figure_dir)
    lines += ["", image(figures["ranking"]), "", "## Shared budget", ""]
    lines += _md_table(["setting", "value"], [[key, str(value)] for key, value in comparison.budget.items()])
    if "roc" in figures:
        lines += ["", "## ROC curves", "", image(figures["roc"])]
    lines += ["", "## Models"]
    for model in comparison.ranked:
        lines += ["", f"### {model.display_name}", ""]
        lines += _md_table(
            ["metric", "value"], [[METRIC_LABELS[k], _score_text(model, k, comparison)] for k in METRIC_LABELS]
        )
        lines += [""] + [f"- **{key}**: {value}" for key, value in _model_card(model, card)] + [""]
        lines += [image(figures[key]) for key in _model_figure_keys(model) if key in figures]
    lines += ["", "## Dataset card", ""] + [f"- {fact}" for fact in _dataset_facts(card, comparison)]
    for caption, header, rows in _dataset_tables(card):
        lines += ["", f"### {caption}", "", *_md_table(header, rows)]
    return "\n".join(lines) + "\n"


def _md_image(figure_dir: str) -> Callable[[_Figure], str]:
    return lambda figure: f"![{figure.caption}]({figure_dir}/{figure.key}.png)"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


# --- CSV and JSON ----------------------------------------------------------------------------------------------------


def _result_rows(comparison: Comparison) -> list[dict[str, Any]]:
    rows = []
    for rank, model in enumerate(comparison.ranked, start=1):
        row: dict[str, Any] = {
            "rank": rank,
            "model": model.name,
            "display_name": model.display_name,
            "weights_source": model.weights_source,
            "pretrained": model.pretrained,
        }
        for metric in HEADLINE_METRICS:
            row[metric] = model.score(metric)
            if comparison.cv_folds:
                values = _present(fold.get(metric) for fold in model.fold_metrics)
                row[f"{metric}_sd"] = _sd(values) if values else None
            else:
                low, high = model.intervals.get(metric, (None, None))
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        row["ece"] = model.reliability_before.ece if model.reliability_before else None
        row["ece_after_scaling"] = model.reliability_after.ece if model.reliability_after else None
        row["threshold"] = model.threshold
        row["train_seconds"] = model.train_seconds
        row["images_per_second"] = model.images_per_second
        row["run_dir"] = model.run_dir
        rows.append(row)
    return rows


def _write_csv(comparison: Comparison, path: Path) -> None:
    rows = _result_rows(comparison)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["rank", "model"])
        writer.writeheader()
        writer.writerows(rows)


def _json(comparison: Comparison) -> dict[str, Any]:
    return {
        "title": comparison.title,
        "created": comparison.created,
        "subject_level": comparison.dataset.subject_level,
        "warning": None if comparison.dataset.subject_level else IMAGE_LEVEL_WARNING,
        "intended_use": INTENDED_USE,
        "interval": comparison.interval_label,
        "cv_folds": comparison.cv_folds,
        "budget": comparison.budget,
        "ranking": _result_rows(comparison),
        "dataset": asdict(comparison.dataset),
        "models": {
            model.name: {
                "display_name": model.display_name,
                "weights_source": model.weights_source,
                "metrics": model.metrics,
                "intervals": model.intervals,
                "fold_metrics": model.fold_metrics,
                "confusion_matrix": model.confusion,
                "threshold": model.threshold,
                "subjects": [asdict(s) for s in model.subjects],
                "settings": model.settings,
                "model_card": dict(_model_card(model, comparison.dataset)),
            }
            for model in comparison.ranked
        },
    }


def _plain(value: object) -> object:
    """JSON fallback for the few non-JSON types settings may hold (paths, tuples inside dataclasses, numpy scalars)."""
    if hasattr(value, "item"):
        return value.item()  # type: ignore[union-attr]
    return str(value)


# --- small numeric helpers -------------------------------------------------------------------------------------------


def _present(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def _sd(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _finite(value: float | None, default: float = -math.inf) -> float:
    return default if value is None or math.isnan(value) else value
