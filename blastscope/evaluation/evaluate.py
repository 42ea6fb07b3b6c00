"""Evaluate a trained run: predictions on a split (or on a dataset it never saw) scored every way that matters.

The layout, by concern:

- :mod:`~blastscope.evaluation.scoring`: :func:`evaluate_predictions`, the pure core (logits and an operating point in,
  plain dict out);
- :mod:`~blastscope.evaluation.threshold`: choosing a new operating point on the validation split;
- :mod:`~blastscope.evaluation.cells`: which cells are scored, and whether the result is subject-level;
- :mod:`~blastscope.evaluation.run_evaluation`: :func:`evaluate_run` (load, predict through the inference core, score
  at the run's operating point or a newly chosen and stored one) and :func:`write_evaluation`;
- :mod:`~blastscope.evaluation.summary`: :func:`format_summary`, what ``blastscope evaluate`` prints.

Import from here; the submodules are the layout, not the interface.
"""

from __future__ import annotations

from blastscope.evaluation.cells import SPLITS
from blastscope.evaluation.run_evaluation import EvaluationResult, evaluate_run, prediction_rows, write_evaluation
from blastscope.evaluation.scoring import decisions, evaluate_predictions
from blastscope.evaluation.summary import format_summary

__all__ = [
    "SPLITS",
    "EvaluationResult",
    "decisions",
    "evaluate_predictions",
    "evaluate_run",
    "format_summary",
    "prediction_rows",
    "write_evaluation",
]
