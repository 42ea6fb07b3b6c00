"""Choosing a run's operating point: the temperature fitted on validation, then the decision threshold.

``blastscope evaluate --threshold val|X`` (and ``compare``) call :func:`choose_point`: the temperature is fitted on the
validation split's logits (Guo et al., 2017), and the threshold on p(positive) is then chosen on the temperature-scaled
validation probabilities (best weighted F1, or the highest one reaching a target sensitivity) or taken as given. The
functions take validation predictions only, so a point can never be tuned on the test cells it is then scored on
(``OperatingPoint`` itself refuses ``split="test"``). Every candidate threshold is judged by the labels
:func:`~blastscope.inference.decision.decide` gives at it; multi-class data is decided by argmax and has no threshold.
A threshold chosen on validation is stored midway between the two validation probabilities its cut falls between
(:func:`midway`), never on a cell's probability: backends that differ in the last bits then still agree on every cell.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn import metrics as skm

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import DEFAULT_THRESHOLD, OperatingPoint, decide, fit_temperature
from blastscope.inference.predict import probabilities
from blastscope.metrics import sensitivity, weighted_f1

MAX_CANDIDATES = 512

ThresholdSpec = str | float | None
"""``None`` (no threshold asked for), ``"val"`` (choose on validation) or a probability in [0, 1]."""


def parse_threshold(text: str | float | None) -> ThresholdSpec:
    """The ``--threshold`` option as ``None``, ``"val"`` or a probability.

    Parameters
    ----------
    text : str, float or None
        ``None`` (option not given), ``"val"`` in any case, or a number (or its text) in [0, 1].

    Raises
    ------
    BlastscopeError
        For text that is neither ``val`` nor a number, or a number outside [0, 1].
    """
    if text is None:
        return None
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
    """Raise ``BlastscopeError`` unless ``target`` is ``None`` or in (0, 1]."""
    if target is not None and not 0.0 < target <= 1.0:
        raise BlastscopeError(f"--target-sensitivity {target} is outside (0, 1]; use e.g. 0.95")


def check_threshold_options(
    point: OperatingPoint, spec: ThresholdSpec, target_sensitivity: float | None, model: object
) -> None:
    """Refuse a given threshold or a target sensitivity for a multi-class ``model`` (the run, named in the message):
    it decides by its most probable class, so the point chosen would silently not be the one asked for.

    ``spec="val"`` is left to :func:`choose_point`, which fits only the temperature for such a model.

    Raises
    ------
    BlastscopeError
        For a number or a target with a multi-class ``point``.
    """
    if target_sensitivity is not None:
        point.check_threshold_applies(f"--target-sensitivity {target_sensitivity:g}", model)
    if spec not in (None, "val"):
        point.check_threshold_applies(f"--threshold {float(spec):g}", model)


def conflicting_threshold_options(threshold: str | float) -> str:
    """The one-line message for a number given together with ``--target-sensitivity``."""
    return (
        f"--threshold {threshold} and --target-sensitivity conflict: the target chooses the threshold on validation; "
        "drop one of them"
    )


def choose_point(
    base: OperatingPoint,
    spec: ThresholdSpec,
    val: tuple[np.ndarray, np.ndarray] | None,
    target_sensitivity: float | None = None,
    chosen_by: str = "evaluate",
) -> OperatingPoint:
    """A new operating point: temperature fitted on validation (1.0 without it), then the threshold.

    Parameters
    ----------
    base : OperatingPoint
        Gives the classes and the positive class (e.g. the run's stored point); its threshold and temperature are
        replaced and its refer band dropped.
    spec : {None, "val"} or float
        ``"val"`` chooses the threshold on validation (best weighted F1, or see ``target_sensitivity``), a number is
        taken as given, ``None`` keeps the default 0.5 (or chooses for ``target_sensitivity``). A multi-class
        ``base`` has no threshold: ``"val"`` fits only the temperature, and a number is refused.
    val : tuple (y_true, logits) or None
        The validation split's class indices (N,) and logits (N, C) or (N, 1, C): the only data fitted on. ``None``
        or empty: no temperature scaling (T = 1) and no ``"val"`` threshold.
    target_sensitivity : float, optional
        Choose the highest threshold whose validation sensitivity reaches this, in (0, 1].
    chosen_by : str
        Recorded in the point (``evaluate``, ``compare``).

    Returns
    -------
    OperatingPoint
        ``split="val"`` and ``n_cells`` when validation was used, ``score`` the criterion's validation value.

    Raises
    ------
    BlastscopeError
        For a number together with ``target_sensitivity``, a bad target, ``"val"`` without usable validation cells,
        or a number or target for multi-class data.
    """
    point = replace(
        base,
        threshold=DEFAULT_THRESHOLD,
        temperature=1.0,
        source="default",
        split=None,
        n_cells=None,
        score=None,
        chosen_by=chosen_by,
        refer_band=None,
        refer_target=None,  # a band is chosen around one threshold (evaluation.referral); a new one drops it
    )
    val_probabilities = None
    if val is not None and len(val[0]) > 0:
        y_val, logits = np.asarray(val[0], dtype=np.int64), _single_view(val[1])
        point = replace(point, temperature=fit_temperature(y_val, logits), split="val", n_cells=len(y_val))
        val_probabilities = (y_val, probabilities(logits, point.temperature))
    return choose_threshold(point, spec, val_probabilities, target_sensitivity)


def choose_threshold(
    point: OperatingPoint,
    spec: ThresholdSpec,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    target_sensitivity: float | None = None,
) -> OperatingPoint:
    """``point`` with the threshold ``spec`` asks for; its temperature and provenance otherwise kept.

    Parameters
    ----------
    point : OperatingPoint
        Carries the temperature ``val``'s probabilities were scaled with.
    spec : {None, "val"} or float
        As for :func:`choose_point`.
    val : tuple (y_true, y_prob) or None
        Validation class indices (N,) and temperature-scaled probabilities (N, C).
    target_sensitivity : float, optional
        Implies ``"val"`` when ``spec`` is ``None``.

    Raises
    ------
    BlastscopeError
        As for :func:`choose_point`.
    """
    check_target_sensitivity(target_sensitivity)
    spec = parse_threshold(spec)
    if target_sensitivity is not None and spec not in (None, "val"):
        raise BlastscopeError(conflicting_threshold_options(spec))  # type: ignore[arg-type]
    check_threshold_options(point, spec, target_sensitivity, "this model")
    if target_sensitivity is not None:
        spec = "val"
    if spec is None or not point.binary:  # multi-class data is decided by argmax: there is no threshold to choose
        return replace(point, threshold=DEFAULT_THRESHOLD, source="default", score=None)
    if spec != "val":
        return replace(point, threshold=float(spec), source="given", score=None)
    if val is None or len(val[0]) == 0:
        raise BlastscopeError(
            "--threshold val needs the run's validation split, which is empty or missing; give a number instead"
        )
    y_true, y_prob = np.asarray(val[0], dtype=np.int64), np.asarray(val[1], dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        raise BlastscopeError("the validation split holds one class only, so no threshold can be chosen on it")
    point = replace(point, split="val", n_cells=len(y_true))
    if target_sensitivity is not None:
        return threshold_for_sensitivity(y_true, y_prob, point, target_sensitivity)
    return threshold_for_weighted_f1(y_true, y_prob, point)


def threshold_for_weighted_f1(y_true: np.ndarray, y_prob: np.ndarray, point: OperatingPoint) -> OperatingPoint:
    """The threshold whose decisions have the best weighted F1; ties go to the candidate closest to 0.5.

    Candidates are the validation probabilities (and 0.5); the one chosen is then moved :func:`midway` into the gap
    its cut falls in, so it keeps its validation decisions and score but sits on no validation cell.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    y_prob : array of shape (N, 2)
        Validation probabilities, scaled with ``point.temperature``.
    point : OperatingPoint
        A binary point; the result is it with ``threshold``, ``source="val:weighted_f1"`` and ``score`` set.
    """
    positive = point.positive_index
    p_positive = y_prob[:, positive]
    candidates = _candidates(p_positive)
    thresholds = np.array([midway(p_positive, t) for t in candidates])
    scores = np.array(
        [weighted_f1(y_true, y_prob, decide(y_prob, replace(point, threshold=t)), positive) for t in thresholds]
    )
    best = np.flatnonzero(scores == scores.max())
    chosen = best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]
    return replace(point, threshold=float(thresholds[chosen]), source="val:weighted_f1", score=float(scores[chosen]))


def threshold_for_sensitivity(
    y_true: np.ndarray, y_prob: np.ndarray, point: OperatingPoint, target: float
) -> OperatingPoint:
    """The highest cut that still finds ``target`` of the positives, i.e. the best specificity at that recall.

    The threshold is placed :func:`midway` between the lowest validation probability called positive there and the
    next lower one, so it sits on no validation cell.

    Parameters
    ----------
    y_true : array of int, shape (N,)
        Must hold positives.
    y_prob : array of shape (N, 2)
        Validation probabilities, scaled with ``point.temperature``.
    point : OperatingPoint
        A binary point; the result has ``source="val:sensitivity>=S"`` and ``score`` the sensitivity reached.
    target : float
        In (0, 1].

    Raises
    ------
    BlastscopeError
        For a target outside (0, 1].
    """
    check_target_sensitivity(target)
    positive = point.positive_index
    _, tpr, thresholds = skm.roc_curve(y_true == positive, y_prob[:, positive], drop_intermediate=False)
    reaching = np.flatnonzero((tpr >= target) & np.isfinite(thresholds) & (thresholds <= 1.0))
    threshold = midway(y_prob[:, positive], float(thresholds[reaching[0]]))
    chosen = replace(point, threshold=threshold, source=f"val:sensitivity>={target:g}")
    reached = sensitivity(y_true, y_prob, decide(y_prob, chosen), positive)
    return replace(chosen, score=None if reached is None else float(reached))


def midway(p_positive: np.ndarray, cut: float) -> float:
    """A threshold with the decisions ``cut`` gives on these probabilities, as far as possible from every one of them.

    Why: a threshold equal to a cell's probability flips that cell when another backend (ONNX fp32 against PyTorch)
    differs from it in the last bits. The threshold is moved to the middle of the gap ``cut`` falls in: between the
    highest probability below it (0 when none is) and the lowest at or above it (1 when none is). Where no float lies
    strictly inside that gap, its upper end is kept (same decisions, no margin).

    Parameters
    ----------
    p_positive : array of shape (N,)
        Validation p(positive), decided positive where ``p >= threshold`` as
        :func:`~blastscope.inference.decision.decide` does.
    cut : float
        A threshold in [0, 1].

    Returns
    -------
    float
        In [0, 1]; ``p >= result`` exactly where ``p >= cut``.
    """
    p = np.asarray(p_positive, dtype=np.float64)
    below, above = p[p < cut], p[p >= cut]
    low = float(below.max()) if len(below) else 0.0
    high = float(above.min()) if len(above) else 1.0
    middle = (low + high) / 2
    if len(below) and not low < middle <= high:  # adjacent floats: the middle rounds onto a cell called negative
        return high
    return middle


def _single_view(logits: np.ndarray) -> np.ndarray:
    """Logits (N, C) from (N, C) or one view (N, 1, C); the temperature is fitted without test-time augmentation."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 3 and logits.shape[1] == 1:
        logits = logits[:, 0, :]
    if logits.ndim != 2:
        raise ValueError(f"validation logits must have shape (N, C) or (N, 1, C), not {logits.shape}")
    return logits


def _candidates(p_positive: np.ndarray) -> np.ndarray:
    """Every distinct validation probability (quantiles of them when there are very many), plus 0.5."""
    unique = np.unique(p_positive)
    if len(unique) > MAX_CANDIDATES:
        unique = np.unique(np.quantile(unique, np.linspace(0, 1, MAX_CANDIDATES)))
    return np.unique(np.append(unique, DEFAULT_THRESHOLD))
