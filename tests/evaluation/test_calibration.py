"""ECE matches torchmetrics' bins; temperature scaling repairs over-confident logits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from blastscope.evaluation.calibration import (
    apply_temperature,
    calibration_report,
    expected_calibration_error,
    reliability,
)
from blastscope.inference.decision import (
    TEMPERATURE_BOUNDS,
    fit_temperature,
    negative_log_likelihood,
    temperature_bound_warning,
)
from blastscope.inference.predict import probabilities


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is right ~75% of the time but claims ~99%."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    margin = rng.normal(1.0, 1.0, n) * np.where(y == 1, 1, -1)
    return y, 6.0 * np.stack([-margin / 2, margin / 2], 1)


def test_reliability_bins_reproduce_the_ece() -> None:
    y, logits = _overconfident(500, 0)
    probs = softmax(logits, axis=1)
    curve = reliability(y, probs, n_bins=10)
    by_hand = sum(
        abs(a - c) * n for a, c, n in zip(curve["accuracy"], curve["confidence"], curve["counts"], strict=True)
    ) / sum(curve["counts"])
    assert sum(curve["counts"]) == 500
    assert curve["ece"] == pytest.approx(by_hand, abs=1e-6)
    assert curve["ece"] == pytest.approx(expected_calibration_error(y, probs, 10))


def test_the_ece_is_the_number_it_stands_for_not_float32_noise() -> None:
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.tile([0.2, 0.8], (4, 1))) == 0.3


def test_perfectly_calibrated_confidence_has_small_ece() -> None:
    rng = np.random.default_rng(1)
    p_all = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p_all).astype(int)
    assert expected_calibration_error(y, np.stack([1 - p_all, p_all], 1)) < 0.02


def test_temperature_fitted_on_validation_lowers_test_nll_and_ece() -> None:
    y_val, logits_val = _overconfident(1000, 2)
    y_test, logits_test = _overconfident(1000, 3)
    temperature = fit_temperature(y_val, logits_val)
    assert temperature > 1.5  # over-confident logits must be softened
    assert negative_log_likelihood(y_test, logits_test, temperature) < negative_log_likelihood(y_test, logits_test)
    report = calibration_report(y_test, softmax(logits_test, 1), logits_test, val=(y_val, logits_val))
    assert report["temperature"] == pytest.approx(temperature)
    assert report["after"]["ece"] < report["before"]["ece"]
    assert report["after"]["nll"] < report["before"]["nll"]
    np.testing.assert_array_equal(apply_temperature(logits_test, temperature).argmax(1), logits_test.argmax(1))


def test_without_validation_logits_only_before_is_reported() -> None:
    y, logits = _overconfident(50, 4)
    report = calibration_report(y, softmax(logits, 1))
    assert report["after"] is None and report["temperature"] is None


def test_a_given_temperature_is_applied_not_refitted() -> None:
    """An operating point's temperature is the one reported; views (N, V, C) are averaged after scaling."""
    y_val, logits_val = _overconfident(200, 5)
    y, logits = _overconfident(100, 6)
    views = np.stack([logits, logits * 0.8], axis=1)
    report = calibration_report(y, probabilities(views, 1.0), views, val=(y_val, logits_val), temperature=2.5)
    assert report["temperature"] == 2.5 != pytest.approx(fit_temperature(y_val, logits_val))
    scaled = np.stack([softmax(logits / 2.5, 1), softmax(logits * 0.8 / 2.5, 1)], axis=1).mean(axis=1)
    assert report["after"] == reliability(y, probabilities(views, 2.5))
    assert report["after"]["ece"] == pytest.approx(expected_calibration_error(y, scaled), abs=1e-6)
    unscaled = calibration_report(y, softmax(logits, 1), logits, val=(y_val, logits_val), temperature=1.0)
    assert unscaled["temperature"] is None and unscaled["after"] is None


def test_a_fit_that_ends_at_a_bound_of_its_search_is_recognised_by_the_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Separated validation cells drive T to the lower bound, confidently wrong ones to the upper; the fit itself stays
    silent (the point carrying T warns where it is used, once), and the warning recognises both ends."""
    y = np.array([0, 1] * 20)
    separated = np.where(np.eye(2)[y] == 1, 1.0, 0.0)
    with caplog.at_level("DEBUG"):
        low = fit_temperature(y, separated)
        high = fit_temperature(y, 3.0 * np.eye(2)[1 - y])
    assert (low, high) == pytest.approx(TEMPERATURE_BOUNDS, rel=1e-3) and not caplog.records
    lines = [temperature_bound_warning(low, 40), temperature_bound_warning(high, 40)]
    assert all(line is not None and "\n" not in line for line in lines)
    assert lines[0].startswith("temperature 0.05 (fitted on 40 validation cells) sits at the lower bound of its fit")
    assert "the validation part is probably too small or separable" in lines[0]
    assert lines[1].startswith("temperature 20 (fitted on 40 validation cells) sits at the upper bound")
    assert "overconfident beyond what temperature scaling can fix" in lines[1]


def test_a_fit_inside_its_search_range_is_not_warned_about() -> None:
    y, logits = _overconfident(500, 7)
    temperature = fit_temperature(y, logits)
    assert temperature_bound_warning(temperature) is None
    assert temperature_bound_warning(1.0) is None and temperature_bound_warning(0.0502) is None
