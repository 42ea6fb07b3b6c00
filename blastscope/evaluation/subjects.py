"""Per-subject accuracy and subject-level scores: a diagnosis is made per person, not per cell.

A subject's score is the mean of its cells' class probabilities, thresholded like a single cell. The unit is the pair
(subject, true class), so a subject whose cells carry two labels (which C-NMC does not have) counts once per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from blastscope.metrics import classification_metrics, predict_labels


def subject_units(y_true: np.ndarray, subjects: Sequence[str]) -> tuple[list[tuple[str, int]], np.ndarray]:
    """The distinct (subject, class) units in first-seen order and, per cell, the index of its unit."""
    keys = list(zip((str(s) for s in subjects), (int(y) for y in y_true), strict=True))
    units = list(dict.fromkeys(keys))
    position = {unit: i for i, unit in enumerate(units)}
    return units, np.array([position[key] for key in keys], dtype=np.int64)


def subject_report(
    y_true: np.ndarray, y_prob: np.ndarray, subjects: Sequence[str], classes: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Per-subject cell accuracy plus metrics of the subject-level predictions (mean probability per subject)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    units, unit_of_cell = subject_units(y_true, subjects)
    cell_correct = predict_labels(y_prob, threshold) == y_true
    unit_prob = np.stack([y_prob[unit_of_cell == i].mean(axis=0) for i in range(len(units))])
    unit_true = np.array([label for _, label in units], dtype=np.int64)
    unit_pred = predict_labels(unit_prob, threshold)
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
    return {
        "n_subjects": len(units),
        "per_subject": sorted(per_subject, key=lambda row: (row["true_class"], row["accuracy"], row["subject"])),
        "subject_level": classification_metrics(unit_true, unit_prob, classes, threshold),
    }
