"""Operating points come from a number or from the validation split, never from the test cells."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn import metrics as skm

from blastscope.errors import BlastscopeError
from blastscope.evaluation.threshold import MAX_CANDIDATES, choose_point, choose_threshold, midway, parse_threshold
from blastscope.inference.decision import OperatingPoint, decide, fit_temperature
from blastscope.inference.predict import probabilities
from blastscope.metrics import weighted_f1

CLASSES = ("hem", "all")
BASE = OperatingPoint.default(CLASSES)


def _probs(p_all: list[float]) -> np.ndarray:
    p = np.asarray(p_all)
    return np.stack([1 - p, p], axis=1)


def _logits(p_all: list[float] | np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p_all, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


def test_default_and_given_thresholds() -> None:
    assert parse_threshold(None) is None and parse_threshold(" VAL ") == "val"
    default = choose_threshold(BASE, None)
    assert default.source == "default" and default.threshold == 0.5
    point = choose_threshold(BASE, parse_threshold("0.3"))
    assert point.threshold == pytest.approx(0.3) and point.source == "given"
    explicit = choose_threshold(BASE, "0.50")  # a number the user typed is theirs, even the default's value
    assert explicit.threshold == 0.5 and explicit.source == "given"


@pytest.mark.parametrize("text", ["abc", "1.5", "-0.1"])
def test_bad_threshold_text_is_a_user_error(text: str) -> None:
    with pytest.raises(BlastscopeError, match="--threshold"):
        parse_threshold(text)


def test_val_threshold_maximises_weighted_f1_on_validation() -> None:
    # validation positives all sit above 0.7 and negatives below 0.65: only a threshold in (0.6, 0.7] is perfect
    y_val = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    prob_val = _probs([0.1, 0.3, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95])
    point = choose_threshold(BASE, "val", val=(y_val, prob_val))
    assert point.source == "val:weighted_f1" and point.score == pytest.approx(1.0)
    assert (point.split, point.n_cells) == ("val", 8)
    assert 0.65 < point.threshold <= 0.7
    y_pred = (prob_val[:, 1] >= point.threshold).astype(int)
    np.testing.assert_array_equal(decide(prob_val, point), y_pred)
    assert skm.f1_score(y_val, y_pred, average="weighted") == pytest.approx(1.0)


def test_target_sensitivity_picks_the_highest_threshold_reaching_it() -> None:
    y_val = np.array([0, 0, 0, 1, 1, 1, 1])
    prob_val = _probs([0.2, 0.4, 0.5, 0.3, 0.6, 0.7, 0.9])
    point = choose_threshold(BASE, None, val=(y_val, prob_val), target_sensitivity=0.75)
    # the highest cut reaching 75% calls p >= 0.6 positive; the threshold sits midway to the next cell down, 0.5
    assert point.threshold == pytest.approx(0.55) and point.score == pytest.approx(0.75)
    assert point.source == "val:sensitivity>=0.75"
    assert choose_threshold(BASE, "val", val=(y_val, prob_val), target_sensitivity=0.75) == point
    full = choose_threshold(BASE, "VAL", val=(y_val, prob_val), target_sensitivity=1.0)
    assert full.threshold == pytest.approx(0.25) and full.score == 1.0  # p >= 0.3 positive, midway to 0.2
    assert (decide(prob_val, full)[y_val == 1] == 1).all()


def test_a_given_threshold_and_a_target_sensitivity_conflict() -> None:
    y_val, prob_val = np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]])
    for given in (0.3, 0.5, "0.5"):
        with pytest.raises(BlastscopeError, match="conflict"):
            choose_threshold(BASE, given, val=(y_val, prob_val), target_sensitivity=0.9)


def test_val_threshold_without_validation_cells_is_a_user_error() -> None:
    with pytest.raises(BlastscopeError, match="validation"):
        choose_threshold(BASE, "val", val=None)
    with pytest.raises(BlastscopeError, match="validation"):
        choose_point(BASE, "val", val=None)
    with pytest.raises(BlastscopeError, match="one class"):
        choose_threshold(BASE, "val", val=(np.array([1, 1]), _probs([0.4, 0.9])))


def test_choose_point_fits_the_temperature_then_the_threshold_on_scaled_validation() -> None:
    rng = np.random.default_rng(0)
    y_val = np.repeat([0, 1], 60)
    margin = rng.normal(1.0, 1.2, 120) * np.where(y_val == 1, 1, -1)
    logits_val = 5.0 * np.stack([-margin / 2, margin / 2], 1)  # over-confident, and the classes overlap
    point = choose_point(BASE, "val", (y_val, logits_val[:, None, :]), chosen_by="evaluate")
    assert point.temperature == pytest.approx(fit_temperature(y_val, logits_val)) and point.temperature > 1.5
    assert (point.source, point.split, point.n_cells, point.chosen_by) == ("val:weighted_f1", "val", 120, "evaluate")
    scaled = probabilities(logits_val, point.temperature)
    expected = choose_threshold(point, "val", (y_val, scaled))
    assert point == expected
    assert point.score == pytest.approx(skm.f1_score(y_val, decide(scaled, point), average="weighted"))


def test_choose_point_with_a_given_threshold_still_fits_the_temperature() -> None:
    y_val = np.array([0, 0, 1, 1, 0, 1])
    logits_val = _logits([0.1, 0.7, 0.8, 0.4, 0.2, 0.9])
    point = choose_point(BASE, 0.3, (y_val, logits_val), chosen_by="compare")
    assert (point.threshold, point.source, point.score, point.chosen_by) == (0.3, "given", None, "compare")
    assert point.temperature == pytest.approx(fit_temperature(y_val, logits_val))
    assert (point.split, point.n_cells) == ("val", 6)
    unscaled = choose_point(BASE, 0.3, None)
    assert (unscaled.temperature, unscaled.split, unscaled.n_cells, unscaled.source) == (1.0, None, None, "given")


def test_multiclass_points_have_no_threshold() -> None:
    base = OperatingPoint.default(("a", "b", "c"))
    y_val = np.repeat([0, 1, 2], 4)
    logits_val = np.random.default_rng(1).normal(size=(12, 3)) + 2 * np.eye(3)[y_val]
    point = choose_point(base, "val", (y_val, logits_val))
    assert point.positive_class is None and point.source == "default" and point.threshold == 0.5
    assert point.temperature == pytest.approx(fit_temperature(y_val, logits_val)) and point.split == "val"


def _gapped_cohort(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes whose p(all) lie on a 1e-4 grid: every gap between distinct cells is far above 2e-6."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-((2 * y - 1) * 1.0 + rng.normal(0, 1.2, n))))
    return y, _probs(np.clip(np.round(p, 4), 1e-4, 1 - 1e-4).tolist())


def _assert_off_every_cell(y_val: np.ndarray, prob_val: np.ndarray, point: OperatingPoint) -> None:
    """Midway between the two cells around the cut, with the decisions and score of the cut, and robust to 1e-6."""
    p, t = prob_val[:, 1], point.threshold
    assert t not in set(p.tolist())
    low, high = p[p < t].max(initial=0.0), p[p >= t].min(initial=1.0)
    assert t == pytest.approx((low + high) / 2, abs=1e-15)
    on_cell = replace(point, threshold=float(high))  # where the choice used to sit: the lowest cell called positive
    np.testing.assert_array_equal(decide(prob_val, point), decide(prob_val, on_cell))
    rng = np.random.default_rng(7)
    for shift in (1e-6, -1e-6, rng.choice([-1e-6, 1e-6], len(p))):
        moved = _probs((p + shift).tolist())
        np.testing.assert_array_equal(decide(moved, point), decide(prob_val, point))


def test_the_val_threshold_sits_midway_between_validation_cells() -> None:
    y_val, prob_val = _gapped_cohort(300)
    point = choose_threshold(BASE, "val", val=(y_val, prob_val))
    _assert_off_every_cell(y_val, prob_val, point)
    p = prob_val[:, 1]
    best = max(weighted_f1(y_val, prob_val, (p >= cut).astype(np.int64), 1) for cut in np.unique(p))
    assert point.score == best == weighted_f1(y_val, prob_val, decide(prob_val, point), 1)


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_the_sensitivity_threshold_sits_midway_between_validation_cells(target: float) -> None:
    y_val, prob_val = _gapped_cohort(300, seed=1)
    point = choose_threshold(BASE, None, val=(y_val, prob_val), target_sensitivity=target)
    _assert_off_every_cell(y_val, prob_val, point)
    p, positives = prob_val[:, 1], np.sort(prob_val[y_val == 1, 1])
    found = (p[y_val == 1] >= point.threshold).mean()
    assert point.score == pytest.approx(found) and found >= target
    higher = p[p > point.threshold].min()  # the next cut up misses the target: this one is the highest reaching it
    assert (positives >= np.nextafter(higher, 1.0)).mean() < target


def test_the_threshold_chosen_among_quantile_candidates_sits_off_every_cell() -> None:
    y_val, prob_val = _gapped_cohort(3000, seed=2)
    assert len(np.unique(prob_val[:, 1])) > MAX_CANDIDATES  # candidates are quantiles, not the cells themselves
    _assert_off_every_cell(y_val, prob_val, choose_threshold(BASE, "val", val=(y_val, prob_val)))


def test_midway_keeps_the_decisions_at_the_ends_and_between_adjacent_floats() -> None:
    p = np.array([0.2, 0.4, 0.9])
    assert midway(p, 0.4) == pytest.approx(0.3) and midway(p, 0.35) == pytest.approx(0.3)
    assert midway(p, 0.1) == pytest.approx(0.1)  # every cell positive: midway down to 0
    assert midway(p, 0.95) == pytest.approx(0.95)  # no cell positive: midway up to 1
    assert midway(np.array([0.0, 0.5]), 0.0) == 0.0
    adjacent = np.array([0.3, np.nextafter(0.3, 1.0)])  # no float between them: the upper cell stays the threshold
    assert midway(adjacent, adjacent[1]) == adjacent[1]
    assert midway(np.array([0.3, np.nextafter(1.0, 0.0)]), 1.0) == 1.0


@pytest.mark.parametrize(
    ("spec", "target", "option"), [(0.3, None, "--threshold 0.3"), (None, 0.9, "--target-sensitivity 0.9")]
)
def test_a_threshold_for_multi_class_data_is_refused_but_val_fits_the_temperature(
    spec: float | None, target: float | None, option: str
) -> None:
    base = OperatingPoint.default(("a", "b", "c"))
    y = np.repeat([0, 1, 2], 10)
    logits = np.random.default_rng(0).normal(size=(30, 3)) + 3 * np.eye(3)[y]
    with pytest.raises(BlastscopeError, match=f"^{option} needs a two-class run; this model has 3 classes"):
        choose_point(base, spec, (y, logits), target)
    fitted = choose_point(base, "val", (y, logits))
    assert fitted.temperature != 1.0 and (fitted.split, fitted.n_cells, fitted.source) == ("val", 30, "default")
