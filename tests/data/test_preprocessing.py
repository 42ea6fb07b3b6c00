"""The preprocessing record: its segmentation mode, crop and input channels are checked, round-trip, and read as the
old behaviour from records written before they existed (``never``, the whole image, RGB)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed

from blastscope.data.preprocessing import (
    CHANNEL_SCALE,
    CHANNELS,
    SEGMENT_MODES,
    Preprocessing,
    scale_override_line,
    segment_override_line,
)
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


def test_crop_and_channels_default_to_the_whole_rgb_image_and_round_trip() -> None:
    assert PRE.crop_fraction == 1.0 and PRE.channels == "rgb" and CHANNELS == ("rgb", "od", "hed")
    for channels in CHANNELS:
        pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, crop_fraction=0.75, channels=channels)
        record = pre.to_dict()
        assert Preprocessing.from_dict(record) == pre
        assert record["crop_fraction"] == 0.75 and record["channels"] == channels
        assert record["channel_scale"] == list(CHANNEL_SCALE[channels]), "the channels' scaling is recorded"


def test_a_record_from_before_crop_and_channels_reads_as_the_whole_rgb_image() -> None:
    old = {"input_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "segment": "auto"}
    pre = Preprocessing.from_dict(old)
    assert (pre.crop_fraction, pre.channels, pre.segment) == (1.0, "rgb", "auto")


@pytest.mark.parametrize("fraction", [0, -0.5, 1.01, True, "0.5"])
def test_a_crop_fraction_outside_zero_to_one_is_refused(fraction: object) -> None:
    with pytest.raises(
        BlastscopeError, match=r"crop fraction .* is invalid: use a share of the shorter side in \(0, 1\]"
    ):
        Preprocessing(32, (0.5,) * 3, (0.5,) * 3, crop_fraction=fraction)  # type: ignore[arg-type]


def test_unknown_channels_are_refused() -> None:
    with pytest.raises(BlastscopeError, match="input channels 'lab' are unknown: use one of rgb, od, hed"):
        Preprocessing(32, (0.5,) * 3, (0.5,) * 3, channels="lab")


def test_the_hed_scale_is_the_largest_value_a_pixel_can_give() -> None:
    """Every uint8 colour (black excepted: it is the canvas) lands in [0, 1] and the largest reaches 1."""
    levels = np.arange(1, 256, 6, dtype=np.float64)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    scaled = rgb2hed(cube / 255.0) * np.array(CHANNEL_SCALE["hed"])
    assert scaled.min() >= 0 and 0.97 < scaled.max(axis=0).min() and scaled.max() <= 1.0 + 1e-6


def test_a_record_scaled_otherwise_than_this_version_is_refused() -> None:
    record = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, channels="od").to_dict()
    with pytest.raises(BlastscopeError, match="the run fed its network od channels scaled by .*retrain"):
        Preprocessing.from_dict({**record, "channel_scale": [0.2, 0.2, 0.2]})


def test_the_red_cell_diameter_is_measured_by_default_round_trips_and_old_records_read_as_measured() -> None:
    assert PRE.red_cell_diameter is None
    given = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, red_cell_diameter=90)
    assert given.red_cell_diameter == 90.0 and Preprocessing.from_dict(given.to_dict()) == given
    old = {key: value for key, value in PRE.to_dict().items() if key != "red_cell_diameter"}
    assert Preprocessing.from_dict(old).red_cell_diameter is None


@pytest.mark.parametrize("diameter", [0, 2, -5, float("nan"), float("inf"), "90", True])
def test_an_unusable_red_cell_diameter_is_refused(diameter: object) -> None:
    with pytest.raises(BlastscopeError, match="red-cell diameter"):
        Preprocessing(32, (0.5,) * 3, (0.5,) * 3, red_cell_diameter=diameter)  # type: ignore[arg-type]


def test_scale_override_line_only_when_the_diameter_differs() -> None:
    assert scale_override_line(90.0, 90) is None
    assert "measured on each image" in scale_override_line(None, 90)
    assert "the run was trained at 80 px" in scale_override_line(80.0, 90)
