"""Thresholds come from a number or from the validation split, never from the test cells."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from blastscope.errors import BlastscopeError
from blastscope.evaluation.threshold import parse_threshold, resolve_threshold


def _probs(p_all: list[float]) -> np.ndarray:
    p = np.asarray(p_all)
    return np.stack([1 - p, p], axis=1)


def test_default_and_given_thresholds() -> None:
    assert resolve_threshold(0.5).source == "default"
    choice = resolve_threshold(parse_threshold("0.3"))
    assert choice.value == pytest.approx(0.3) and choice.source == "given"
    assert resolve_threshold("0.50").source == "default"


@pytest.mark.parametrize("text", ["abc", "1.5", "-0.1"])
def test_bad_threshold_text_is_a_user_error(text: str) -> None:
    with pytest.raises(BlastscopeError, match="--threshold"):
        parse_threshold(text)


def test_val_threshold_maximises_weighted_f1_on_validation() -> None:
    # validation positives all sit above 0.7 and negatives below 0.65: only a threshold in (0.6, 0.7] is perfect
    y_val = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    prob_val = _probs([0.1, 0.3, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95])
    choice = resolve_threshold("val", val=(y_val, prob_val))
    assert choice.source == "val:weighted_f1" and choice.val_score == pytest.approx(1.0)
    assert 0.65 < choice.value <= 0.7
    y_pred = (prob_val[:, 1] >= choice.value).astype(int)
    assert skm.f1_score(y_val, y_pred, average="weighted") == pytest.approx(1.0)


def test_target_sensitivity_picks_the_highest_threshold_reaching_it() -> None:
    y_val = np.array([0, 0, 0, 1, 1, 1, 1])
    prob_val = _probs([0.2, 0.4, 0.5, 0.3, 0.6, 0.7, 0.9])
    choice = resolve_threshold(0.5, val=(y_val, prob_val), target_sensitivity=0.75)
    assert choice.value == pytest.approx(0.6) and choice.val_score == pytest.approx(0.75)
    assert resolve_threshold("0.5", val=(y_val, prob_val), target_sensitivity=0.75) == choice  # text as from a CLI
    full = resolve_threshold("VAL", val=(y_val, prob_val), target_sensitivity=1.0)
    assert full.value == pytest.approx(0.3)


def test_a_given_threshold_and_a_target_sensitivity_conflict() -> None:
    y_val, prob_val = np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(BlastscopeError, match="conflict"):
        resolve_threshold(0.3, val=(y_val, prob_val), target_sensitivity=0.9)


def test_val_threshold_without_validation_cells_is_a_user_error() -> None:
    with pytest.raises(BlastscopeError, match="validation"):
        resolve_threshold("val", val=None)
    with pytest.raises(BlastscopeError, match="one class"):
        resolve_threshold("val", val=(np.array([1, 1]), _probs([0.4, 0.9])))
