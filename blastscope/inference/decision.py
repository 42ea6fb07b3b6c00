"""The operating point of a classifier and the one rule that turns probabilities into labels.

Like scikit-learn's ``TunedThresholdClassifierCV`` keeps ``best_threshold_``, a trained run keeps its
:class:`OperatingPoint`: the positive class, the decision threshold on its probability, the temperature that scales the
logits, and how and on which split they were chosen. Every door to a model (evaluate, predict, serve, the Python API,
the ONNX file's metadata) reads the same point and calls :func:`decide`, so they give the same label.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from blastscope.errors import BlastscopeError
from blastscope.metrics import class_display_name, format_band, format_threshold

DEFAULT_THRESHOLD = 0.5
MEMBERS_VALIDATION = "members' val"
"""``OperatingPoint.split`` of an ensemble of members on different splits: its threshold was chosen on the members'
validation cells pooled, each scored by the member that validated on it (``workflows.ensemble``); it has none of its
own."""
SOURCES = ("default", "given", "val:weighted_f1", "val:sensitivity")
"""How a threshold can come about; ``val:sensitivity`` is followed by ``>=S``, the target."""
TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The range a temperature is fitted in (:func:`fit_temperature`, searched on log T); a fit that
ends at either end wanted to go further. Kept here, beside the point that carries the temperature, so that every door
that decides with it (predict, scan, serve) can say when it sits at a bound."""
LOG_T_BOUNDS = (float(np.log(TEMPERATURE_BOUNDS[0])), float(np.log(TEMPERATURE_BOUNDS[1])))
AT_BOUND = 1e-3
"""How close to a bound, in log T (0.1% of T), counts as at it: the bounded search stops within about 1e-4 of a
bound it runs into."""


def negative_log_likelihood(y_true: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / T)``, in nats per cell; log-probabilities are valid logits too.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    logits : array of shape (N, C)
    temperature : float
        > 0.
    """
    log_prob = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_prob[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)].mean())


def fit_temperature(y_true: np.ndarray, logits: np.ndarray) -> float:
    """The temperature minimising the validation NLL (1-D bounded search on log T, so T stays positive).

    Parameters
    ----------
    y_true : array of int, shape (M,)
        Validation class indices.
    logits : array of shape (M, C)
        Validation logits, one view.

    Returns
    -------
    float
        T in [0.05, 20]; > 1 softens over-confident logits. Perfectly separated classes drive it to the lower bound,
        and a network whose confident calls are often wrong to the upper one: the point carrying it warns of either
        (:func:`~blastscope.inference.decision.temperature_bound_warning`).
    """
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(y_true, logits, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def temperature_bound_warning(temperature: float, n_cells: int | None = None) -> str | None:
    """One line saying that ``temperature`` sits at a bound of its fit and what that means, else None.

    At the lower bound the validation cells are separated so cleanly that ever sharper probabilities fit them better,
    so scaling makes the network surer than any data showed; at the upper bound its probabilities are overconfident
    beyond what dividing the logits can mend. Either way the scaled probabilities are not to be trusted.

    Parameters
    ----------
    temperature : float
        A fitted temperature (1.0, no scaling, is never at a bound).
    n_cells : int, optional
        The validation cells it was fitted on, named in the line when given.
    """
    log_t = float(np.log(temperature))
    on = f" (fitted on {n_cells} validation cells)" if n_cells else ""
    if abs(log_t - LOG_T_BOUNDS[0]) < AT_BOUND:
        return (
            f"temperature {temperature:.3g}{on} sits at the lower bound of its fit: the validation cells are "
            "separated so cleanly that sharper always fits them better, so the scaled probabilities are overconfident "
            "beyond what the fit can judge; the validation part is probably too small or separable (give it more "
            "cells before trusting the probabilities)"
        )
    if abs(log_t - LOG_T_BOUNDS[1]) < AT_BOUND:
        return (
            f"temperature {temperature:.3g}{on} sits at the upper bound of its fit: the network's probabilities are "
            "overconfident beyond what temperature scaling can fix (its confident calls on validation are wrong too "
            "often); the validation part is probably too small or unlike the training data"
        )
    return None


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where a classifier decides, and where that choice came from.

    Attributes
    ----------
    classes : tuple of str
        Class names in the model's output order.
    positive_class : str or None
        The class whose probability is compared with ``threshold`` (binary data); ``None`` for multi-class data,
        which is decided by the most probable class.
    threshold : float
        Decision threshold on p(positive) after temperature scaling, in [0, 1]; ignored for multi-class data.
    temperature : float
        Logits are divided by it before the softmax (> 0; 1 means uncalibrated). Fitted on validation by
        ``blastscope evaluate`` (Guo et al., 2017, "On Calibration of Modern Neural Networks").
    source : str
        ``default`` (0.5), ``given`` (a number the user chose), ``val:weighted_f1`` or ``val:sensitivity>=S``.
    split, n_cells : str or None, int or None
        The split the threshold and temperature were chosen on, and its size; never ``test``.
    score : float or None
        The criterion's value on that split (weighted F1, or the sensitivity reached).
    chosen_by : str
        What set it: ``train``, ``evaluate``, ``compare``, or a one-call override such as ``predict --threshold``.
    refer_band : tuple of 2 floats or None
        ``(low, high)`` on p(positive) after temperature scaling: a cell with ``low < p < high`` is still labelled by
        ``threshold`` but flagged "uncertain — refer" for a person to review (:func:`uncertain`). Chosen on
        validation for a target error rate among the cells outside it; ``None``: no cell is referred.
    refer_target : float or None
        The error rate among called validation cells the band was chosen for (``evaluate --refer-error``).
    """

    classes: tuple[str, ...]
    positive_class: str | None
    threshold: float = DEFAULT_THRESHOLD
    temperature: float = 1.0
    source: str = "default"
    split: str | None = None
    n_cells: int | None = None
    score: float | None = None
    chosen_by: str = "train"
    refer_band: tuple[float, float] | None = None
    refer_target: float | None = None

    def __post_init__(self) -> None:
        if self.refer_band is not None:
            low, high = self.refer_band
            if not (0.0 <= low <= self.threshold <= high <= 1.0) or not self.binary:
                raise BlastscopeError(
                    f"refer band {self.refer_band} must hold the threshold {self.threshold} within [0, 1] "
                    "(binary models only)"
                )
        if not 0.0 <= self.threshold <= 1.0:
            raise BlastscopeError(f"threshold {self.threshold} is outside [0, 1]; give a probability")
        if not self.temperature > 0:
            raise BlastscopeError(f"temperature {self.temperature} must be positive")
        if self.source not in SOURCES and not self.source.startswith("val:sensitivity>="):
            raise BlastscopeError(
                f"threshold source {self.source!r} is unknown: one of {', '.join(SOURCES[:3])} or val:sensitivity>=S"
            )
        if self.split == "test":
            raise BlastscopeError("an operating point is never chosen on the test split; choose it on validation")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise BlastscopeError(f"positive class {self.positive_class!r} is not one of {', '.join(self.classes)}")

    @classmethod
    def default(
        cls, classes: Sequence[str], positive_class: str | None = None, chosen_by: str = "train"
    ) -> OperatingPoint:
        """Threshold 0.5 on p(``positive_class``), no temperature scaling.

        Pass the positive class of binary data: ``train`` resolves it from the class names or ``--positive-class``
        (:func:`blastscope.data.classes.positive_class`) and records it. Multi-class data has none (argmax); giving
        one for it is an error.

        Binary data without one falls back to the *last* class. That fallback exists only for runs written before
        the positive class was recorded (a run folder without ``operating_point.json`` and without
        ``resolved_positive_class`` in its ``config.yaml``, read by
        :func:`blastscope.runs.folder.read_operating_point`), which were trained and scored with it. New code must not
        rely on it: with folders ``ALL/`` and ``HEM/`` the last class is HEM.
        """
        classes = tuple(classes)
        if len(classes) != 2:
            if positive_class is not None:
                raise BlastscopeError(
                    f"positive class {positive_class!r} given for {len(classes)} classes; only binary data has one"
                )
            return cls(classes, None, chosen_by=chosen_by)
        return cls(classes, classes[-1] if positive_class is None else positive_class, chosen_by=chosen_by)

    @property
    def binary(self) -> bool:
        return self.positive_class is not None

    @property
    def positive_index(self) -> int | None:
        return self.classes.index(self.positive_class) if self.positive_class is not None else None

    def check_threshold_applies(self, option: str, model: object) -> None:
        """Refuse a threshold given for a multi-class model, which decides by its most probable class: taking it
        would ignore it while every output said it had decided.

        ``option`` names how it was given (``predict --threshold``, ``load(threshold=...)``), ``model`` the run.

        Raises
        ------
        BlastscopeError
            When the point is not binary.
        """
        if not self.binary:
            raise BlastscopeError(
                f"{option} needs a two-class run; {model} has {len(self.classes)} classes "
                f"({', '.join(self.classes)}), decided by the most probable class"
            )

    def with_threshold(self, threshold: float, chosen_by: str, model: object = "this model") -> OperatingPoint:
        """The same point with a threshold the user gave, e.g. ``predict --threshold 0.3`` for one call.

        ``chosen_by`` is recorded and names the option in the refusal of a multi-class ``model``
        (:meth:`check_threshold_applies`). The refer band is dropped: it was chosen around the stored threshold, for
        that threshold's error rate.

        Raises
        ------
        BlastscopeError
            When ``threshold`` is not a number (``True`` would otherwise read as 1.0, ``"0.3"`` as 0.3), is outside
            [0, 1], or the point is not binary.
        """
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise BlastscopeError(
                f"{chosen_by} must be a number, a probability in [0, 1]; got {type(threshold).__name__} {threshold!r}"
            )
        self.check_threshold_applies(chosen_by, model)
        return replace(
            self,
            threshold=float(threshold),
            source="given",
            split=None,
            n_cells=None,
            score=None,
            chosen_by=chosen_by,
            refer_band=None,
            refer_target=None,
        )

    def describe(self) -> str:
        """One line a person reads: the rule, and where it came from."""
        if not self.binary:
            return f"the most probable class (multi-class: no threshold; {self.origin()})"
        name = class_display_name(self.positive_class)
        return f"{name} when p({name}) >= {format_threshold(self.threshold, 4)} ({self.origin()})"

    def origin(self) -> str:
        """Where the threshold and temperature came from, e.g. ``chosen on val (240 cells) for weighted F1 ...``;
        for a multi-class point, which has no threshold, only the temperature's origin (``by train``)."""
        if not self.binary:
            fitted = f" fitted on {self.split} ({self.n_cells} cells)" if self.split else ""
            scaling = f"temperature {self.temperature:.3f}{fitted}, " if self.temperature != 1.0 else ""
            return f"{scaling}by {self.chosen_by}"
        if self.source == "default":
            how = "default threshold"
        elif self.source == "given":
            how = "threshold given"
        else:
            goal = "best weighted F1" if self.source == "val:weighted_f1" else self.source.removeprefix("val:")
            reached = f", reaching {self.score:.4f} there" if self.score is not None else ""
            how = f"chosen on {self.split} ({self.n_cells} cells) for {goal}{reached}"
        scaling = f"; temperature {self.temperature:.3f}" if self.temperature != 1.0 else ""
        return f"{how}, by {self.chosen_by}{scaling}"

    def describe_referral(self) -> str:
        """One line on which cells are referred to a person, e.g. ``refer when 0.31 < p(ALL) < 0.72 (...)``; an empty
        band (both edges at the threshold, stored when validation met the target without referring) refers none."""
        if self.refer_band is None:
            return "no refer band: every cell is called (choose one with `blastscope evaluate --refer-error 0.05`)"
        name = class_display_name(self.positive_class)
        low, high = self.refer_band
        target = (
            f" (chosen on validation for <= {self.refer_target:.1%} errors among called cells)"
            if self.refer_target
            else ""
        )
        if low == high:  # the empty band at the threshold: validation met the target with every cell called
            met = f" (validation already met <= {self.refer_target:.1%} errors with every cell called)"
            return "refer no cell: every cell is called" + (met if self.refer_target else "")
        low_text, high_text = format_band(low, high, decimals=4)
        return f"uncertain — refer when {low_text} < p({name}) < {high_text}{target}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["refer_band"] = list(self.refer_band) if self.refer_band is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperatingPoint:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        band = known.get("refer_band")
        return cls(**{**known, "classes": tuple(data["classes"]), "refer_band": tuple(band) if band else None})


def decide(probabilities: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """Class indices for probabilities: the positive class where p(positive) >= threshold, else the other one.

    Parameters
    ----------
    probabilities : array of shape (N, C)
        Probabilities in ``point.classes`` order, already temperature-scaled (``inference.probabilities``).
    point : OperatingPoint

    Returns
    -------
    array of int64, shape (N,)
        Indices into ``point.classes``. Multi-class data takes the most probable class.

    Raises
    ------
    ValueError
        If the number of columns differs from the number of classes.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(point.classes):
        raise ValueError(f"probabilities of shape {probabilities.shape} do not fit {len(point.classes)} classes")
    if not point.binary:
        return probabilities.argmax(axis=1).astype(np.int64)
    positive = point.positive_index
    negative = 1 - positive  # type: ignore[operator]
    return np.where(probabilities[:, positive] >= point.threshold, positive, negative).astype(np.int64)


def uncertain(probabilities: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """Which cells to refer to a person: p(positive) strictly inside ``point.refer_band``.

    Parameters
    ----------
    probabilities : array of shape (N, C)
        Temperature-scaled probabilities in ``point.classes`` order.
    point : OperatingPoint

    Returns
    -------
    array of bool, shape (N,)
        All ``False`` when the point has no refer band (or is multi-class).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if point.refer_band is None or not point.binary:
        return np.zeros(len(probabilities), dtype=bool)
    low, high = point.refer_band
    p = probabilities[:, point.positive_index]
    return (p > low) & (p < high)
