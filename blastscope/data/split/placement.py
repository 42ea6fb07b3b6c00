"""The search that places whole units (subject groups or single cells) in parts, shared by holdout splits and folds.

Units are placed by a seeded greedy pass that puts each unit where it most reduces the squared deviation from the
target cell count of every class, and forces the last units of a class into parts still missing that class; the best
of many seeded orders wins. Groups here are mostly single-class, so per-class targets give stratification without
splitting a group; scikit-learn's group splitters allow only equal folds, not 60/20/20.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blastscope.data.discover import subject_groups
from blastscope.data.table import Cell, CellTable
from blastscope.errors import DataError

SUBJECT_TRIALS = 200
"""Seeded orders tried for subject groups; single cells reach their targets in one pass."""


@dataclass(slots=True)
class Unit:
    """What is placed as a whole: a subject group or a single cell, with its cells per class and any pinned part."""

    key: str
    cells: list[Cell]
    counts: Counter[str]
    fixed: str | None


def units_of(table: CellTable, subject_level: bool) -> list[Unit]:
    """The table's cells bundled into units: one per subject group (sorted by group id), or one per cell.

    Raises
    ------
    DataError
        When the cells of one subject group are pinned to different parts.
    """
    if not subject_level:
        return [Unit(cell.digest, [cell], Counter([cell.label]), cell.fixed_split) for cell in table.cells]
    groups = subject_groups(table)
    members: dict[str, list[Cell]] = defaultdict(list)
    for cell in table.cells:
        members[groups[cell.subject]].append(cell)
    units = []
    for key, cells in members.items():
        fixed = {cell.fixed_split for cell in cells if cell.fixed_split is not None}
        if len(fixed) > 1:
            raise DataError(f"subject group {key} has cells pinned to {' and '.join(sorted(fixed))}; pin one part")
        units.append(Unit(key, cells, Counter(cell.label for cell in cells), next(iter(fixed), None)))
    return sorted(units, key=lambda unit: unit.key)


def assign(units: Sequence[Unit], ratios: Mapping[str, float], seed: int, subject_level: bool) -> dict[str, str]:
    """Place every unit in a part: pinned units where pinned, free ones by the best of several seeded greedy passes.

    Parameters
    ----------
    units : sequence of Unit
        Everything to place.
    ratios : mapping of str to float
        Part name -> share of every class's free cells it should receive; parts at 0 receive none.
    seed : int
        Seeds the orders tried.
    subject_level : bool
        Whether units are subject groups (many orders tried, and named so in errors) or single cells (one order).

    Returns
    -------
    dict of str to str
        Unit key -> part.

    Raises
    ------
    DataError
        When a class has fewer units than there are receiving parts, or no order tried puts every class in every
        receiving part.
    """
    placement = {unit.key: unit.fixed for unit in units if unit.fixed is not None}
    free = [unit for unit in units if unit.fixed is None]
    totals = sum((unit.counts for unit in free), Counter())
    receiving = [part for part, ratio in ratios.items() if ratio > 0]
    _check_enough_units(free, totals, receiving, subject_level)
    targets = {part: {label: ratios[part] * totals[label] for label in totals} for part in receiving}
    rng = random.Random(seed)
    best: tuple[float, dict[str, str]] | None = None
    for _ in range(SUBJECT_TRIALS if subject_level else 1):
        order = list(free)
        rng.shuffle(order)
        result = _greedy(order, targets, totals)
        if result is not None and (best is None or result[0] < best[0]):
            best = result
    if best is None:
        raise DataError("no split found that puts every class in every part; add subjects or set a part's ratio to 0")
    return placement | best[1]


def _check_enough_units(
    free: Sequence[Unit], totals: Counter[str], receiving: Sequence[str], subject_level: bool
) -> None:
    """Fail early, with the ways out, when a class cannot reach every receiving part whatever the order."""
    unit_name = "subject groups" if subject_level else "cells"
    for label in sorted(totals):
        units = sum(1 for unit in free if unit.counts[label])
        if units < len(receiving):
            raise DataError(
                f"class '{label}' has only {units} {unit_name}, too few for {len(receiving)} parts "
                f"({', '.join(receiving)}): add subjects, set a part's ratio to 0 "
                "(e.g. --ratios 0.8,0.2,0 (data split) / --split-ratios 0.8,0.2,0 (train))"
                + (", or split by image (--split-by image)" if subject_level else "")
            )


def _greedy(
    order: Sequence[Unit], targets: Mapping[str, Mapping[str, float]], totals: Counter[str]
) -> tuple[float, dict[str, str]] | None:
    """One pass in ``order``: its cost and placement, or None when some part ends up without some class."""
    counts = {part: Counter() for part in targets}
    lacking = {label: set(targets) for label in totals}
    remaining = Counter(label for unit in order for label in unit.counts)
    placement = {}
    for unit in order:
        candidates = list(targets)
        for label in unit.counts:
            if lacking[label] and remaining[label] <= len(lacking[label]):
                candidates = [part for part in candidates if part in lacking[label]] or candidates
        part = min(candidates, key=lambda p: _cost_change(counts[p], targets[p], unit.counts, totals))
        counts[part].update(unit.counts)
        placement[unit.key] = part
        for label in unit.counts:
            remaining[label] -= 1
            lacking[label].discard(part)
    if any(lacking.values()):
        return None
    cost = sum(
        ((counts[part][label] - targets[part][label]) / totals[label]) ** 2 for part in targets for label in totals
    )
    return cost, placement


def _cost_change(
    counts: Counter[str], targets: Mapping[str, float], adding: Counter[str], totals: Counter[str]
) -> float:
    """Change of the summed squared, class-normalised deviation from the targets if ``adding`` joined this part."""
    return sum(
        count * (2 * (counts[label] - targets[label]) + count) / totals[label] ** 2 for label, count in adding.items()
    )
