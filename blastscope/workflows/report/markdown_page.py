"""The report as Markdown that links its figures as PNG files in a folder beside it.

For reading in a repository or pasting into notes, where an HTML page with inline images does not fit. It shows the
same sections, tables and figures as the HTML page, taken from the same shared content.
"""

from __future__ import annotations

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
from blastscope.workflows.report.model import Comparison
from blastscope.workflows.report.ranking import ranking_notes, ranking_statement, ranking_table


def render_markdown(comparison: Comparison, figures: Mapping[str, ReportFigure], figure_dir: str) -> str:
    """The whole document; figures are linked as ``<figure_dir>/<key>.png``, relative to the Markdown file."""
    card = comparison.dataset
    lines = [f"# {comparison.title}", ""]
    if not card.subject_level:
        lines += [f"> **{IMAGE_LEVEL_WARNING}**", ""]
    lines += [f"Created {comparison.created}. {INTENDED_USE}", "", f"Data: {card.attribution}.", ""]
    lines += ["## Ranking", "", ranking_statement(comparison), ""]
    lines += _table(*ranking_table(comparison))
    flagged = any(model.single_class is not None for model in comparison.models)
    for index, note in enumerate(ranking_notes(comparison)):
        lines += ["", f"> **{note}**" if flagged and index == 0 else note]
    lines += ["", _image(figures["ranking"], figure_dir), "", "## Shared budget", ""]
    lines += _table(*budget_table(comparison))
    if "roc" in figures:
        lines += ["", "## ROC curves", "", _image(figures["roc"], figure_dir)]
    lines += ["", "## Models"]
    for model in comparison.ranked:
        lines += ["", f"### {model.display_name}", ""]
        if model.single_class is not None:
            text = single_class_text(model, comparison.cv_folds)
            lines += [f"> **{model.name} {text}: at its threshold it does not tell the classes apart.**", ""]
        lines += _table(*metric_table(model, comparison))
        confusion = f"confusion-{model.name}"
        if confusion in figures:
            lines += ["", _image(figures[confusion], figure_dir)]
        lines += ["", "#### Classification report", "", *_table(*class_report_table(model))]
        lines += ["", class_report_caption(model, comparison)]
        lines += [""] + [f"- **{key}**: {value}" for key, value in model_card(model, card, comparison.cv_folds)] + [""]
        lines += [
            _image(figures[key], figure_dir) for key in model_figure_keys(model) if key in figures and key != confusion
        ]
    lines += ["", "## Dataset card", ""] + [f"- {fact}" for fact in dataset_facts(card, comparison)]
    for caption, header, rows in dataset_tables(card):
        lines += ["", f"### {caption}", "", *_table(header, rows)]
    return "\n".join(lines) + "\n"


def _image(figure: ReportFigure, figure_dir: str) -> str:
    return f"![{figure.caption}]({figure_dir}/{figure.key}.png)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A pipe table, one line per row; pipes inside cells are escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]
