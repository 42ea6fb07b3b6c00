"""The report as one self-contained HTML page: CSS inline, every figure a base64 data URI.

Nothing on the page points outside it, so it opens offline and can be mailed as a single file. Text comes from
:mod:`blastscope.workflows.report.content` and is escaped here; layout and styling are this module's only concern.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

from blastscope.workflows.report.content import (
    IMAGE_LEVEL_WARNING,
    INTENDED_USE,
    budget_table,
    class_report_caption,
    class_report_table,
    dataset_facts,
    dataset_tables,
    metric_table,
    model_card,
    single_class_text,
)
from blastscope.workflows.report.figures import ReportFigure, model_figure_keys
from blastscope.workflows.report.model import Comparison, ModelResult
from blastscope.workflows.report.ranking import TTA_ROW, ranking_notes, ranking_statement, ranking_table

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
td.flagged { color: #a93226; font-weight: 600; }
td.tta { color: #5d6d7e; font-style: italic; white-space: nowrap; } .scroll { overflow-x: auto; }
.flag { background: #fdecea; border-left: 6px solid #c0392b; padding: 0.5em 1em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.pair > div { flex: 1 1 22em; max-width: 40em; } .pair h4 { margin: 1em 0 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eaeded; }
figcaption { color: #5d6d7e; font-size: 0.9em; }
.model { border: 1px solid #d5d8dc; border-radius: 6px; padding: 0 1.2em 1em; margin: 1.5em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
dl.card dt { font-weight: 600; margin-top: 0.5em; } dl.card dd { margin-left: 1.2em; }
"""


def render_html(comparison: Comparison, figures: Mapping[str, ReportFigure]) -> str:
    """The whole page; an image-level split's warning comes first, before the title, so no reader misses it."""
    card = comparison.dataset
    body = [] if card.subject_level else [f'<p class="warning">{_escape(IMAGE_LEVEL_WARNING)}</p>']
    body.append(f"<h1>{_escape(comparison.title)}</h1>")
    body.append(f'<p class="muted">Created {_escape(comparison.created)}. {_escape(INTENDED_USE)}</p>')
    body.append(f'<p class="muted">Data: {_escape(card.attribution)}.</p>')
    body.append("<h2>Ranking</h2>")
    body.append(f"<p>{_escape(ranking_statement(comparison))}</p>")
    body.append('<div class="scroll">' + _table(*ranking_table(comparison), css_class="ranking") + "</div>")
    flagged = any(model.single_class is not None for model in comparison.models)
    for index, note in enumerate(ranking_notes(comparison)):  # the one-class remark comes first, when there is one
        body.append(f'<p class="{"flag" if flagged and index == 0 else "muted"}">{_escape(note)}</p>')
    body.append(_figure(figures["ranking"]))
    body.append("<h2>Shared budget</h2>")
    body.append(_table(*budget_table(comparison)))
    if "roc" in figures:
        body.append("<h2>ROC curves</h2>")
        body.append(_figure(figures["roc"]))
    body.append("<h2>Models</h2>")
    for model in comparison.ranked:
        body.append(_model_section(model, comparison, figures))
    body.append("<h2>Dataset card</h2>")
    body.append("<ul>" + "".join(f"<li>{_escape(fact)}</li>" for fact in dataset_facts(card, comparison)) + "</ul>")
    for caption, header, rows in dataset_tables(card):
        body.append(f"<h3>{_escape(caption)}</h3>")
        body.append(_table(header, rows))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_escape(comparison.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _model_section(model: ModelResult, comparison: Comparison, figures: Mapping[str, ReportFigure]) -> str:
    """One model's box: its metrics, its confusion matrix beside its classification report, its model card, and its
    other figures side by side."""
    parts = [f'<section class="model" id="model-{_escape(model.name)}">', f"<h3>{_escape(model.display_name)}</h3>"]
    if model.single_class is not None:
        text = f"{model.name} {single_class_text(model, comparison.cv_folds)}: at its threshold it does not tell the "
        parts.append(f'<p class="flag">{_escape(text + "classes apart.")}</p>')
    parts.append(_table(*metric_table(model, comparison)))
    confusion = figures.get(f"confusion-{model.name}")
    report = (
        f"<div><h4>Classification report</h4>{_table(*class_report_table(model), numeric=True)}"
        f'<p class="muted">{_escape(class_report_caption(model, comparison))}</p></div>'
    )
    parts.append('<div class="pair">' + (_figure(confusion) if confusion else "") + report + "</div>")
    card = model_card(model, comparison.dataset, comparison.cv_folds)
    parts.append(
        '<dl class="card">' + "".join(f"<dt>{_escape(k)}</dt><dd>{_escape(v)}</dd>" for k, v in card) + "</dl>"
    )
    grid = [
        _figure(figures[key]) for key in model_figure_keys(model) if key in figures and not key.startswith("confusion-")
    ]
    parts.append('<div class="grid">' + "".join(grid) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "", numeric: bool = False) -> str:
    """A table; with ``numeric`` every column after the first is right-aligned, as numbers are read."""
    head = "".join(f"<th>{_escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(_cell(cell, numeric and column > 0) for column, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(text: str, numeric: bool) -> str:
    """One body cell; a model name flagged "calls every test cell ..." is set off in red, a TTA row's label in grey."""
    if numeric:
        return f'<td class="num">{_escape(text)}</td>'
    if " (calls every test cell" in text:
        return f'<td class="flagged">{_escape(text)}</td>'
    if text == TTA_ROW:
        return f'<td class="tta">{_escape(text)}</td>'
    return f"<td>{_escape(text)}</td>"


def _figure(figure: ReportFigure) -> str:
    """The figure inlined as a data URI, its caption doubling as alt text."""
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure><img alt="{_escape(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_escape(figure.caption)}</figcaption></figure>"
    )


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)
