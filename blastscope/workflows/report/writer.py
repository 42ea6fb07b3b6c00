"""Writing a comparison report to a folder: the one entry point that draws the figures and writes every format.

Figures are drawn once and shared by the HTML page (inlined) and the Markdown file (linked PNGs), so the two always
show the same images; the CSV and JSON carry the same numbers for scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blastscope.workflows.report.figures import draw_figures
from blastscope.workflows.report.html_page import render_html
from blastscope.workflows.report.markdown_page import render_markdown
from blastscope.workflows.report.model import Comparison
from blastscope.workflows.report.results import write_results_csv, write_results_json


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where :func:`write_report` put each file."""

    html: Path
    markdown: Path
    csv: Path
    json: Path
    figures: list[Path]


def write_report(comparison: Comparison, out_dir: Path) -> ReportFiles:
    """Write ``report.html``, ``report.md`` with its ``figures/*.png``, ``results.csv`` and ``results.json``.

    Parameters
    ----------
    comparison : Comparison
        The results to report; nothing is trained or evaluated here.
    out_dir : Path
        Folder to write into, created if missing; files of the same names are overwritten.

    Returns
    -------
    ReportFiles
        The paths written, figures in the order the report shows them.

    Raises
    ------
    OSError
        When a file cannot be written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(comparison)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figure_paths = []
    for figure in figures:
        path = figure_dir / f"{figure.key}.png"
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
    files.html.write_text(render_html(comparison, by_key), encoding="utf-8")
    files.markdown.write_text(render_markdown(comparison, by_key, figure_dir.name), encoding="utf-8")
    write_results_csv(comparison, files.csv)
    write_results_json(comparison, files.json)
    return files
