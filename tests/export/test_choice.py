"""The default-variant rule on its own, from three numbers: each condition, its boundary, and the reason given."""

from __future__ import annotations

import pytest

from blastscope.export import choice
from blastscope.export.choice import F1_TOLERANCE, MIN_AGREEMENT, MIN_DECISION_CELLS, choose_default, judge

ENOUGH = MIN_DECISION_CELLS


def test_the_rule_is_the_documented_one() -> None:
    assert (MIN_DECISION_CELLS, MIN_AGREEMENT, F1_TOLERANCE) == (300, 0.99, 0.005)
    assert choice.DEFAULT_CANDIDATES == ("int8",)
    rule = choice.default_rule()
    assert rule["chosen_on"] == "val"
    assert (rule["min_decision_cells"], rule["min_agreement"], rule["f1_tolerance"]) == (300, 0.99, 0.005)
    assert "300 validation cells" in rule["text"] and "never used" in rule["text"]


def test_a_variant_meeting_all_three_conditions_is_accepted() -> None:
    verdict = judge("int8", ENOUGH, MIN_AGREEMENT, -F1_TOLERANCE)  # every boundary counts as met
    assert verdict.meets_rule and verdict.failures == ()
    assert judge("int8", 5000, 1.0, +0.01).meets_rule  # better than fp32 is fine


@pytest.mark.parametrize("n_val", [0, 18, MIN_DECISION_CELLS - 1])
def test_condition_a_too_few_validation_cells(n_val: int) -> None:
    verdict = judge("int8", n_val, 1.0 if n_val else None, 0.0 if n_val else None)
    assert not verdict.meets_rule
    expected = f"only {n_val} validation cells" if n_val else "the run has no validation cells"
    assert verdict.failures == (f"{expected} (needs >= {MIN_DECISION_CELLS})",)


def test_condition_b_labels_must_agree_with_fp32() -> None:
    verdict = judge("int8", 1000, 0.985, 0.0)
    assert not verdict.meets_rule
    assert verdict.failures == ("labels agree with fp32's on 98.5% of them (needs >= 99%)",)
    # Agreement matters on its own: errors that cancel in F1 do not make the variant the same classifier.
    assert judge("int8", 1000, 0.98, +0.002).failures == ("labels agree with fp32's on 98.0% of them (needs >= 99%)",)


def test_condition_c_f1_may_not_drop_beyond_the_tolerance() -> None:
    verdict = judge("int8", 1000, 0.995, -0.049)
    assert not verdict.meets_rule
    assert verdict.failures == (f"validation weighted F1 0.0490 below fp32's (tolerance {F1_TOLERANCE:g})",)
    assert not judge("int8", 1000, 0.995, -F1_TOLERANCE - 1e-4).meets_rule


def test_every_failed_condition_is_named() -> None:
    verdict = judge("int8", 18, 0.944, -0.049)
    assert len(verdict.failures) == 3
    assert verdict.failures[0] == f"only 18 validation cells (needs >= {MIN_DECISION_CELLS})"


@pytest.mark.parametrize(
    ("n_val", "agreement", "f1_delta"), [(-1, None, None), (10, None, 0.0), (10, 1.0, None), (10, 1.2, 0.0)]
)
def test_impossible_numbers_are_refused(n_val: int, agreement: float | None, f1_delta: float | None) -> None:
    with pytest.raises(ValueError):
        judge("int8", n_val, agreement, f1_delta)


def test_choose_default_takes_int8_only_when_it_meets_the_rule() -> None:
    good, small = judge("int8", 412, 0.998, -0.0012), judge("int8", 18, 1.0, 0.0)
    default, reason = choose_default(["fp32", "int8"], {"int8": good})
    assert default == "int8"
    assert reason == (
        "int8 is the default: 412 validation cells (>= 300), labels agree with fp32's on 99.8% (>= 99%), "
        "weighted F1 -0.0012 vs fp32 (>= -0.005)"
    )
    default, reason = choose_default(["fp32", "int8", "bf16"], {"int8": small, "bf16": small})
    assert default == "fp32"
    assert reason == "int8 not made the default: only 18 validation cells (needs >= 300); fp32 stays the default"


def test_choose_default_without_validation_cells_keeps_fp32() -> None:
    default, reason = choose_default(["fp32", "int8"], {"int8": judge("int8", 0, None, None)})
    assert default == "fp32"
    assert "the run has no validation cells" in reason and reason.endswith("fp32 stays the default")


def test_bf16_is_judged_but_never_the_default() -> None:
    default, reason = choose_default(["fp32", "bf16"], {"bf16": judge("bf16", 5000, 1.0, 0.0)})
    assert default == "fp32" and "bf16 is never made the default" in reason
    assert choose_default(["fp32"], {}) == ("fp32", "fp32 is the default: it is the only variant exported")


def test_choose_default_needs_fp32_and_every_judgement() -> None:
    with pytest.raises(ValueError, match="fp32 must be exported"):
        choose_default(["int8"], {"int8": judge("int8", 500, 1.0, 0.0)})
    with pytest.raises(ValueError, match="no judgement for int8"):
        choose_default(["fp32", "int8"], {})
