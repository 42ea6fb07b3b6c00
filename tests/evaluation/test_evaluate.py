"""evaluate_predictions (the pure core) and evaluate_run on a small stand-in run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blastscope.evaluation.evaluate import evaluate_predictions
from blastscope.evaluation.metrics import weighted_f1

CLASSES = ("hem", "all")


def _logits_for(p_all: np.ndarray) -> np.ndarray:
    p_all = np.clip(p_all, 1e-4, 1 - 1e-4)
    return np.stack([np.zeros_like(p_all), np.log(p_all / (1 - p_all))], axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def cohort() -> dict[str, np.ndarray | list[str]]:
    """Validation favours a threshold near 0.7; the test cells would favour one near 0.3."""
    rng = np.random.default_rng(0)
    y_val = np.repeat([0, 1], 40)
    p_val = np.where(y_val == 1, rng.uniform(0.7, 1.0, 80), rng.uniform(0.0, 0.68, 80))
    y_test = np.repeat([0, 1], 30)
    p_test = np.where(y_test == 1, rng.uniform(0.32, 1.0, 60), rng.uniform(0.0, 0.3, 60))
    subjects = [f"{'H' if y == 0 else ''}{i // 6}" for i, y in enumerate(y_test)]
    return {"y_val": y_val, "logits_val": _logits_for(p_val), "y_test": y_test, "logits_test": _logits_for(p_test),
            "subjects": subjects}


def test_val_threshold_is_chosen_on_validation_not_test(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    result = evaluate_predictions(
        cohort["y_test"], _softmax(logits_test), cohort["subjects"], CLASSES, threshold="val",
        logits=logits_test, val=(cohort["y_val"], cohort["logits_val"]), bootstrap=50,
    )
    chosen = result["threshold"]["value"]
    assert result["threshold"]["source"] == "val:weighted_f1"
    p_val = _softmax(cohort["logits_val"])[:, 1]
    # perfect on validation (above every HEM, at most the lowest ALL); the test cells would want (0.3, 0.32]
    assert p_val[cohort["y_val"] == 0].max() < chosen <= p_val[cohort["y_val"] == 1].min()
    test_score_at_chosen = weighted_f1(cohort["y_test"], _softmax(logits_test), chosen)
    assert result["metrics"]["weighted_f1"] == pytest.approx(test_score_at_chosen) and test_score_at_chosen < 1.0


def test_everything_is_reported_as_plain_json(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    result = evaluate_predictions(
        cohort["y_test"], _softmax(logits_test), cohort["subjects"], CLASSES,
        logits=logits_test, val=(cohort["y_val"], cohort["logits_val"]), bootstrap=50, seed=3,
    )
    json.dumps(result)
    assert result["threshold"] == {"value": 0.5, "source": "default", "val_score": None}
    assert result["bootstrap"]["unit"] == "subject" and result["bootstrap"]["n_units"] == 10
    assert result["subjects"]["n_subjects"] == 10
    assert result["calibration"]["temperature"] is not None and result["calibration"]["after"] is not None
    assert result["roc"]["fpr"][0] == 0.0 and result["roc"]["tpr"][-1] == 1.0


def test_without_subjects_or_validation(cohort: dict) -> None:
    probabilities = _softmax(cohort["logits_test"])
    result = evaluate_predictions(cohort["y_test"], probabilities, None, CLASSES, bootstrap=20)
    assert result["subjects"] is None and result["bootstrap"]["unit"] == "cell"
    assert result["calibration"]["after"] is None
    assert evaluate_predictions(cohort["y_test"], probabilities, None, CLASSES, bootstrap=0)["bootstrap"] is None


def test_multiclass_has_no_threshold() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 10)
    probabilities = _softmax(rng.normal(size=(30, 3)) + 2 * np.eye(3)[y])
    result = evaluate_predictions(y, probabilities, None, ("a", "b", "c"), threshold="val", bootstrap=10)
    assert result["threshold"]["source"].startswith("argmax") and result["roc"] is None
