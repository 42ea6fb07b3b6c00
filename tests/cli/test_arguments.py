"""Shared argument types: ``--max-pixels`` parses, and is refused, alike in ``data``, ``scan`` and ``serve``."""

from __future__ import annotations

import pytest

from blastscope.cli import build_parser

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


def test_max_pixels_keeps_every_digit_of_a_count_past_floats_precision() -> None:
    assert build_parser().parse_args(["scan", "run", "x.jpg", "--max-pixels", str(2**60 + 1)]).max_pixels == 2**60 + 1


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
