"""Argument types the commands share, so one option parses, and is refused, alike in each command that takes it.

Each refuses what is not a usable value (nan, inf, 0, negatives, words) in argparse's one-line error naming the option
(``blastscope serve: error: argument --keep-alive: '0' is not ...``), before anything loads, rather than each command
checking its values in its own words inside ``run()``.

Not a sub-command (the leading underscore keeps it out of ``blastscope --help``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from blastscope.errors import BlastscopeError

MAX_PIXEL_LIMIT = 2**31
"""The largest ``--max-pixels``: 2,147,483,648 pixels (a 46,000 px square) take 14-22 GiB to decode at the decoder's
7-11 bytes a pixel (:data:`blastscope.serving.limits.DECODING_BYTES_PER_LIMIT_PIXEL`), more memory than the machines
blastscope runs on have; a larger limit (``1e20``) would only switch the decompression-bomb guard off."""
MIN_RED_CELL_DIAMETER = 8.0
"""The smallest ``--red-cell-diameter``, px. The segmentation's sizes are fractions of it, the smallest a nuclear speck
of ``fragment_area`` (0.02) red-cell areas: 1 px at 8 px, so below that single pixels of noise count, and the scan
of one 640x480 field takes minutes (measured: 171 s at 3 px, 23 s at 8 px, 1.4 s at its own 100 px). A red cell
(7.5-8 um) under 8 px also leaves a white cell about 10 px across, too few to classify: its cut-out would be enlarged
over 12 times to C-NMC's scale."""
PIXEL_LIMIT_HELP = f"at most {MAX_PIXEL_LIMIT:,}, which already takes 14-22 GiB to decode"
"""What ``--help`` says of the cap, in each command's ``--max-pixels``."""


def _float(text: str) -> float:
    """``text`` as a float, nan for a word: every type below refuses nan, so a word gets the same one line."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def pixel_count(text: str) -> int:
    """``--max-pixels N`` of ``data``, ``scan`` and ``serve``: a whole number of pixels from 1 to
    :data:`MAX_PIXEL_LIMIT`, as digits (50000000) or in e-notation (5e7, the README's 50e6); 0, negatives, fractions,
    nan, inf, words and larger limits get the same one-line error from argparse, rather than each command's own check
    (or an ``int()`` traceback for inf)."""
    value = _float(text)
    if not (math.isfinite(value) and value >= 1 and value.is_integer()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a pixel count; give a whole number of pixels of at least 1, e.g. 50000000 or 5e7"
        )
    if value > MAX_PIXEL_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is over the largest pixel limit, {MAX_PIXEL_LIMIT:,} (2**31, 14-22 GiB to decode; a larger one "
            "would switch the decompression-bomb guard off); give at most 2147483648, e.g. 50000000 or 5e7"
        )
    return int(value)  # exact: every whole number up to 2**31 is a float


def positive_number(unit: str, example: str, *, minimum: float = 0.0, why: str = "") -> Callable[[str], float]:
    """An argparse type for a finite number above 0 (at least ``minimum`` when that is above 0): a size, a time.

    ``unit`` names what the value is ("a size in MB"), ``example`` is a usable value, and ``why`` (", ...") says why
    ``minimum`` is where it is; they make the error's one line: ``'nan' is not a size in MB; give a finite number above
    0, e.g. 20``.
    """
    bound = f"of at least {minimum:g}{why}" if minimum > 0 else "above 0"

    def parse(text: str) -> float:
        value = _float(text)
        if not (math.isfinite(value) and value > 0 and value >= minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is not {unit}; give a finite number {bound}, e.g. {example}")
        return value

    return parse


def whole_number(
    unit: str, example: str, *, minimum: int = 1, maximum: int | None = None, why: str = ""
) -> Callable[[str], int]:
    """An argparse type for a whole number from ``minimum`` (default 1: a count) to ``maximum`` (default: none).

    ``unit`` names what the value is ("a number of files") and ``why`` (", ...") says why the bounds are where they
    are; the error's one line: ``'0' is not a number of files; give a whole number of at least 1, e.g. 32``.
    """
    bound = (f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}") + why

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if not (minimum <= value and (maximum is None or value <= maximum)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {unit}; give a whole number {bound}, e.g. {example}")
        return value

    return parse


red_cell_diameter = positive_number(
    "a red cell's diameter in pixels",
    "100",
    minimum=MIN_RED_CELL_DIAMETER,
    why=" (below that the segmentation's smallest sizes are under a pixel)",
)
"""``--red-cell-diameter PX`` of every command that takes it (``scan``, ``serve``, ``predict``, ``train``,
``evaluate``): at least :data:`MIN_RED_CELL_DIAMETER` px."""


image_size = whole_number("an image size in pixels", "224")
"""``--image-size PX`` of ``train``, ``compare`` and ``synth``: refuses only what is no size (0, negatives, fractions,
nan, words). Each model's own smallest input (``min_input_size``, 8-75 px) is checked later against the model chosen
(``train``), or the size is raised to it (``compare``); ``synth`` checks that a cell can be drawn."""


def probability_threshold(text: str) -> float:
    """``--threshold P`` of ``predict``, ``scan`` and ``serve``: a finite probability of the positive class in [0, 1];
    nan, inf, numbers outside [0, 1] and words get argparse's one line naming the option, before the run loads."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:  # false for nan
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a threshold; give a probability of the positive class from 0 to 1, e.g. 0.5"
        )
    return value


def _checked(option: str, check: Callable[[], object]) -> None:
    """Run a library's own check of ``option``'s value: its one-line ``BlastscopeError`` (``--threshold 'x' is ...``)
    becomes argparse's (``argument --threshold: 'x' is ...``), without the option named twice."""
    try:
        check()
    except BlastscopeError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"{option} ")) from None


def _number(text: str, wanted: str) -> float:
    """``text`` as a float, or argparse's one line for a word: ``'x' is not a number; give {wanted}``."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {wanted}") from None


def threshold_choice(text: str) -> str:
    """``--threshold val|X`` of ``evaluate`` and ``compare``, checked by
    :func:`~blastscope.evaluation.threshold.parse_threshold` itself (one rule, one wording) and kept as given:
    the commands parse it again where they use it."""
    from blastscope.evaluation.threshold import parse_threshold  # numpy and sklearn: only when the option is given

    _checked("--threshold", lambda: parse_threshold(text))
    return text


def refer_error(text: str) -> float:
    """``--refer-error E`` of ``evaluate`` and ``compare``: an error rate in (0, 1), as
    :func:`~blastscope.evaluation.referral.check_refer_error` checks it."""
    from blastscope.evaluation.referral import check_refer_error

    value = _number(text, "the error rate allowed among called cells, from 0 to 1, e.g. 0.05")
    _checked("--refer-error", lambda: check_refer_error(value))
    return value


def target_sensitivity(text: str) -> float:
    """``--target-sensitivity S`` of ``evaluate``: a sensitivity in (0, 1], as
    :func:`~blastscope.evaluation.threshold.check_target_sensitivity` checks it."""
    from blastscope.evaluation.threshold import check_target_sensitivity

    value = _number(text, "a validation sensitivity above 0 and at most 1, e.g. 0.95")
    _checked("--target-sensitivity", lambda: check_target_sensitivity(value))
    return value
