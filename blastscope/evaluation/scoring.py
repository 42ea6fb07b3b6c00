"""The pure core of an evaluation: logits and an operating point in, every score that matters out as a plain dict.

Probabilities come from :func:`~blastscope.inference.predict.probabilities` at the point's temperature and labels from
:func:`~blastscope.inference.decision.decide` at the point, exactly as ``predict``, ``serve`` and the Python API make
them; metrics, subject-level scores and bootstrap intervals then score those decisions. Nothing here chooses the
point (see :mod:`blastscope.evaluation.threshold`) or reads a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from blastscope.evaluation.bootstrap import bootstrap_ci
from blastscope.evaluation.calibration import calibration_report
from blastscope.evaluation.referral import referral_report
from blastscope.evaluation.subjects import subject_report
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.inference.predict import probabilities
from blastscope.metrics import classification_metrics


def decisions(logits: np.ndarray, point: OperatingPoint) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities at the point's temperature and the labels the point decides from them.

    Parameters
    ----------
    logits : array of shape (N, C) or (N, V, C)
        Logits per cell (and per test-time-augmentation view), classes in ``point.classes`` order.
    point : OperatingPoint

    Returns
    -------
    y_prob : float32 array of shape (N, C)
        ``softmax(logits / T)`` averaged over views.
    y_pred : int64 array of shape (N,)
        Class indices from ``decide(y_prob, point)``.

    Raises
    ------
    ValueError
        If the logits do not have one column per class of ``point``.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim not in (2, 3) or logits.shape[-1] != len(point.classes):
        raise ValueError(f"logits of shape {logits.shape} do not fit {len(point.classes)} classes")
    y_prob = probabilities(logits, point.temperature)
    return y_prob, decide(y_prob, point)


def evaluate_predictions(
    y_true: np.ndarray,
    logits: np.ndarray,
    subjects: Sequence[str | None] | None,
    point: OperatingPoint,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics, subject-level scores, bootstrap CIs, calibration and ROC points of one set of predictions at ``point``.

    Parameters
    ----------
    y_true : array of int, shape (N,)
        True class indices into ``point.classes``.
    logits : array of shape (N, C) or (N, V, C)
        The cells' logits (V views with test-time augmentation); log-probabilities are valid logits too.
    subjects : sequence of str or None, length N, or None
        Subject ids; subject-level scores and subject resampling need every cell to have one.
    point : OperatingPoint
        Where to decide: its temperature scales the logits, its threshold (binary) or argmax (multi-class) decides.
    bootstrap : int
        Bootstrap resamples; 0 gives no intervals.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        Plain JSON-able types: ``operating_point`` (``point.to_dict()``), ``metrics``, ``subjects`` (or ``None``),
        ``bootstrap`` (or ``None``), ``calibration`` (reliability before and, with a temperature, after scaling) and
        ``roc`` (false and true positive rates of the positive class; ``None`` for multi-class or one-class data)
        and ``referral`` (what the point's refer band does here, with the risk-coverage curve:
        :func:`~blastscope.evaluation.referral.referral_report`; ``None`` for multi-class data).

    Raises
    ------
    ValueError
        For logits that do not fit the classes, or labels of another length.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob, y_pred = decisions(logits, point)
    classes, positive = point.classes, point.positive_index
    has_subjects = subjects is not None and all(subject is not None for subject in subjects)
    subject_ids = [str(s) for s in subjects] if has_subjects else None  # type: ignore[union-attr]
    unscaled = probabilities(np.asarray(logits, dtype=np.float32), 1.0)
    return {
        "operating_point": point.to_dict(),
        "metrics": classification_metrics(y_true, y_prob, y_pred, classes, point.positive_class, point.threshold),
        "subjects": subject_report(y_true, y_prob, y_pred, subject_ids, point) if subject_ids else None,
        "bootstrap": (
            bootstrap_ci(y_true, y_prob, y_pred, subject_ids, positive=positive, n_resamples=bootstrap, seed=seed)
            if bootstrap > 0
            else None
        ),
        "calibration": calibration_report(y_true, unscaled, logits, temperature=point.temperature),
        "roc": _roc_points(y_true, y_prob, positive) if positive is not None else None,
        "referral": referral_report(y_true, y_prob, y_pred, point),
    }


def _roc_points(y_true: np.ndarray, y_prob: np.ndarray, positive: int) -> dict[str, list[float]] | None:
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y_true == positive, y_prob[:, positive])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
