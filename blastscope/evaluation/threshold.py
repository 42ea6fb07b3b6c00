"""The decision threshold on p(positive): 0.5, a number given, or one chosen on the validation split.

The functions here take validation predictions only, so a threshold can never be tuned on the test cells it is then
scored on. Multi-class predictions are an argmax and have no threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from blastscope.errors import BlastscopeError
from blastscope.metrics import weighted_f1

DEFAULT_THRESHOLD = 0.5
MAX_CANDIDATES = 512


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    """A threshold and how it was obtained (``default``, ``given``, ``val:weighted_f1``, ``val:sensitivity>=S``)."""

    value: float
    source: str
    val_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_threshold(text: str | float | None) -> str | float:
    """``"val"`` or a probability in [0, 1]; anything else is a user error naming the fix."""
    if text is None:
        return DEFAULT_THRESHOLD
    if isinstance(text, str) and text.strip().lower() == "val":
        return "val"
    try:
        value = float(text)
    except ValueError:
        raise BlastscopeError(f"--threshold {text!r} is neither 'val' nor a number; use e.g. 0.5 or val") from None
    if not 0.0 <= value <= 1.0:
        raise BlastscopeError(f"--threshold {value} is outside [0, 1]; give a probability of the positive class")
    return value


def check_target_sensitivity(target: float | None) -> None:
    if target is not None and not 0.0 < target <= 1.0:
        raise BlastscopeError(f"--target-sensitivity {target} is outside (0, 1]; use e.g. 0.95")


def conflicting_threshold_options(threshold: str | float) -> str:
    return (
        f"--threshold {threshold} and --target-sensitivity conflict: the target chooses the threshold on validation; "
        "drop one of them"
    )


def resolve_threshold(
    spec: str | float,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    target_sensitivity: float | None = None,
) -> ThresholdChoice:
    """Turn ``spec`` (a number, its text, or ``"val"``) into a threshold; ``val`` is the validation (y_true, y_prob).

    A target sensitivity implies choosing on validation, whatever ``spec`` says when it is the default.
    """
    spec = parse_threshold(spec)
    if target_sensitivity is not None and spec not in ("val", DEFAULT_THRESHOLD):
        raise BlastscopeError(conflicting_threshold_options(spec))
    if target_sensitivity is not None and spec == DEFAULT_THRESHOLD:
        spec = "val"
    if spec != "val":
        value = float(spec)
        return ThresholdChoice(value, "default" if value == DEFAULT_THRESHOLD else "given")
    if val is None or len(val[0]) == 0:
        raise BlastscopeError(
            "--threshold val needs the run's validation split, which is empty or missing; give a number instead"
        )
    y_true, y_prob = np.asarray(val[0]), np.asarray(val[1], dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise BlastscopeError("the validation split holds one class only, so no threshold can be chosen on it")
    if target_sensitivity is not None:
        return threshold_for_sensitivity(y_true, y_prob, target_sensitivity)
    return threshold_for_weighted_f1(y_true, y_prob)


def threshold_for_weighted_f1(y_true: np.ndarray, y_prob: np.ndarray) -> ThresholdChoice:
    """The candidate threshold with the best weighted F1; ties go to the one closest to 0.5."""
    candidates = _candidates(y_prob[:, 1])
    scores = np.array([weighted_f1(y_true, y_prob, t) for t in candidates])
    best = np.flatnonzero(scores == scores.max())
    chosen = best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]
    return ThresholdChoice(float(candidates[chosen]), "val:weighted_f1", float(scores[chosen]))


def threshold_for_sensitivity(y_true: np.ndarray, y_prob: np.ndarray, target: float) -> ThresholdChoice:
    """The highest threshold that still finds ``target`` of the positives, i.e. the best specificity at that recall."""
    check_target_sensitivity(target)
    _, tpr, thresholds = skm.roc_curve(y_true, y_prob[:, 1], drop_intermediate=False)
    reaching = np.flatnonzero((tpr >= target) & np.isfinite(thresholds))
    index = reaching[0]
    return ThresholdChoice(float(thresholds[index]), f"val:sensitivity>={target:g}", float(tpr[index]))


def _candidates(p_positive: np.ndarray) -> np.ndarray:
    """Every distinct validation probability (quantiles of them when there are very many), plus 0.5."""
    unique = np.unique(p_positive)
    if len(unique) > MAX_CANDIDATES:
        unique = np.unique(np.quantile(unique, np.linspace(0, 1, MAX_CANDIDATES)))
    return np.unique(np.append(unique, DEFAULT_THRESHOLD))
