"""Are the probabilities honest? Expected calibration error, reliability-diagram data and temperature scaling.

Calibration is measured on the top-label confidence (the largest class probability) against whether the argmax is
right, in ``n_bins`` equal-width bins over [0, 1]: ECE is the count-weighted mean |accuracy - confidence| over the
bins (torchmetrics' binned L1 calibration error; a confidence of exactly 1.0 falls in a bin of its own, as there).
Temperature scaling divides the logits by one scalar T fitted on the validation split; it changes confidences but
never the ranking of cells, so ROC-AUC stays the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from torchmetrics.functional.classification import multiclass_calibration_error

DEFAULT_BINS = 15
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Binned top-label ECE, in [0, 1]."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    return float(
        multiclass_calibration_error(
            torch.from_numpy(y_prob),
            torch.from_numpy(np.asarray(y_true, dtype=np.int64)),
            num_classes=y_prob.shape[1],
            n_bins=n_bins,
            norm="l1",
        )
    )


def reliability(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Mean confidence, accuracy and cell count of each non-empty bin, plus the ECE and the NLL, for the diagram."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    confidence = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1), confidence, side="right") - 1
    occupied = np.unique(bins)
    return {
        "n_bins": n_bins,
        "confidence": [float(confidence[bins == b].mean()) for b in occupied],
        "accuracy": [float(correct[bins == b].mean()) for b in occupied],
        "counts": [int((bins == b).sum()) for b in occupied],
        "ece": expected_calibration_error(y_true, y_prob, n_bins),
        "nll": negative_log_likelihood(y_true, np.log(np.clip(y_prob, 1e-15, 1.0))),
    }


def negative_log_likelihood(y_true: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / T)``; log-probabilities are valid logits too."""
    log_prob = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_prob[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)].mean())


def fit_temperature(y_true: np.ndarray, logits: np.ndarray) -> float:
    """The T in [0.05, 20] minimising validation NLL (1-D bounded search on log T, so T stays positive)."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(y_true, logits, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def calibration_report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    logits: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Reliability before and, when validation ``(y_true, logits)`` and test ``logits`` are given, after scaling."""
    report: dict[str, Any] = {"before": reliability(y_true, y_prob, n_bins), "temperature": None, "after": None}
    if logits is not None and val is not None and len(val[0]) > 0:
        temperature = fit_temperature(*val)
        report["temperature"] = temperature
        report["after"] = reliability(y_true, apply_temperature(logits, temperature), n_bins)
    return report
