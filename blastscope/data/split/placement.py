"""The search that places whole units (subject groups or single cells) in parts, shared by holdout splits and folds.

Units are placed by a seeded greedy pass that keeps every part's count of units of each class inside its quota (the
floor or ceiling of the part's ratio times that class's units) and, within it, puts each unit where it most reduces
the squared deviation from the target cell count of every class; the best of many seeded orders, polished by moving
and swapping units while that helps, wins. Counting units, not only cells, matters because subject sizes are
heavy-tailed: matching cells alone can hand one part a few huge subjects and another many small ones, and a model
trained on three people, or scored on two, says little about new people. Groups here are mostly single-class, so
per-class targets give stratification without splitting a group; scikit-learn's group splitters allow only equal
folds, not 60/20/20, and do not count groups per class.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from blastscope.data.discover import subject_groups
from blastscope.data.split.model import PARTS
from blastscope.data.table import Cell, CellTable
from blastscope.errors import DataError

SUBJECT_TRIALS = 200
"""Seeded orders tried for subject groups; single cells reach their targets in one pass."""

_EPS = 1e-9  # ratios arrive as floats: 0.6 * 10 must count as 6, not as a bit above
Quotas = Mapping[str, Mapping[str, tuple[int, int]]]  # part -> class -> (fewest, most) units of that class


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
    """Place every unit in a part: pinned units where pinned, free ones by a seeded search for the criteria below.

    A placement is judged, in this order, by:

    1. every class in every receiving part (required);
    2. units per class per part: a part with ratio r receives ``floor(r * n)`` or ``ceil(r * n)`` of the n free units
       holding a class (at least 1), so k equal folds differ by at most one subject group of each class; the summed
       shortfall or excess against these quotas is minimised, and is 0 whenever units hold one class each;
    3. cells per class per part: the summed squared deviation from ``r * cells of that class``, each class's
       deviation divided by its cell total, is minimised: by the best of 200 seeded greedy orders, then (for subject
       groups) by single moves and swaps of units until none lowers criterion 2 or 3.

    Cells are thus only as close to their targets as whole units and the unit quotas allow: a subject larger than a
    part's share overshoots whatever the placement.

    Parameters
    ----------
    units : sequence of Unit
        Everything to place.
    ratios : mapping of str to float
        Part name -> share of every class's free cells, and of its free units, it should receive; parts at 0
        receive none.
    seed : int
        Seeds the orders tried; the same units, ratios and seed give the same placement.
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
    quotas = _unit_quotas(free, {part: ratios[part] for part in receiving})
    rng = random.Random(seed)
    best: tuple[tuple[int, float], dict[str, str]] | None = None
    for _ in range(SUBJECT_TRIALS if subject_level else 1):
        order = list(free)
        rng.shuffle(order)
        result = _greedy(order, targets, totals, quotas)
        if result is not None and (best is None or result[0] < best[0]):
            best = result
    if best is None:
        raise DataError("no split found that puts every class in every part; add subjects or set a part's ratio to 0")
    return placement | (_refine(free, best[1], targets, totals, quotas) if subject_level else best[1])


def _unit_quotas(units: Sequence[Unit], ratios: Mapping[str, float]) -> dict[str, dict[str, tuple[int, int]]]:
    """The fewest and most units of each class every part should receive: floor and ceiling of ratio times units.

    Every part gets at least one unit of each class; where those minimums would ask for more units than a class has,
    parts asked for more than one give up the difference (so 3 units at 0.9/0.05/0.05 get at least 1, 1, 1).

    Parameters
    ----------
    units : sequence of Unit
        The free units.
    ratios : mapping of str to float
        Receiving part -> share (> 0, summing to 1).

    Returns
    -------
    dict of str to dict of str to (int, int)
        Part -> class -> (fewest, most) units holding that class.
    """
    per_class = Counter(label for unit in units for label in unit.counts)
    quotas: dict[str, dict[str, tuple[int, int]]] = {part: {} for part in ratios}
    for label, n in per_class.items():
        shares = {part: ratio * n for part, ratio in ratios.items()}
        low = {part: max(1, math.floor(share + _EPS)) for part, share in shares.items()}
        while sum(low.values()) > n and any(count > 1 for count in low.values()):
            part = max((p for p in low if low[p] > 1), key=lambda p: low[p] - shares[p])
            low[part] -= 1
        for part, share in shares.items():
            quotas[part][label] = (low[part], max(low[part], math.ceil(share - _EPS)))
    return quotas


def _check_enough_units(
    free: Sequence[Unit], totals: Counter[str], receiving: Sequence[str], subject_level: bool
) -> None:
    """Fail early, with the ways out, when a class cannot reach every receiving part whatever the order: a part's
    ratio of 0 for train/val/test, fewer folds for cross-validation (its parts are folds, which take no ratios)."""
    unit_name = "subject groups" if subject_level else "cells"
    units = {label: sum(1 for unit in free if unit.counts[label]) for label in sorted(totals)}
    short = [label for label, count in units.items() if count < len(receiving)]
    if not short:
        return
    ways, fewest = ["add subjects"], min(units.values())
    if set(receiving) <= set(PARTS):
        ways.append("set a part's ratio to 0 (e.g. --ratios 0.8,0.2,0 (data split) / --split-ratios 0.8,0.2,0 (train))")
    elif fewest >= 3:  # cross-validation tests on one fold and validates on another
        ways.append(f"use at most {fewest} folds (--cv {fewest} (data split, compare) / --folds {fewest} (train))")
    if subject_level:
        ways.append("split by image (--split-by image)")
    raise DataError(
        f"class '{short[0]}' has only {units[short[0]]} {unit_name}, too few for {len(receiving)} parts "
        f"({', '.join(receiving)}): {', '.join(ways[:-1])}{', or ' if len(ways) > 1 else ''}{ways[-1]}"
    )


def _greedy(
    order: Sequence[Unit], targets: Mapping[str, Mapping[str, float]], totals: Counter[str], quotas: Quotas
) -> tuple[tuple[int, float], dict[str, str]] | None:
    """One pass in ``order``: its (quota misses, cell cost) and placement, or None when a part lacks some class.

    Each unit may go only to parts below their most units of its classes, and must go to a part below its fewest
    once the units left of a class are just enough to fill those; among the parts allowed, to the one where it most
    reduces the cell cost.
    """
    parts = list(targets)
    counts = {part: dict.fromkeys(totals, 0) for part in parts}
    held = {part: dict.fromkeys(totals, 0) for part in parts}
    remaining = Counter(label for unit in order for label in unit.counts)
    shortfall = {label: sum(quotas[part][label][0] for part in parts) for label in totals}
    placement = {}
    for unit in order:
        candidates = parts
        for label in unit.counts:
            bound = 0 if remaining[label] <= shortfall[label] else 1  # the fewest still missing, or the most
            candidates = [p for p in candidates if held[p][label] < quotas[p][label][bound]] or candidates
        part = min(candidates, key=lambda p: _cost_change(counts[p], targets[p], unit.counts, totals))
        for label, count in unit.counts.items():
            counts[part][label] += count
            shortfall[label] -= held[part][label] < quotas[part][label][0]
            held[part][label] += 1
            remaining[label] -= 1
        placement[unit.key] = part
    if not all(held[part][label] for part in parts for label in totals):
        return None
    misses = sum(
        max(0, low - held[part][label], held[part][label] - high)
        for part in parts
        for label, (low, high) in quotas[part].items()
    )
    cost = sum(
        ((counts[part][label] - targets[part][label]) / totals[label]) ** 2 for part in parts for label in totals
    )
    return (misses, cost), placement


def _refine(
    units: Sequence[Unit],
    placement: Mapping[str, str],
    targets: Mapping[str, Mapping[str, float]],
    totals: Counter[str],
    quotas: Quotas,
) -> dict[str, str]:
    """Local search from a greedy placement: move one unit, or swap two, between parts while that lowers (quota
    misses, cell cost) and leaves every class in every part; stops when no single move or swap does.

    A greedy pass settles each unit before it sees the later ones; swaps let a large unit trade places with a small
    one of the same class, which keeps the unit quotas and evens out the cells. Each unit's moves and swaps are
    scored at once, so a pass costs O(units^2) in numpy.
    """
    labels, parts = sorted(totals), list(targets)
    cells = np.array([[unit.counts[label] for label in labels] for unit in units], dtype=float)  # (units, classes)
    holds = (cells > 0).astype(int)
    where = np.array([parts.index(placement[unit.key]) for unit in units])
    low, high = (np.array([[quotas[p][label][side] for label in labels] for p in parts]) for side in (0, 1))
    scale = 1 / np.array([totals[label] for label in labels], dtype=float) ** 2
    excess = -np.array([[targets[p][label] for label in labels] for p in parts])  # (parts, classes): cells - target
    held = np.zeros((len(parts), len(labels)), dtype=int)
    np.add.at(excess, where, cells)
    np.add.at(held, where, holds)
    to_part = np.arange(len(parts))

    def misses(part: np.ndarray, count: np.ndarray) -> np.ndarray:
        return np.maximum(0, np.maximum(low[part] - count, count - high[part])).sum(axis=-1)

    improved = True
    while improved:
        improved = False
        for u in range(len(units)):
            a = where[u]
            # Candidates: move u to each part, or swap it with each unit; part a gains `gain` cells, `dest` loses them.
            dest = np.concatenate([to_part, where])
            gain = np.concatenate([np.broadcast_to(-cells[u], (len(parts), len(labels))), cells - cells[u]])
            held_gain = np.concatenate([np.broadcast_to(-holds[u], (len(parts), len(labels))), holds - holds[u]])
            cost = (2 * gain * (excess[a] - excess[dest] + gain) * scale).sum(axis=1)
            held_a, held_dest = held[a] + held_gain, held[dest] - held_gain
            missed = misses(a, held_a) - misses(a, held[a]) + misses(dest, held_dest) - misses(dest, held[dest])
            allowed = (dest != a) & (held_a > 0).all(axis=1) & (held_dest > 0).all(axis=1)
            better = np.flatnonzero(allowed & ((missed < 0) | ((missed == 0) & (cost < -1e-12))))
            if not len(better):
                continue
            pick = better[np.lexsort((cost[better], missed[better]))[0]]
            b = dest[pick]
            excess[a] += gain[pick]
            excess[b] -= gain[pick]
            held[a] += held_gain[pick]
            held[b] -= held_gain[pick]
            where[u] = b
            if pick >= len(parts):
                where[pick - len(parts)] = a
            improved = True
    return {unit.key: parts[index] for unit, index in zip(units, where, strict=True)}


def _cost_change(
    counts: Counter[str], targets: Mapping[str, float], adding: Counter[str], totals: Counter[str]
) -> float:
    """Change of the summed squared, class-normalised deviation from the targets if ``adding`` joined this part."""
    return sum(
        count * (2 * (counts[label] - targets[label]) + count) / totals[label] ** 2 for label, count in adding.items()
    )
