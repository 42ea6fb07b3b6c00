"""Scan whole smear photographs: every white cell found, cut out onto black like C-NMC, classified by a run, and the
image judged ("n of m white cells called ALL"), with an overlay a person can check.

- :func:`scan_photograph`: one photograph -> :class:`ImageScan` (cells, cells left out, verdict, overlay);
  :func:`find_cells` and :func:`judge_cells` are its two halves, for classifying several photographs' cells together.
- :class:`ScanWriter`: the CSV, JSON, overlay PNGs and summary of many photographs.
- :func:`scan_working_bytes`: the memory a scan takes, for a server to reserve before it starts.
"""

from blastscope.workflows.scan.outputs import ScanWriter
from blastscope.workflows.scan.photograph import (
    Classify,
    FoundCells,
    find_cells,
    judge_cells,
    scan_photograph,
    scan_working_bytes,
)
from blastscope.workflows.scan.result import REFER_TEXT, VERDICTS, ImageScan, ScannedCell, SkippedCell, verdict

__all__ = [
    "REFER_TEXT",
    "VERDICTS",
    "Classify",
    "FoundCells",
    "ImageScan",
    "ScanWriter",
    "ScannedCell",
    "SkippedCell",
    "find_cells",
    "judge_cells",
    "scan_photograph",
    "scan_working_bytes",
    "verdict",
]
