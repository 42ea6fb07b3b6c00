"""Shared argument types: ``--max-pixels`` parses, and is refused, alike in ``data``, ``scan`` and ``serve``; serve's
and scan's sizes, times and counts, every ``--image-size``, every ``--threshold`` and evaluate's and compare's rates are
refused by argparse in one line naming the option, before anything loads."""

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
TRAIN, PREDICT, EVALUATE = ["train", "--data", "d"], ["predict", "run", "x.png"], ["evaluate", "run"]
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
    *((command, "--red-cell-diameter", DIAMETER, ["0", "3", "7.9", "nan"]) for command in (TRAIN, PREDICT, EVALUATE)),
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


IMAGE_SIZE = "is not an image size in pixels; give a whole number of at least 1, e.g. 224"
THRESHOLD = "is not a threshold; give a probability of the positive class from 0 to 1, e.g. 0.5"
TRAIN, COMPARE, SYNTH = ["train", "--data", "cells"], ["compare"], ["synth", "out"]
PREDICT, EVALUATE = ["predict", "run", "x.jpg"], ["evaluate", "run"]
REFUSED = (  # command, option, value, the refusal after the option
    *(
        (command, "--image-size", bad, f"{bad!r} {IMAGE_SIZE}")
        for command in (TRAIN, COMPARE, SYNTH)
        for bad in ["0", "-1", "2.5", "nan", "inf", "big"]
    ),
    *(
        (command, "--threshold", bad, f"{bad!r} {THRESHOLD}")
        for command in (PREDICT, SCAN, SERVE)
        for bad in ["nan", "inf", "-inf", "-1", "2.5", "1.0001", "abc", ""]
    ),
    *(
        (command, "--threshold", "stored", "'stored' is neither 'val' nor a number; use e.g. 0.5 or val")
        for command in (EVALUATE, COMPARE)
    ),
    *(
        (command, "--threshold", bad, f"{float(bad)} is outside [0, 1]; give a probability of the positive class")
        for command in (EVALUATE, COMPARE)
        for bad in ["nan", "inf", "-1", "2.5"]
    ),
    *(
        (command, "--refer-error", bad, f"{float(bad)} is outside (0, 1): give the error rate allowed, e.g. 0.05")
        for command in (EVALUATE, COMPARE)
        for bad in ["0", "1", "1.5", "nan", "inf"]
    ),
    *(
        (
            command,
            "--refer-error",
            "val",
            "'val' is not a number; give the error rate allowed among called cells, from 0 to 1, e.g. 0.05",
        )
        for command in (EVALUATE, COMPARE)
    ),
    *(
        (EVALUATE, "--target-sensitivity", bad, f"{float(bad)} is outside (0, 1]; use e.g. 0.95")
        for bad in ["0", "-0.5", "1.5", "nan"]
    ),
    (
        EVALUATE,
        "--target-sensitivity",
        "high",
        "'high' is not a number; give a validation sensitivity above 0 and at most 1, e.g. 0.95",
    ),
)


@pytest.mark.parametrize(
    ("command", "option", "bad", "refusal"),
    [pytest.param(*case, id=f"{case[0][0]} {case[1]}={case[2]}") for case in REFUSED],
)
def test_sizes_thresholds_and_rates_are_refused_at_parse_time_in_one_line_naming_the_option(
    command: list[str], option: str, bad: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train --image-size 0`` got as far as the data check; predict, scan and serve took ``--threshold nan`` (predict
    refused it only after loading the run, without naming the option); evaluate's and compare's words were refused in
    ``blastscope: error: ...`` after parsing."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*command, f"{option}={bad}"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == f"blastscope {command[0]}: error: argument {option}: {refusal}"


@pytest.mark.parametrize(
    ("command", "option", "given", "taken"),
    [
        (TRAIN, "--image-size", "1", 1),  # each model's own minimum is checked later, against the model
        (COMPARE, "--image-size", "224", 224),
        (SYNTH, "--image-size", "64", 64),
        *(
            (command, "--threshold", given, taken)
            for command in (PREDICT, SCAN, SERVE)
            for given, taken in [("0", 0.0), ("1", 1.0), ("0.35", 0.35), ("1e-3", 0.001)]
        ),
        *(
            (command, "--threshold", given, given)
            for command in (EVALUATE, COMPARE)
            for given in ["val", "VAL", "0.3", "0", "1"]
        ),
        (EVALUATE, "--refer-error", "0.05", 0.05),
        (COMPARE, "--refer-error", "0.1", 0.1),
        (EVALUATE, "--target-sensitivity", "1", 1.0),
    ],
)
def test_usable_sizes_thresholds_and_rates_are_taken(
    command: list[str], option: str, given: str, taken: object
) -> None:
    """Evaluate's and compare's ``--threshold`` is kept as given (``val`` or a number): the command parses it again."""
    value = getattr(build_parser().parse_args([*command, option, given]), option.lstrip("-").replace("-", "_"))
    assert value == taken and type(value) is type(taken)
