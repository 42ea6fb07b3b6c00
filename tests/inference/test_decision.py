"""The decision rule and the refer band: labels from the threshold, referral only a flag."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint, decide, uncertain


def _point(**kwargs: object) -> OperatingPoint:
    return OperatingPoint(("ALL", "HEM"), "ALL", threshold=0.4, **kwargs)  # type: ignore[arg-type]


def test_cells_strictly_inside_the_band_are_referred_and_keep_their_label() -> None:
    point = _point(refer_band=(0.3, 0.6), refer_target=0.05)
    p_all = np.array([0.1, 0.3, 0.35, 0.45, 0.6, 0.9])
    probabilities = np.stack([p_all, 1 - p_all], axis=1)
    assert uncertain(probabilities, point).tolist() == [False, False, True, True, False, False]
    assert decide(probabilities, point).tolist() == [1, 1, 1, 0, 0, 0]
    assert "0.3000 < p(ALL) < 0.6000" in point.describe_referral()
    assert "5.0%" in point.describe_referral()


def test_no_band_refers_nothing_and_says_how_to_choose_one() -> None:
    probabilities = np.array([[0.5, 0.5], [0.41, 0.59]])
    assert not uncertain(probabilities, _point()).any()
    assert "--refer-error" in _point().describe_referral()


def test_an_empty_band_at_the_threshold_refers_nothing_and_says_so_not_as_a_rule() -> None:
    point = _point(refer_band=(0.4, 0.4), refer_target=0.2)
    assert not uncertain(np.array([[0.4, 0.6], [0.41, 0.59], [0.39, 0.61]]), point).any()
    assert point.describe_referral() == (
        "refer no cell: every cell is called (validation already met <= 20.0% errors with every cell called)"
    )


@pytest.mark.parametrize("band", [(0.5, 0.7), (0.1, 0.3), (-0.1, 0.5)])
def test_a_band_must_hold_the_threshold(band: tuple[float, float]) -> None:
    with pytest.raises(BlastscopeError, match="refer band"):
        _point(refer_band=band)


def test_the_band_survives_its_record_and_a_given_threshold_drops_it() -> None:
    point = _point(refer_band=(0.3, 0.6), refer_target=0.05)
    assert OperatingPoint.from_dict(point.to_dict()) == point
    overridden = point.with_threshold(0.7, "predict --threshold")
    assert overridden.refer_band is None and overridden.refer_target is None


@pytest.mark.parametrize("source", ["val:sensitivity>=0.95", "val:weighted_f1", "given", "default"])
def test_every_source_blastscope_writes_is_accepted(source: str) -> None:
    assert OperatingPoint(("ALL", "HEM"), "ALL", 0.4, source=source).source == source


def test_an_unknown_threshold_source_is_refused_rather_than_described_as_chosen_on_validation() -> None:
    with pytest.raises(BlastscopeError, match="threshold source 'val:f1' is unknown"):
        OperatingPoint(("ALL", "HEM"), "ALL", 0.4, source="val:f1")


def test_a_multi_class_point_describes_no_threshold_origin() -> None:
    point = OperatingPoint.default(("a", "b", "c"))
    assert point.describe() == "the most probable class (multi-class: no threshold; by train)"
    fitted = OperatingPoint(("a", "b", "c"), None, temperature=1.5, split="val", n_cells=20, chosen_by="evaluate")
    assert fitted.origin() == "temperature 1.500 fitted on val (20 cells), by evaluate"
    assert "threshold" not in fitted.origin()


def test_a_threshold_for_a_multi_class_point_is_refused_naming_who_gave_it() -> None:
    point = OperatingPoint.default(("a", "b", "c"))
    message = (
        r"^predict --threshold needs a two-class run; runs/x has 3 classes \(a, b, c\), decided by the most "
        r"probable class$"
    )
    with pytest.raises(BlastscopeError, match=message):
        point.with_threshold(0.3, "predict --threshold", "runs/x")
    given = _point().with_threshold(0.3, "predict --threshold", "runs/x")
    assert given.describe() == "ALL when p(ALL) >= 0.3000 (threshold given, by predict --threshold)"
    tiny = _point().with_threshold(0.00004, "predict --threshold", "runs/x")  # read '>= 0.0000', calling every cell
    assert tiny.describe().startswith("ALL when p(ALL) >= 4e-05 (")
