"""Bootstrap intervals resample subjects within each class and are reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.evaluation.bootstrap import _units, bootstrap_ci, resample_indices
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.metrics import accuracy, roc_auc

POINT = OperatingPoint.default(("hem", "all"))


def _decided(y_prob: np.ndarray) -> np.ndarray:
    return decide(y_prob, POINT)


def _dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    subjects, labels = [], []
    for s in range(10):
        label = s % 2
        subjects += [f"S{s}"] * 6
        labels += [label] * 6
    y_true = np.array(labels)
    p_all = np.clip(0.3 * y_true + rng.uniform(0, 0.7, len(y_true)), 0, 1)
    return y_true, np.stack([1 - p_all, p_all], 1), subjects


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    y_true, y_prob, subjects = _dataset()
    y_pred = _decided(y_prob)
    first = bootstrap_ci(y_true, y_prob, y_pred, subjects, n_resamples=100, seed=1)
    again = bootstrap_ci(y_true, y_prob, y_pred, subjects, n_resamples=100, seed=1)
    other = bootstrap_ci(y_true, y_prob, y_pred, subjects, n_resamples=100, seed=2)
    assert first == again
    assert first["metrics"]["weighted_f1"] != other["metrics"]["weighted_f1"]
    assert first["unit"] == "subject" and first["n_units"] == 10 and first["units_per_class"] == [5, 5]
    for name, ci in first["metrics"].items():
        assert ci["low"] <= ci["estimate"] <= ci["high"], name
        assert ci["n_valid"] == 100  # both classes in every resample: AUC, sensitivity, specificity always defined


def test_every_resample_keeps_whole_subjects_and_both_classes() -> None:
    y_true, _, subjects = _dataset()
    members, strata = _units(y_true, subjects)
    rng = np.random.default_rng(0)
    subject_of = np.array(subjects)
    for _ in range(50):
        idx = resample_indices(members, strata, rng)
        assert set(y_true[idx]) == {0, 1}
        assert len(idx) == len(y_true)  # equal-sized subjects: same cell count
        drawn, counts = np.unique(subject_of[idx], return_counts=True)
        assert all(count % 6 == 0 for count in counts)  # a subject comes with all six of its cells, or not at all
        assert (np.bincount(y_true[idx]) == 30).all()  # five subjects of each class each time


def test_without_subjects_cells_are_resampled_and_flagged() -> None:
    y_true, y_prob, _ = _dataset()
    y_pred = _decided(y_prob)
    metrics = {"accuracy": accuracy, "roc_auc": roc_auc}
    result = bootstrap_ci(y_true, y_prob, y_pred, None, metrics=metrics, n_resamples=100)
    assert result["unit"] == "cell" and result["n_units"] == len(y_true)
    assert result["metrics"]["roc_auc"]["estimate"] == pytest.approx(roc_auc(y_true, y_prob, y_pred, 1))
    assert result["metrics"]["accuracy"]["estimate"] == pytest.approx(np.mean(y_pred == y_true))


def test_decisions_are_resampled_with_their_cells_not_remade() -> None:
    """The decisions given are the ones scored: deciding every cell wrongly gives accuracy 0 in every resample."""
    y_true, y_prob, subjects = _dataset()
    wrong = 1 - y_true
    result = bootstrap_ci(y_true, y_prob, wrong, subjects, metrics={"accuracy": accuracy}, n_resamples=50)
    assert result["metrics"]["accuracy"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "n_valid": 50}
    with pytest.raises(ValueError, match="differ"):
        bootstrap_ci(y_true, y_prob, wrong[:-1], subjects, n_resamples=5)


def test_subject_intervals_are_wider_than_cell_intervals_when_subjects_differ() -> None:
    # each subject is either easy or hard as a whole: cells are correlated, which cell resampling ignores
    rng = np.random.default_rng(5)
    subjects = [f"S{s}" for s in range(12) for _ in range(20)]
    y_true = np.array([s % 2 for s in range(12) for _ in range(20)])
    shift = np.repeat(rng.choice([-0.3, 0.3], 12), 20)
    p_all = np.clip(0.5 + (2 * y_true - 1) * shift + rng.normal(0, 0.05, len(y_true)), 0, 1)
    y_prob = np.stack([1 - p_all, p_all], 1)
    y_pred = _decided(y_prob)
    by_subject = bootstrap_ci(y_true, y_prob, y_pred, subjects, metrics={"accuracy": accuracy}, n_resamples=300)
    by_cell = bootstrap_ci(y_true, y_prob, y_pred, None, metrics={"accuracy": accuracy}, n_resamples=300)
    width = lambda r: r["metrics"]["accuracy"]["high"] - r["metrics"]["accuracy"]["low"]  # noqa: E731
    assert width(by_subject) > 2 * width(by_cell)


@pytest.mark.parametrize("kept_subjects", [{"S0", "S2", "S4", "S1"}, {"S0", "S1"}])  # 1 subject of ALL; 1 of each
def test_a_class_of_one_subject_gives_no_interval_rather_than_a_zero_width_one(kept_subjects: set[str]) -> None:
    y_true, y_prob, subjects = _dataset()
    keep = np.array([subject in kept_subjects for subject in subjects])
    kept = [subject for subject, k in zip(subjects, keep, strict=True) if k]
    result = bootstrap_ci(y_true[keep], y_prob[keep], _decided(y_prob[keep]), kept, n_resamples=50)
    assert min(result["units_per_class"]) == 1
    for name, ci in result["metrics"].items():
        assert ci["low"] is None and ci["high"] is None and ci["n_valid"] == 0, name
    assert result["metrics"]["accuracy"]["estimate"] is not None  # the value stands; only its interval is undefined
