"""Referring uncertain cells to a person: the refer band chosen on validation, and what it does on the scored cells.

A binary classifier with a *reject option* (Chow, 1970, "On optimum recognition error and reject tradeoff", IEEE
Trans. Inf. Theory 16(1)) abstains where it is unsure; selective classification (Geifman & El-Yaniv, 2017,
"Selective Classification for Deep Neural Networks", NeurIPS) chooses where to abstain so that the error rate among
the cells it does call (the *selective risk*) meets a target, while calling as many cells as possible (the
*coverage*). Here the abstention region is a band ``(low, high)`` around the decision threshold on p(positive): a cell
with ``low < p < high`` keeps the label the threshold gives but is flagged "uncertain — refer"
(:func:`~blastscope.inference.decision.uncertain`). Labels never change; referral is a flag.

:func:`choose_refer_band` searches every band whose edges are validation probabilities (separately below and above the
threshold, so a side that errs more can be referred further) and keeps the one that calls the most validation cells
with an error rate among them at most the target, its edges then moved midway between the called and referred cells
(so none sits on a cell's probability). Unlike Geifman & El-Yaniv's SGR it does not bound the risk with a binomial
tail: cells of one person are not independent, so such a guarantee would not hold on new people anyway, and the band
meets the target on validation only, and on new people it errs more: in 5-fold subject-grouped cross-validation on
C-NMC 2019 (``benchmarks/bench_referral.py``) a band asked for 5% left 11% errors among the cells it called, because
whole people are called wrong with confidence and a few validation people do not show that. The evaluation of a test
split measures it.
:func:`referral_report` scores a band on the evaluated cells, with the risk-coverage curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.metrics import class_display_name, classification_metrics, format_band

MIN_ERRORS_AT_TARGET = 5
"""A target error rate r is only measured on at least ``5 / r`` called validation cells (5 errors at the target, the
usual least count for a binomial rate): below that, 5% cannot be told from 0% or 10%."""
MIN_CURVE_CELLS = 10
"""Risk-coverage points calling fewer cells than this are left out: their error rate is noise."""
MAX_CURVE_POINTS = 200
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class ReferralChoice:
    """The refer band chosen on validation for a target error rate, and what it does there.

    Attributes
    ----------
    target : float
        The error rate allowed among called cells, in (0, 1).
    band : tuple of 2 floats or None
        ``(low, high)`` on p(positive); ``None`` when no band meets the target (see ``reason``).
    positive_class : str
        The class p(positive) is about, for the printed line.
    n_cells : int
        Validation cells the band was chosen on.
    n_referred : int
        Of them, how many fall inside the band.
    error_called : float or None
        Error rate among the validation cells outside the band (``None`` without a band).
    reason : str or None
        Why no band is stored, in one line; ``None`` when there is a band.
    """

    target: float
    band: tuple[float, float] | None
    positive_class: str
    n_cells: int
    n_referred: int = 0
    error_called: float | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line: ``refer when 0.3100 < p(ALL) < 0.7200: 12% of validation cells referred, 4.8% errors among the
        rest (target 5%, ...; met there only, new people may err more)``, or why there is no band."""
        if self.band is None:
            return f"no refer band stored: {self.reason}"
        name = class_display_name(self.positive_class)
        low, high = format_band(*self.band, decimals=4)
        errors = f"{100 * (self.error_called or 0.0):.1f}% errors"
        if self.n_referred == 0:
            return (
                f"refer no cell: {errors} among all {self.n_cells} validation cells already meet the target of "
                f"{100 * self.target:g}% (met there only, new people may err more)"
            )
        share = 100 * self.n_referred / self.n_cells
        return (
            f"refer when {low} < p({name}) < {high}: {share:.0f}% of validation cells referred, "
            f"{errors} among the rest (target {100 * self.target:g}%, {self.n_cells} validation cells; met there "
            "only, new people may err more)"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["band"] = list(self.band) if self.band is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferralChoice:
        return cls(**{**data, "band": tuple(data["band"]) if data.get("band") else None})


def check_refer_error(target: float | None) -> None:
    """Raise ``BlastscopeError`` unless ``target`` is ``None`` or in (0, 1)."""
    if target is not None and not 0.0 < target < 1.0:
        raise BlastscopeError(f"--refer-error {target} is outside (0, 1): give the error rate allowed, e.g. 0.05")


def cells_needed(target: float) -> int:
    """The fewest called cells a target error rate can be measured on: ``ceil(5 / target)``."""
    return math.ceil(round(MIN_ERRORS_AT_TARGET / target, 9))


def choose_refer_band(y_true: np.ndarray, y_prob: np.ndarray, point: OperatingPoint, target: float) -> ReferralChoice:
    """The band around ``point.threshold`` that calls the most validation cells with at most ``target`` errors.

    Every band ``low <= threshold <= high`` whose edges are validation probabilities is tried (``low`` from 0 and the
    probabilities below the threshold, ``high`` from those at or above it and 1): it calls the cells with
    ``p <= low`` or ``p >= high`` and refers the rest, as :func:`~blastscope.inference.decision.uncertain` does. Of
    the bands that call at least :func:`cells_needed` cells with an error rate among them at most ``target``, the one
    calling the most cells is kept; ties go to fewer errors, then to the narrower band. Its edges are then moved midway
    between the called cell nearest the threshold and the referred cell next to it (to the threshold on a side that
    refers none), so the band refers the same validation cells and no edge sits on a cell's probability.

    Parameters
    ----------
    y_true : array of int, shape (N,)
        Validation class indices into ``point.classes``.
    y_prob : array of shape (N, 2)
        Validation probabilities scaled with ``point.temperature`` (as the threshold was chosen on).
    point : OperatingPoint
        A binary point; its threshold labels the cells, and errors are counted against those labels.
    target : float
        Error rate allowed among called cells, in (0, 1), e.g. 0.05.

    Returns
    -------
    ReferralChoice
        With ``band=None`` and a one-line ``reason`` when the validation split is smaller than
        :func:`cells_needed` or no band meets the target on that many cells. A band of ``(threshold, threshold)``
        refers nothing: the threshold alone meets the target.

    Raises
    ------
    BlastscopeError
        For a multi-class point or a target outside (0, 1).
    """
    check_refer_error(target)
    if not point.binary:
        raise BlastscopeError(
            "--refer-error needs a binary model (a threshold on p(positive)); this one is multi-class"
        )
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    p = y_prob[:, point.positive_index]
    wrong = decide(y_prob, point) != y_true
    needed, n = cells_needed(target), len(y_true)
    choice = ReferralChoice(target, None, point.positive_class, n)  # type: ignore[arg-type]
    if n < needed:
        return _no_band(
            choice,
            f"the validation split has {n} cells, and an error rate of {100 * target:g}% is only measured on at least "
            f"{needed} called cells ({MIN_ERRORS_AT_TARGET} errors at the target); use a larger validation split or a "
            "higher --refer-error",
        )
    below = p < point.threshold
    lows, n_low, e_low = _low_side(p[below], wrong[below])
    highs, n_high, e_high = _high_side(p[~below], wrong[~below])
    best: tuple[int, int, float, int, int] | None = None  # (-called, errors, width, low index, high index)
    lowest_rate = math.inf
    for i, (low, called_low, errors_low) in enumerate(zip(lows, n_low, e_low, strict=True)):
        called, errors = called_low + n_high, errors_low + e_high
        enough = called >= needed
        if enough.any():
            lowest_rate = min(lowest_rate, float((errors[enough] / called[enough]).min()))
        feasible = np.flatnonzero(enough & (errors <= target * called + _TOLERANCE))
        if not len(feasible):
            continue
        j = feasible[np.lexsort((highs[feasible] - low, errors[feasible], -called[feasible]))[0]]
        candidate = (-int(called[j]), int(errors[j]), float(highs[j] - low), i, int(j))
        if best is None or candidate[:3] < best[:3]:
            best = candidate
    if best is None:
        return _no_band(
            choice,
            f"no band leaves at most {100 * target:g}% errors among at least {needed} called validation cells (the "
            f"fewest the target is measured on); the lowest reached is {100 * lowest_rate:.1f}%: the model is not "
            "sure enough of enough cells, so use a higher --refer-error",
        )
    minus_called, errors, _, i, j = best
    return ReferralChoice(
        target,
        _midway_edges(p, point.threshold, float(lows[i]), float(highs[j])),
        point.positive_class,  # type: ignore[arg-type]
        n,
        n_referred=n + minus_called,
        error_called=errors / -minus_called,
    )


def _no_band(choice: ReferralChoice, reason: str) -> ReferralChoice:
    return ReferralChoice(choice.target, None, choice.positive_class, choice.n_cells, reason=reason)


def _midway_edges(p: np.ndarray, threshold: float, low: float, high: float) -> tuple[float, float]:
    """The band that refers what ``(low, high)`` refers, its edges midway between the called and referred cells.

    Why: an edge on a called cell's probability flips that cell to referred when another backend differs from it in
    the last bits. Each edge moves to the middle of the gap between the called cell nearest the threshold and the
    referred cell next to it. A side that refers no cell ends at the threshold (a threshold chosen on validation sits
    midway between cells already), unless referred cells sit exactly on it; ``(threshold, threshold)`` refers nothing.

    Parameters
    ----------
    p : array of shape (N,)
        Validation p(positive).
    threshold : float
    low, high : float
        Chosen edges: 0 or a probability below ``threshold``, and a probability at or above it or 1.

    Returns
    -------
    tuple of 2 floats
        ``(low, high)`` with ``low <= threshold <= high``, referring exactly the cells the given edges refer.
    """
    referred = p[(p > low) & (p < high)]
    if not len(referred):
        return threshold, threshold
    nearest_low, nearest_high = float(referred.min()), float(referred.max())
    new_low = threshold if nearest_low > threshold else _middle(low, nearest_low)
    new_high = threshold if nearest_high < threshold else _middle(nearest_high, high, keep_low=False)
    return new_low, new_high


def _middle(low: float, high: float, keep_low: bool = True) -> float:
    """Midway between two floats; where no float lies strictly between them, the end that keeps the same cells."""
    middle = (low + high) / 2
    if low < middle < high:
        return middle
    return low if keep_low else high


def _low_side(p: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate ``low`` edges (0 and every probability below the threshold, ascending) with the cells each calls
    (``p <= low``) and the errors among them."""
    order = np.argsort(p, kind="stable")
    p, errors = p[order], np.concatenate([[0], np.cumsum(wrong[order])])
    edges = np.unique(np.append(p, 0.0))
    called = np.searchsorted(p, edges, side="right")
    return edges, called, errors[called]


def _high_side(p: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate ``high`` edges (every probability at or above the threshold and 1, ascending) with the cells each
    calls (``p >= high``) and the errors among them."""
    order = np.argsort(p, kind="stable")
    p, errors = p[order], np.concatenate([np.cumsum(wrong[order][::-1])[::-1], [0]])
    edges = np.unique(np.append(p, 1.0))
    first = np.searchsorted(p, edges, side="left")
    return edges, len(p) - first, errors[first]


def referral_report(
    y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, point: OperatingPoint
) -> dict[str, Any] | None:
    """What the point's refer band does on these cells, and the risk-coverage curve of referring by margin.

    Parameters
    ----------
    y_true, y_pred : arrays of int, shape (N,)
        True and decided class indices (decided by the threshold: referral never changes a label).
    y_prob : array of shape (N, 2)
        Temperature-scaled probabilities.
    point : OperatingPoint

    Returns
    -------
    dict or None
        ``None`` for multi-class points. Else ``band`` (``[low, high]`` or ``None``), ``n``, ``n_referred``,
        ``coverage`` (share of cells called), ``error_all`` (error rate over every cell), ``error_called`` (among
        called cells; ``None`` when none is), ``metrics_called`` (``classification_metrics`` of the called cells;
        ``None`` without a band or called cells) and ``curve`` (:func:`risk_coverage`).
    """
    if not point.binary:
        return None
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    wrong = y_pred != y_true
    called = ~uncertain(y_prob, point)
    n_called = int(called.sum())
    metrics_called = None
    if point.refer_band is not None and n_called:
        metrics_called = classification_metrics(
            y_true[called], y_prob[called], y_pred[called], point.classes, point.positive_class, point.threshold
        )
    coverage, error = risk_coverage(y_prob[:, point.positive_index], wrong, point.threshold)
    return {
        "band": list(point.refer_band) if point.refer_band is not None else None,
        "n": int(len(y_true)),
        "n_referred": int(len(y_true) - n_called),
        "coverage": n_called / len(y_true) if len(y_true) else None,
        "error_all": float(wrong.mean()) if len(y_true) else None,
        "error_called": float(wrong[called].mean()) if n_called else None,
        "metrics_called": metrics_called,
        "curve": {"coverage": coverage.tolist(), "error": error.tolist()},
    }


def risk_coverage(p_positive: np.ndarray, wrong: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve (Geifman & El-Yaniv, 2017) of referring cells closest to the threshold first.

    Closeness is the margin scaled to each side, ``(p - t) / (1 - t)`` at or above the threshold ``t`` and
    ``(t - p) / t`` below it, so both sides run from 0 at the threshold to 1 at certainty whatever ``t`` is. The curve
    does not depend on any band, so models can be compared on it; a band chosen on validation is a point near it.

    Parameters
    ----------
    p_positive : array of shape (N,)
        Temperature-scaled p(positive).
    wrong : array of bool, shape (N,)
        Whether the threshold's label of each cell is wrong.
    threshold : float

    Returns
    -------
    coverage, error : float arrays of shape (K,), K <= 200
        Share of cells called and the error rate among them, by coverage ascending, from :data:`MIN_CURVE_CELLS`
        called cells (or all, when fewer) to every cell; cells of equal margin are called together.
    """
    p = np.asarray(p_positive, dtype=np.float64)
    wrong = np.asarray(wrong, dtype=bool)
    if not len(p):
        return np.zeros(0), np.zeros(0)
    above = (p - threshold) / max(1 - threshold, _TOLERANCE)
    margin = np.where(p >= threshold, above, (threshold - p) / max(threshold, _TOLERANCE))
    order = np.argsort(-margin, kind="stable")
    ranked, errors = margin[order], np.cumsum(wrong[order])
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    ends = ends[ends + 1 >= min(MIN_CURVE_CELLS, len(p))]
    if len(ends) > MAX_CURVE_POINTS:
        ends = ends[np.unique(np.linspace(0, len(ends) - 1, MAX_CURVE_POINTS).round().astype(int))]
    called = ends + 1
    return called / len(p), errors[ends] / called
