"""Which exported variant ``predict`` and ``serve`` use by default: a rule that can decide, or fp32.

The rule (``DEFAULT_RULE``) compares each faster variant with fp32 on the run's validation cells, deciding every cell
at the run's operating point (``inference.decision.decide``). A variant in ``DEFAULT_CANDIDATES`` becomes the default
only when all three hold:

(a) at least ``MIN_DECISION_CELLS`` validation cells exist. One changed label moves weighted F1 by about 1/n, so on
    fewer cells a single cell outweighs ``F1_TOLERANCE`` and the comparison cannot tell the variants apart (on 18
    cells one label is 0.056, ten times the tolerance);
(b) its labels agree with fp32's on at least ``MIN_AGREEMENT`` of those cells, so it is the same classifier cell by
    cell, not one whose errors happen to cancel in an aggregate score;
(c) its validation weighted F1 is at most ``F1_TOLERANCE`` below fp32's (being better is fine).

Otherwise fp32 stays the default, and the reason says which conditions failed. The choice never looks at the test
split (its numbers are recorded for information only); a run without validation cells keeps fp32.

Everything here is pure: :func:`judge` decides from three numbers, :func:`choose_default` from the judgements, so the
rule is testable without exporting a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_DECISION_CELLS = 300
"""Validation cells needed before a variant other than fp32 may become the default (condition a)."""
MIN_AGREEMENT = 0.99
"""Share of validation cells on which the variant's label must equal fp32's (condition b)."""
F1_TOLERANCE = 0.005
"""How far the variant's validation weighted F1 may fall below fp32's (condition c)."""
DEFAULT_CANDIDATES = ("int8",)
"""Variants that may replace fp32 as the default, preferred in this order (fastest first). bf16 is judged and
recorded but never the default: ONNX Runtime's CPU provider computes it in fp32, so it is no faster than fp32."""
REFERENCE = "fp32"
_ROUNDING = 1e-9
"""Slack for float rounding at the boundaries (a delta of exactly -F1_TOLERANCE passes)."""


def default_rule() -> dict[str, object]:
    """The rule as export.json records it: its thresholds (as in force now) and one sentence stating it."""
    return {
        "chosen_on": "val",
        "reference": REFERENCE,
        "candidates": list(DEFAULT_CANDIDATES),
        "min_decision_cells": MIN_DECISION_CELLS,
        "min_agreement": MIN_AGREEMENT,
        "f1_tolerance": F1_TOLERANCE,
        "text": (
            f"a variant among {', '.join(DEFAULT_CANDIDATES)} becomes the default only when the run has at least "
            f"{MIN_DECISION_CELLS} validation cells, its labels agree with fp32's on at least {MIN_AGREEMENT:.0%} of "
            f"them and its validation weighted F1 is at most {F1_TOLERANCE:g} below fp32's, all decided at the run's "
            "operating point; otherwise fp32. The test split is never used for the choice."
        ),
    }


@dataclass(frozen=True, slots=True)
class Judgement:
    """Whether one variant may replace fp32 as the default, and if not, why.

    Attributes
    ----------
    variant : str
    meets_rule : bool
        All three conditions hold.
    failures : tuple of str
        One phrase per failed condition, e.g. ``"only 18 validation cells (needs >= 300)"``; empty when it meets them.
    evidence : str
        The three numbers as a phrase, for the reason of a variant that meets the rule.
    """

    variant: str
    meets_rule: bool
    failures: tuple[str, ...]
    evidence: str


def judge(variant: str, n_val: int, agreement: float | None, f1_delta: float | None) -> Judgement:
    """Apply the rule's three conditions to one variant's validation numbers.

    Parameters
    ----------
    variant : str
        The variant's name (``int8``, ``bf16``), used in the phrases.
    n_val : int
        Number of validation cells both models were decided on; 0 when the run has no validation split.
    agreement : float or None
        Share in [0, 1] of those cells where the variant's label equals fp32's; ``None`` without validation cells.
    f1_delta : float or None
        The variant's validation weighted F1 minus fp32's (negative: worse); ``None`` without validation cells.

    Returns
    -------
    Judgement
        ``meets_rule`` is true only when every condition holds; ``failures`` lists every condition that does not.

    Raises
    ------
    ValueError
        For a negative ``n_val``, an agreement outside [0, 1], or missing numbers when ``n_val`` is positive.
    """
    if n_val < 0:
        raise ValueError(f"n_val must be >= 0, not {n_val}")
    if n_val and (agreement is None or f1_delta is None):
        raise ValueError("agreement and f1_delta are needed when there are validation cells")
    if agreement is not None and not 0.0 <= agreement <= 1.0:
        raise ValueError(f"agreement must be a share in [0, 1], not {agreement}")
    failures = []
    if n_val == 0:
        failures.append(f"the run has no validation cells (needs >= {MIN_DECISION_CELLS})")
    elif n_val < MIN_DECISION_CELLS:
        failures.append(f"only {n_val} validation cells (needs >= {MIN_DECISION_CELLS})")
    if agreement is not None and agreement < MIN_AGREEMENT - _ROUNDING:
        failures.append(f"labels agree with fp32's on {agreement:.1%} of them (needs >= {MIN_AGREEMENT:.0%})")
    if f1_delta is not None and f1_delta < -F1_TOLERANCE - _ROUNDING:
        failures.append(f"validation weighted F1 {-f1_delta:.4f} below fp32's (tolerance {F1_TOLERANCE:g})")
    evidence = (
        f"{n_val} validation cells (>= {MIN_DECISION_CELLS}), labels agree with fp32's on {agreement:.1%} "
        f"(>= {MIN_AGREEMENT:.0%}), weighted F1 {f1_delta:+.4f} vs fp32 (>= -{F1_TOLERANCE:g})"
        if n_val
        else "no validation cells"
    )
    return Judgement(variant, not failures, tuple(failures), evidence)


def choose_default(exported: Sequence[str], judgements: Mapping[str, Judgement]) -> tuple[str, str]:
    """The default variant among those exported, and one line saying why.

    Parameters
    ----------
    exported : sequence of str
        The variants written, fp32 among them.
    judgements : mapping of str to Judgement
        :func:`judge`'s answer for every exported variant other than fp32.

    Returns
    -------
    default : str
        The first of ``DEFAULT_CANDIDATES`` that was exported and meets the rule, else ``"fp32"``.
    reason : str
        E.g. ``"int8 not made the default: only 18 validation cells (needs >= 300); fp32 stays the default"``.

    Raises
    ------
    ValueError
        If fp32 is not among ``exported`` or an exported variant has no judgement.
    """
    if REFERENCE not in exported:
        raise ValueError(f"{REFERENCE} must be exported: it is the reference every variant is judged against")
    missing = [variant for variant in exported if variant != REFERENCE and variant not in judgements]
    if missing:
        raise ValueError(f"no judgement for {', '.join(missing)}")
    candidates = [variant for variant in DEFAULT_CANDIDATES if variant in exported]
    for variant in candidates:
        if judgements[variant].meets_rule:
            return variant, f"{variant} is the default: {judgements[variant].evidence}"
    if candidates:
        first = judgements[candidates[0]]
        return REFERENCE, f"{first.variant} not made the default: {'; '.join(first.failures)}; fp32 stays the default"
    others = [variant for variant in exported if variant != REFERENCE]
    if others:
        return REFERENCE, (
            f"fp32 is the default: {', '.join(others)} is never made the default (ONNX Runtime's CPU provider "
            "computes it in fp32, so it is no faster)"
        )
    return REFERENCE, "fp32 is the default: it is the only variant exported"
