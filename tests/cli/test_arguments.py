"""Shared argument types: ``--max-pixels`` parses, and is refused, alike in ``data``, ``scan`` and ``serve``; serve's
and scan's sizes, times and counts are refused by argparse in one line naming the option, before anything loads."""

from __future__ import annotations

import pytest

from blastscope.cli import build_parser
from blastscope.cli._arguments import MAX_PIXEL_LIMIT, MIN_RED_CELL_DIAMETER
from blastscope.segmentation.settings import DEFAULT_SETTINGS, red_cell_area

COMMANDS = (
    ["data", "inspect", "cells"],
    ["data", "split", "cells", "--out", "s.csv"],
    ["scan", "run", "x.jpg"],
    ["serve", "run"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("spelling", ["50000000", "5e7", "50e6", "5E+07"])
def test_max_pixels_takes_a_whole_number_in_digits_or_e_notation(command: list[str], spelling: str) -> None:
    value = build_parser().parse_args([*command, "--max-pixels", spelling]).max_pixels
    assert value == 50_000_000 and isinstance(value, int)


@pytest.mark.parametrize("spelling", [str(2**31), "2.147483648e9"])
def test_max_pixels_takes_up_to_the_cap(spelling: str) -> None:
    value = build_parser().parse_args(["scan", "run", "x.jpg", "--max-pixels", spelling]).max_pixels
    assert value == MAX_PIXEL_LIMIT == 2**31 and isinstance(value, int)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("bad", [str(2**31 + 1), "5e9", "1e20"])
def test_max_pixels_over_the_cap_is_refused_rather_than_switching_the_bomb_guard_off(
    command: list[str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """1e20 was taken: no image is refused at that limit, whatever its header says."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*command, "--max-pixels", bad])
    assert stop.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith(
        f"error: argument --max-pixels: {bad!r} is over the largest pixel limit, 2,147,483,648 (2**31, 14-22 GiB "
        "to decode; a larger one would switch the decompression-bomb guard off); give at most 2147483648, e.g. "
        "50000000 or 5e7"
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("bad", ["0", "-5", "0.5", "1.5", "nan", "inf", "-inf", "lots", ""])
def test_max_pixels_refuses_what_is_not_a_pixel_count_in_one_line_naming_the_fix(
    command: list[str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same line in every command (scan and serve took nan, inf and fractions through their own checks, or not)."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*command, f"--max-pixels={bad}"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith(
        f"error: argument --max-pixels: {bad!r} is not a pixel count; give a whole number of pixels of at least 1, "
        "e.g. 50000000 or 5e7"
    )


SERVE, SCAN = ["serve", "run"], ["scan", "run", "x.jpg"]
SECONDS = "is not a number of seconds; give a finite number above 0, e.g."
DIAMETER = (
    "is not a red cell's diameter in pixels; give a finite number of at least 8 (below that the segmentation's "
    "smallest sizes are under a pixel), e.g. 100"
)
OPTIONS = (  # command, option, the refusal after the value, values refused
    (SERVE, "--max-file-mb", "is not a size in MB; give a finite number above 0, e.g. 20", ["0", "-1", "nan", "inf"]),
    (SERVE, "--max-decoding-mb", "is not a size in MB; give a finite number above 0, e.g. 572", ["0", "nan", "inf"]),
    (SERVE, "--decode-wait", f"{SECONDS} 10", ["0", "-0.5", "nan", "inf", "soon"]),
    (SERVE, "--request-timeout", f"{SECONDS} 60", ["0", "nan", "inf"]),
    (SERVE, "--keep-alive", f"{SECONDS} 5", ["0", "nan", "-inf"]),
    (SERVE, "--max-files", "is not a number of files; give a whole number of at least 1, e.g. 32", ["0", "-3", "1.5"]),
    (SERVE, "--predict-threads", "is not a number of threads; give a whole number of at least 1, e.g. 4", ["0", "x"]),
    (SERVE, "--port", "is not a port; give a whole number from 0 to 65535, e.g. 8000", ["-1", "65536", "70000"]),
    (SERVE, "--red-cell-diameter", DIAMETER, ["0", "-5", "3", "7.9", "nan", "inf"]),
    (SCAN, "--red-cell-diameter", DIAMETER, ["0", "-5", "3", "7.9", "nan", "inf", "big"]),
)


@pytest.mark.parametrize(
    ("command", "option", "refusal", "bad"),
    [
        pytest.param(command, option, refusal, bad, id=f"{command[0]} {option}={bad}")
        for command, option, refusal, values in OPTIONS
        for bad in values
    ],
)
def test_a_value_that_is_no_usable_size_time_or_count_is_refused_in_one_line_naming_the_option(
    command: list[str], option: str, refusal: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused by argparse, not by each command's own check in run() ("must be positive", "above 2 px")."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*command, f"{option}={bad}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: argument {option}: {bad!r} {refusal}")


@pytest.mark.parametrize(
    ("command", "option", "given", "taken"),
    [
        (SERVE, "--max-file-mb", "0.5", 0.5),
        (SERVE, "--max-decoding-mb", "1e-3", 0.001),
        (SERVE, "--decode-wait", "0.1", 0.1),
        (SERVE, "--max-files", "1", 1),
        (SERVE, "--predict-threads", "16", 16),
        (SERVE, "--port", "0", 0),
        (SERVE, "--port", "65535", 65535),
        (SERVE, "--red-cell-diameter", "8", 8.0),
        (SCAN, "--red-cell-diameter", "8", 8.0),
        (SCAN, "--red-cell-diameter", "1e9", 1e9),  # larger than a photograph: that one is listed as not scanned
    ],
)
def test_usable_values_are_taken_as_numbers(command: list[str], option: str, given: str, taken: float) -> None:
    args = build_parser().parse_args([*command, option, given])
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    assert value == taken and type(value) is type(taken)


def test_the_red_cell_diameter_floor_is_where_the_segmentations_smallest_size_reaches_a_pixel() -> None:
    """Its smallest size, a nuclear speck, is ``fragment_area`` red-cell areas: 1 px at 8 px, under a pixel below."""
    smallest = DEFAULT_SETTINGS.fragment_area
    assert smallest * red_cell_area(MIN_RED_CELL_DIAMETER) >= 1 > smallest * red_cell_area(MIN_RED_CELL_DIAMETER - 0.1)
