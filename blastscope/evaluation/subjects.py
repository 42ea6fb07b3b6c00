"""Per-subject accuracy and subject-level scores: a diagnosis is made per person, not per cell.

A subject's score is the mean of its cells' class probabilities, decided at the same operating point as a single cell
(:func:`~blastscope.inference.decision.decide`). The unit is the pair (subject, true class), so a subject whose cells
carry two labels (which C-NMC does not have) counts once per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from blastscope.inference.decision import OperatingPoint, decide
from blastscope.metrics import classification_metrics, decision_arrays


def subject_units(y_true: np.ndarray, subjects: Sequence[str]) -> tuple[list[tuple[str, int]], np.ndarray]:
    """The distinct (subject, class) units and, per cell, the index of its unit.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    subjects : sequence of str, length N

    Returns
    -------
    units : list of (subject, class index)
        In first-seen order.
    unit_of_cell : array of int64, shape (N,)
    """
    keys = list(zip((str(s) for s in subjects), (int(y) for y in y_true), strict=True))
    units = list(dict.fromkeys(keys))
    position = {unit: i for i, unit in enumerate(units)}
    return units, np.array([position[key] for key in keys], dtype=np.int64)


def subject_report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    y_pred: np.ndarray,
    subjects: Sequence[str],
    point: OperatingPoint,
) -> dict[str, Any]:
    """Per-subject cell accuracy, plus metrics of the subject-level decisions (mean probability per subject).

    Parameters
    ----------
    y_true, y_pred : arrays of int, shape (N,)
        True and decided class indices of the cells (``y_pred`` from ``decide(y_prob, point)``).
    y_prob : array of shape (N, C)
        The probabilities the cells were decided on.
    subjects : sequence of str, length N
    point : OperatingPoint
        Decides each subject's mean probability, as it decided the cells.

    Returns
    -------
    dict
        ``n_subjects`` (units), ``mixed_subjects`` (the subjects whose cells carry more than one label, each counted
        once per label; sorted), ``per_subject`` rows (sorted by true class, then accuracy) and ``subject_level`` (the
        ``classification_metrics`` of one decision per unit).

    Raises
    ------
    ValueError
        For arrays of different lengths.
    """
    y_true, y_prob, y_pred = decision_arrays(y_true, y_prob, y_pred)
    classes = point.classes
    units, unit_of_cell = subject_units(y_true, subjects)
    cell_correct = y_pred == y_true
    unit_prob = np.stack([y_prob[unit_of_cell == i].mean(axis=0) for i in range(len(units))])
    unit_true = np.array([label for _, label in units], dtype=np.int64)
    unit_pred = decide(unit_prob, point)
    per_subject = [
        {
            "subject": subject,
            "true_class": classes[label],
            "n_cells": int((unit_of_cell == i).sum()),
            "accuracy": float(cell_correct[unit_of_cell == i].mean()),
            "mean_probability": {name: float(p) for name, p in zip(classes, unit_prob[i], strict=True)},
            "predicted_class": classes[unit_pred[i]],
        }
        for i, (subject, label) in enumerate(units)
    ]
    labels_of: dict[str, int] = {}
    for subject, _ in units:
        labels_of[subject] = labels_of.get(subject, 0) + 1
    return {
        "n_subjects": len(units),
        "mixed_subjects": sorted(subject for subject, count in labels_of.items() if count > 1),
        "per_subject": sorted(per_subject, key=lambda row: (row["true_class"], row["accuracy"], row["subject"])),
        "subject_level": classification_metrics(
            unit_true, unit_prob, unit_pred, classes, point.positive_class, point.threshold
        ),
    }
