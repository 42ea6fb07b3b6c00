"""The refer band: chosen on validation for a target error rate among called cells, stored with the operating point."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from blastscope.errors import BlastscopeError
from blastscope.evaluation.referral import (
    MIN_CURVE_CELLS,
    ReferralChoice,
    cells_needed,
    choose_refer_band,
    referral_report,
    risk_coverage,
)
from blastscope.evaluation.scoring import evaluate_predictions
from blastscope.evaluation.threshold import choose_point, choose_threshold
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.inference.predict import probabilities
from blastscope.runs.folder import read_operating_point, write_operating_point

CLASSES = ("hem", "all")
BASE = OperatingPoint.default(CLASSES)


def _cohort(n: int, seed: int = 0, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and probabilities whose logit is ±1.5 plus Gaussian noise: unsure cells err most."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-((2 * y - 1) * 1.5 + rng.normal(0, spread, n))))
    return y, np.stack([1 - p, p], axis=1)


def _called_error(y: np.ndarray, prob: np.ndarray, point: OperatingPoint) -> tuple[int, float]:
    called = ~uncertain(prob, point)
    return int(called.sum()), float((decide(prob, point) != y)[called].mean())


def test_the_band_meets_the_target_on_validation_and_holds_the_threshold() -> None:
    y, prob = _cohort(600)
    point = replace(BASE, threshold=0.45)
    choice = choose_refer_band(y, prob, point, 0.05)
    assert choice.band is not None and choice.reason is None
    low, high = choice.band
    assert low < point.threshold < high
    banded = replace(point, refer_band=choice.band)  # OperatingPoint itself refuses a band without the threshold
    called, error = _called_error(y, prob, banded)
    assert error <= 0.05 and error == pytest.approx(choice.error_called)
    assert called == 600 - choice.n_referred and called >= cells_needed(0.05)
    assert (decide(prob, banded) == decide(prob, point)).all()  # referral flags cells; it never relabels them
    line = choice.describe()
    assert line.startswith(f"refer when {low:.4f} < p(ALL) < {high:.4f}: ") and "errors among the rest" in line


def test_no_band_calls_more_validation_cells_within_the_target() -> None:
    """Every pair of edges at validation probabilities, by brute force: none calls more cells within the target."""
    y, prob = _cohort(70, seed=3)
    point, target = replace(BASE, threshold=0.5), 0.2
    choice = choose_refer_band(y, prob, point, target)
    assert choice.band is not None
    p, wrong = prob[:, 1], decide(prob, point) != y
    edges = np.unique(np.concatenate([p, [0.0, 1.0, point.threshold]]))
    best = 0
    for low, high in itertools.product(edges[edges <= 0.5], edges[edges >= 0.5]):
        called = (p <= low) | (p >= high)
        if called.sum() >= cells_needed(target) and wrong[called].mean() <= target:
            best = max(best, int(called.sum()))
    assert 70 - choice.n_referred == best


def test_a_side_that_does_not_err_is_not_referred() -> None:
    # every cell above the threshold is right; below it, the 10 cells nearest the threshold are wrong
    unsure = np.linspace(0.35, 0.45, 10)
    p = np.r_[np.linspace(0.6, 0.99, 60), np.linspace(0.01, 0.3, 60), unsure]
    y = np.r_[np.ones(60), np.zeros(60), np.ones(10)].astype(int)
    choice = choose_refer_band(y, np.stack([1 - p, p], axis=1), BASE, 0.05)
    # 6 wrong cells among 126 called is 4.8%, a seventh would make 5.5%: the 4 nearest the threshold are referred
    # (the band starts midway between the last called cell and the first referred one), and the band ends at the
    # threshold, as nothing above it errs
    assert choice.band == ((unsure[5] + unsure[6]) / 2, 0.5)
    assert choice.n_referred == 4 and choice.error_called == pytest.approx(6 / 126)


def test_the_band_edges_sit_midway_between_called_and_referred_cells() -> None:
    y, prob = _cohort(600)
    prob = np.stack([1 - np.round(prob[:, 1], 4), np.round(prob[:, 1], 4)], axis=1)  # gaps far above 2e-6
    point = choose_threshold(BASE, "val", (y, prob))
    choice = choose_refer_band(y, prob, point, 0.05)
    assert choice.band is not None and choice.n_referred > 0
    p, (low, high) = prob[:, 1], choice.band
    assert low < point.threshold < high and not {low, high} & set(p.tolist())
    assert low == pytest.approx((p[p <= low].max() + p[p > low].min()) / 2, abs=1e-15)
    assert high == pytest.approx((p[p < high].max() + p[p >= high].min()) / 2, abs=1e-15)
    banded = replace(point, refer_band=choice.band)
    referred = uncertain(prob, banded)
    assert referred.sum() == choice.n_referred
    assert _called_error(y, prob, banded)[1] == pytest.approx(choice.error_called)
    for shift in (1e-6, -1e-6, np.random.default_rng(3).choice([-1e-6, 1e-6], len(p))):
        moved = np.stack([1 - (p + shift), p + shift], axis=1)
        np.testing.assert_array_equal(uncertain(moved, banded), referred)
        np.testing.assert_array_equal(decide(moved, banded), decide(prob, banded))


def test_referred_cells_sitting_on_a_given_threshold_stay_inside_the_band() -> None:
    # every cell below the threshold is right; at and above it, the 10 cells nearest it (the first at 0.5) are wrong
    unsure = np.linspace(0.5, 0.55, 10)
    p = np.r_[np.linspace(0.6, 0.99, 60), np.linspace(0.01, 0.3, 60), unsure]
    y = np.r_[np.ones(60), np.zeros(70)].astype(int)
    prob = np.stack([1 - p, p], axis=1)
    choice = choose_refer_band(y, prob, BASE, 0.05)
    # the 4 lowest wrong cells are referred: the band starts midway between 0.3 (called) and the cell on 0.5
    assert choice.band == (0.4, (unsure[3] + unsure[4]) / 2) and choice.n_referred == 4
    assert uncertain(prob, replace(BASE, refer_band=choice.band))[-10:].tolist() == [True] * 4 + [False] * 6


def test_a_threshold_that_already_meets_the_target_refers_nothing() -> None:
    y, prob = _cohort(200, spread=0.3)  # well separated: no cell is wrong
    choice = choose_refer_band(y, prob, BASE, 0.1)
    assert choice.band == (0.5, 0.5) and choice.n_referred == 0
    assert not uncertain(prob, replace(BASE, refer_band=choice.band)).any()
    assert choice.describe().startswith("refer no cell: 0.0% errors among all 200 validation cells")


def test_no_band_when_validation_is_too_small_for_the_target() -> None:
    y, prob = _cohort(99)
    choice = choose_refer_band(y, prob, BASE, 0.05)
    assert choice.band is None and cells_needed(0.05) == 100
    assert "has 99 cells" in choice.reason and "at least 100 called cells" in choice.reason  # type: ignore[operator]
    assert choice.describe().startswith("no refer band stored: ")


def test_no_band_when_no_band_meets_the_target() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = rng.uniform(0, 1, 400)  # labels unrelated to the probabilities: about half wrong however many are referred
    choice = choose_refer_band(y, np.stack([1 - p, p], axis=1), BASE, 0.05)
    assert choice.band is None and "no band leaves at most 5% errors among at least 100" in choice.reason  # type: ignore[operator]


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5])
def test_a_target_outside_0_1_is_a_user_error(target: float) -> None:
    y, prob = _cohort(200)
    with pytest.raises(BlastscopeError, match="--refer-error"):
        choose_refer_band(y, prob, BASE, target)


def test_multiclass_points_have_no_band() -> None:
    point = OperatingPoint.default(("a", "b", "c"))
    with pytest.raises(BlastscopeError, match="binary"):
        choose_refer_band(np.zeros(3, dtype=int), np.full((3, 3), 1 / 3), point, 0.1)
    assert referral_report(np.zeros(3, dtype=int), np.full((3, 3), 1 / 3), np.zeros(3, dtype=int), point) is None


def test_the_band_is_stored_and_read_back_through_operating_point_json(tmp_path: Path) -> None:
    y, prob = _cohort(600)
    point = choose_point(BASE, "val", (y, np.log(prob)))
    prob = probabilities(np.log(prob), point.temperature)  # as the threshold was chosen
    choice = choose_refer_band(y, prob, point, 0.05)
    banded = replace(point, refer_band=choice.band)
    write_operating_point(tmp_path, banded)
    stored = read_operating_point(tmp_path, CLASSES, "all")
    assert stored == banded and stored.refer_band == choice.band
    np.testing.assert_array_equal(uncertain(prob, stored), uncertain(prob, banded))
    assert ReferralChoice.from_dict(choice.to_dict()) == choice


def test_a_new_threshold_drops_the_band_chosen_around_the_old_one() -> None:
    y, prob = _cohort(300)
    banded = replace(BASE, refer_band=(0.3, 0.7))
    assert choose_point(banded, 0.2, (y, np.log(prob))).refer_band is None
    assert banded.with_threshold(0.2, "predict").refer_band is None


def test_the_report_scores_the_band_on_the_evaluated_cells() -> None:
    y_val, prob_val = _cohort(600)
    choice = choose_refer_band(y_val, prob_val, BASE, 0.05)
    point = replace(BASE, refer_band=choice.band)
    y, prob = _cohort(300, seed=7)
    report = referral_report(y, prob, decide(prob, point), point)
    called = ~uncertain(prob, point)
    wrong = decide(prob, point) != y
    assert report["band"] == list(choice.band) and report["n_referred"] == int((~called).sum())  # type: ignore[arg-type]
    assert report["coverage"] == pytest.approx(called.mean())
    assert report["error_called"] == pytest.approx(wrong[called].mean())
    assert report["error_all"] == pytest.approx(wrong.mean()) and report["error_called"] < report["error_all"]
    assert report["metrics_called"]["n"] == int(called.sum())
    assert report["metrics_called"]["accuracy"] == pytest.approx(1 - report["error_called"])
    logits = np.log(prob)
    assert evaluate_predictions(y, logits, None, point, bootstrap=0)["referral"]["n_referred"] == report["n_referred"]

    plain = referral_report(y, prob, decide(prob, BASE), BASE)  # no band: every cell called, no separate metrics
    assert plain["band"] is None and plain["coverage"] == 1.0 and plain["metrics_called"] is None
    assert plain["curve"] == report["curve"]  # the curve does not depend on the band


def test_the_risk_coverage_curve_calls_the_cells_farthest_from_the_threshold_first() -> None:
    # 20 cells, the 4 nearest the threshold (0.4) wrong; margins are scaled to each side of the threshold
    p = np.r_[np.linspace(0.45, 1.0, 8), np.linspace(0.0, 0.35, 8), [0.41, 0.42, 0.39, 0.38]]
    wrong = np.r_[np.zeros(16, dtype=bool), np.ones(4, dtype=bool)]
    coverage, error = risk_coverage(p, wrong, 0.4)
    assert coverage[0] == MIN_CURVE_CELLS / 20 and coverage[-1] == 1.0 and (np.diff(coverage) > 0).all()
    np.testing.assert_allclose(error[coverage <= 0.8], 0.0)
    np.testing.assert_allclose(error[-4:], [1 / 17, 2 / 18, 3 / 19, 4 / 20])
    tied, tied_error = risk_coverage(np.full(12, 0.9), np.r_[np.ones(3), np.zeros(9)].astype(bool), 0.5)
    assert tied.tolist() == [1.0] and tied_error.tolist() == [0.25]  # cells of equal margin are called together
