"""Subject-level scores average each person's cells before deciding."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.evaluation.subjects import subject_report
from blastscope.evaluation.summary import _subjects_text
from blastscope.inference.decision import OperatingPoint, decide

CLASSES = ("hem", "all")
POINT = OperatingPoint.default(CLASSES)


def test_per_subject_accuracy_and_subject_level_prediction() -> None:
    subjects = ["H1", "H1", "H1", "H2", "H2", "7", "7", "8", "8"]
    y_true = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    p_all = np.array([0.2, 0.3, 0.9, 0.8, 0.7, 0.9, 0.4, 0.45, 0.3])
    y_prob = np.stack([1 - p_all, p_all], 1)
    report = subject_report(y_true, y_prob, decide(y_prob, POINT), subjects, POINT)

    rows = {row["subject"]: row for row in report["per_subject"]}
    assert report["n_subjects"] == 4
    assert rows["H1"]["accuracy"] == pytest.approx(2 / 3) and rows["H1"]["n_cells"] == 3
    assert rows["H1"]["mean_probability"]["all"] == pytest.approx(np.mean([0.2, 0.3, 0.9]))
    assert rows["H1"]["predicted_class"] == "hem" and rows["H2"]["predicted_class"] == "all"
    level = report["subject_level"]
    # subject means of p(all): H1 0.467, H2 0.75, 7 0.65, 8 0.375 -> predictions hem, all, all, hem
    assert level["n"] == 4
    assert level["confusion_matrix"] == [[1, 1], [1, 1]]
    assert level["threshold"] == 0.5 and level["positive_class"] == "all"


def test_subjects_are_decided_at_the_operating_point() -> None:
    """The subject's mean probability goes through the same rule as a cell: a lower threshold flips subject 8."""
    subjects = ["H1", "H1", "7", "7", "8", "8"]
    y_true = np.array([0, 0, 1, 1, 1, 1])
    p_all = np.array([0.1, 0.2, 0.9, 0.7, 0.45, 0.3])
    y_prob = np.stack([1 - p_all, p_all], 1)
    point = POINT.with_threshold(0.35, "test")
    report = subject_report(y_true, y_prob, decide(y_prob, point), subjects, point)
    rows = {row["subject"]: row for row in report["per_subject"]}
    assert rows["8"]["predicted_class"] == "all" and rows["8"]["accuracy"] == pytest.approx(0.5)  # mean 0.375
    assert rows["H1"]["predicted_class"] == "hem"
    assert report["subject_level"]["confusion_matrix"] == [[1, 0], [0, 2]]
    assert report["subject_level"]["threshold"] == 0.35
    with pytest.raises(ValueError, match="differ"):
        subject_report(y_true, y_prob, decide(y_prob, point)[:-1], subjects, point)


def test_a_subject_with_cells_of_two_classes_is_named_and_counted_once_per_label() -> None:
    subjects = ["P1", "P1", "P2", "P3", "P3"]
    y_true = np.array([0, 1, 0, 1, 1])
    p_all = np.array([0.2, 0.8, 0.3, 0.9, 0.7])
    y_prob = np.stack([1 - p_all, p_all], 1)
    report = subject_report(y_true, y_prob, decide(y_prob, POINT), subjects, POINT)

    assert report["n_subjects"] == 4 and report["mixed_subjects"] == ["P1"]
    assert sorted((row["subject"], row["true_class"]) for row in report["per_subject"])[:2] == [
        ("P1", "all"),
        ("P1", "hem"),
    ]
    assert _subjects_text(report) == (
        " from 4 subject units (P1 has cells of more than one class, each label scored as its own subject)"
    )
    report["mixed_subjects"] = []
    assert _subjects_text(report) == " from 4 subjects"
