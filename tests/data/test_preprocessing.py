"""The preprocessing record: its segmentation mode is checked, round-trips, and reads as ``never`` from records
written before segmentation existed (those runs saw their images as decoded)."""

from __future__ import annotations

import pytest

from blastscope.data.preprocessing import SEGMENT_MODES, Preprocessing, segment_override_line
from blastscope.errors import BlastscopeError

PRE = Preprocessing(224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic")


def test_segment_defaults_to_auto_and_round_trips() -> None:
    assert PRE.segment == "auto" and SEGMENT_MODES == ("auto", "always", "never")
    for mode in SEGMENT_MODES:
        pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, segment=mode)
        assert Preprocessing.from_dict(pre.to_dict()) == pre and pre.to_dict()["segment"] == mode


def test_a_record_from_before_segmentation_reads_as_never() -> None:
    old = {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}
    assert Preprocessing.from_dict(old).segment == "never"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(BlastscopeError, match="segment mode 'yes' is unknown: use one of auto, always, never"):
        Preprocessing(32, (0.5,) * 3, (0.5,) * 3, segment="yes")
    with pytest.raises(BlastscopeError, match="unknown"):
        segment_override_line("auto", "yes")


def test_override_line_only_when_the_mode_differs() -> None:
    assert segment_override_line("auto", "auto") is None
    line = segment_override_line("never", "always")
    assert line is not None and "--segment always" in line and "trained with --segment never" in line
