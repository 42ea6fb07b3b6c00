"""Honest splits: whole subject groups per part, classes balanced, no identical file on two sides.

A split assigns *units* to parts: subject groups (subjects linked by identical files count as one, see
:func:`blastscope.data.discover.subject_groups`) or, when splitting by image, single cells. The package is laid out
by concern: :mod:`~blastscope.data.split.model` holds the :class:`Split` record, :mod:`~blastscope.data.split.make`
makes holdout and cross-validation splits with the search in :mod:`~blastscope.data.split.placement`,
:mod:`~blastscope.data.split.csv_file` writes and reads splits, and :mod:`~blastscope.data.split.leakage` checks
every split before use. Import from here; the submodules are the layout, not the interface.
"""

from __future__ import annotations

from blastscope.data.split.csv_file import (
    CSV_COLUMNS,
    SplitContentsMissing,
    changed_cells,
    read_split_csv,
    write_split_csv,
)
from blastscope.data.split.leakage import check_leakage, groups_in_several_parts
from blastscope.data.split.make import DEFAULT_RATIOS, SPLIT_BY, kfold_splits, make_split
from blastscope.data.split.model import PARTS, PartShare, Split

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_RATIOS",
    "PARTS",
    "SPLIT_BY",
    "PartShare",
    "Split",
    "SplitContentsMissing",
    "changed_cells",
    "check_leakage",
    "groups_in_several_parts",
    "kfold_splits",
    "make_split",
    "read_split_csv",
    "write_split_csv",
]
