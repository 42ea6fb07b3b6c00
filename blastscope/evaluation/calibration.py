"""Are the probabilities honest? Expected calibration error, reliability-diagram data and temperature scaling.

Calibration is measured on the top-label confidence (the largest class probability) against whether the argmax is
right, in ``n_bins`` equal-width bins over [0, 1]: ECE is the count-weighted mean |accuracy - confidence| over the
bins (torchmetrics' binned L1 calibration error; a confidence of exactly 1.0 falls in a bin of its own, as there).
Temperature scaling divides the logits by one scalar T fitted on the validation split (it is part of a run's operating
point); it changes confidences but never the ranking of cells, so ROC-AUC stays the same. T is searched within
:data:`~blastscope.inference.decision.TEMPERATURE_BOUNDS`; a fit that ends at a bound wanted to go further, and
:func:`~blastscope.inference.decision.temperature_bound_warning` says so, once, wherever the point carrying that
temperature is used (``evaluate``'s summary, ``predict``, ``scan``, ``serve``, the ``compare`` report); the fit itself
stays silent, or ``evaluate --threshold val`` would say it twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from blastscope.inference.decision import fit_temperature, negative_log_likelihood
from blastscope.inference.predict import probabilities
from blastscope.metrics import metric_value

DEFAULT_BINS = 15


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Binned top-label expected calibration error.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_prob : array of shape (N, C)
    n_bins : int
        Equal-width confidence bins over [0, 1].

    Returns
    -------
    float
        In [0, 1]: the count-weighted mean |accuracy - confidence| over the bins.
    """
    y_prob = np.asarray(y_prob, dtype=np.float64)
    return metric_value(
        multiclass_calibration_error(
            torch.from_numpy(y_prob),
            torch.from_numpy(np.asarray(y_true, dtype=np.int64)),
            num_classes=y_prob.shape[1],
            n_bins=n_bins,
            norm="l1",
        )
    )


def reliability(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The data of a reliability diagram: mean confidence, accuracy and cell count of each non-empty bin.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_prob : array of shape (N, C)
    n_bins : int

    Returns
    -------
    dict
        ``n_bins``, per non-empty bin ``confidence``, ``accuracy`` and ``counts`` (lists), the ``ece`` and the mean
        negative log-likelihood ``nll`` (nats per cell).
    """
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


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)`` (N, C) from logits (N, C) or views (N, V, C).

    The same function every door uses (``inference.predict.probabilities``), so the probabilities scored here are the
    ones :func:`~blastscope.inference.decision.decide` decided on.
    """
    return probabilities(logits, temperature)


def calibration_report(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    logits: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    n_bins: int = DEFAULT_BINS,
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Reliability before temperature scaling and, when a temperature applies, after it.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_prob : array of shape (N, C)
        Unscaled probabilities (T = 1).
    logits : array of shape (N, C) or (N, V, C), optional
        Logits of the same cells; needed for the after-scaling reliability.
    val : tuple (y_true, logits (M, C)), optional
        Validation predictions to fit the temperature on when ``temperature`` is not given.
    n_bins : int
    temperature : float, optional
        A temperature already chosen (an operating point's); 1.0 means no scaling, so no "after".

    Returns
    -------
    dict
        ``before`` and ``after`` (see :func:`reliability`; ``after`` is ``None`` without a temperature) and
        ``temperature`` (``None`` without one).
    """
    report: dict[str, Any] = {"before": reliability(y_true, y_prob, n_bins), "temperature": None, "after": None}
    if logits is None:
        return report
    if temperature is None and val is not None and len(val[0]) > 0:
        temperature = fit_temperature(*val)
    if temperature is not None and temperature != 1.0:
        report["temperature"] = float(temperature)
        report["after"] = reliability(y_true, apply_temperature(logits, temperature), n_bins)
    return report
