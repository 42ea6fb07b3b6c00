"""Percentile bootstrap confidence intervals that resample subjects, the unit a result should generalise over.

Cells of one subject are correlated (same smear, same staining, same person), so resampling cells would give
intervals that are too narrow. Each resample draws, per class, as many subjects as that class has, with replacement,
so every resample holds both classes. Without subject ids cells are resampled instead and the result says so. A class
with a single unit would be the same in every resample, so its share of the uncertainty would vanish (with one subject
per class every interval has zero width): then there are no intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from blastscope.evaluation.subjects import subject_units
from blastscope.metrics import SCALAR_METRICS, MetricFn, decision_arrays

MIN_UNITS_PER_CLASS = 2  # fewer: that class is identical in every resample, and the interval too narrow to mean much


def bootstrap_ci(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    y_pred: np.ndarray,
    subjects: Sequence[str] | None,
    metrics: Mapping[str, MetricFn] = SCALAR_METRICS,
    positive: int | None = 1,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Point estimate and ``level`` percentile interval of each metric, deterministic for a given ``seed``.

    Each resample draws the same cells from ``y_true``, ``y_prob`` and ``y_pred`` together: the decisions were made
    once, at the operating point, and are not remade per resample. A metric that is undefined on a resample (returns
    ``None``) skips that resample; ``n_valid`` counts the rest. When a class has fewer than 2 units there is no
    interval (``low`` and ``high`` are ``None``, ``n_valid`` 0; ``units_per_class`` says why).

    Parameters
    ----------
    y_true, y_pred : arrays of int, shape (N,)
        True and decided class indices (``y_pred`` from ``inference.decision.decide``).
    y_prob : array of shape (N, C)
        The probabilities the decisions were made from.
    subjects : sequence of str, length N, or None
        Subject ids; ``None`` (or any missing id) resamples cells instead, and ``unit`` says so.
    metrics : mapping of name to ``fn(y_true, y_prob, y_pred, positive)``
    positive : int or None
        Index of the positive class; ``None`` for multi-class data.
    n_resamples : int
    seed : int
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    dict
        ``unit``, ``n_units``, ``units_per_class``, ``n_resamples``, ``level``, ``seed`` and per metric ``estimate``,
        ``low``, ``high`` and ``n_valid``.

    Raises
    ------
    ValueError
        For arrays of different lengths.
    """
    y_true, y_prob, y_pred = decision_arrays(y_true, y_prob, y_pred)
    unit = "subject" if subjects is not None and all(s is not None for s in subjects) else "cell"
    members, strata = _units(y_true, subjects if unit == "subject" else None)
    rng = np.random.default_rng(seed)
    units_per_class = [len(stratum) for stratum in strata]
    drawable = min(units_per_class) >= MIN_UNITS_PER_CLASS
    draws = [resample_indices(members, strata, rng) for _ in range(n_resamples)] if drawable else []
    alpha = (1.0 - level) / 2.0
    results = {}
    for name, fn in metrics.items():
        values = np.array(
            [v for idx in draws if (v := fn(y_true[idx], y_prob[idx], y_pred[idx], positive)) is not None]
        )
        estimate = fn(y_true, y_prob, y_pred, positive)
        low, high = np.quantile(values, [alpha, 1.0 - alpha]).tolist() if len(values) else (None, None)
        results[name] = {
            "estimate": None if estimate is None else float(estimate),
            "low": low,
            "high": high,
            "n_valid": int(len(values)),
        }
    return {
        "unit": unit,
        "n_units": len(members),
        "units_per_class": units_per_class,
        "n_resamples": n_resamples,
        "level": level,
        "seed": seed,
        "metrics": results,
    }


def resample_indices(members: list[np.ndarray], strata: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Cell indices of one stratified resample: each stratum's units drawn with replacement, their cells joined.

    Parameters
    ----------
    members : list of int arrays
        The cell indices of each unit.
    strata : list of int arrays
        The unit indices of each class.
    rng : numpy Generator

    Returns
    -------
    array of int
        Cell indices; a unit drawn twice contributes its cells twice.
    """
    chosen = np.concatenate([rng.choice(stratum, size=len(stratum), replace=True) for stratum in strata])
    return np.concatenate([members[unit] for unit in chosen])


def _units(y_true: np.ndarray, subjects: Sequence[str] | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cell indices per unit, and unit indices per class stratum."""
    if subjects is None:
        members = [np.array([i]) for i in range(len(y_true))]
        labels = y_true
    else:
        units, unit_of_cell = subject_units(y_true, subjects)
        members = [np.flatnonzero(unit_of_cell == i) for i in range(len(units))]
        labels = np.array([label for _, label in units])
    strata = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    return members, strata
