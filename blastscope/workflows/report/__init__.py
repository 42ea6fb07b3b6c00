"""The comparison report: self-contained ``report.html``, ``report.md`` with PNGs, ``results.csv`` and ``results.json``.

The report reads only :class:`Comparison` — plain numbers gathered by :mod:`blastscope.workflows.compare` — so it can
be written (and tested) without training anything. The package is laid out by concern: the records in
:mod:`~blastscope.workflows.report.model`, figures in :mod:`~blastscope.workflows.report.figures`, text and tables
shared by every format in :mod:`~blastscope.workflows.report.content`, the ranking's table, notes and printed summary
in :mod:`~blastscope.workflows.report.ranking`, one module per output format
(:mod:`~blastscope.workflows.report.html_page`, :mod:`~blastscope.workflows.report.markdown_page`,
:mod:`~blastscope.workflows.report.results`), and :func:`write_report` in :mod:`~blastscope.workflows.report.writer`.
Import from here; the submodules are the layout, not the interface.
"""

from __future__ import annotations

from blastscope.workflows.report.content import IMAGE_LEVEL_WARNING, INTENDED_USE
from blastscope.workflows.report.model import (
    DEFAULT_RANK_METRIC,
    FOLD_METRICS,
    HEADLINE_METRICS,
    METRIC_LABELS,
    RANK_METRICS,
    SUBJECT_METRICS,
    TTA_LABEL,
    TTA_SUFFIX,
    Comparison,
    DatasetCard,
    ModelResult,
    PooledFolds,
    metric_label,
    rank_metric_choices,
)
from blastscope.workflows.report.ranking import summary_text
from blastscope.workflows.report.writer import ReportFiles, write_report

__all__ = [
    "DEFAULT_RANK_METRIC",
    "FOLD_METRICS",
    "HEADLINE_METRICS",
    "IMAGE_LEVEL_WARNING",
    "INTENDED_USE",
    "METRIC_LABELS",
    "RANK_METRICS",
    "SUBJECT_METRICS",
    "TTA_LABEL",
    "TTA_SUFFIX",
    "Comparison",
    "DatasetCard",
    "ModelResult",
    "PooledFolds",
    "ReportFiles",
    "metric_label",
    "rank_metric_choices",
    "summary_text",
    "write_report",
]
