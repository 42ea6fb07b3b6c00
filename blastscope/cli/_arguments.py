"""Argument types the commands share, so one option parses, and is refused, alike in each command that takes it.

Not a sub-command (the leading underscore keeps it out of ``blastscope --help``).
"""

from __future__ import annotations

import argparse
import math


def pixel_count(text: str) -> int:
    """``--max-pixels N`` of ``data``, ``scan`` and ``serve``: a whole number of pixels >= 1, as digits (50000000) or
    in e-notation (5e7, the README's 50e6); 0, negatives, fractions, nan, inf and words get the same one-line error
    from argparse, rather than each command's own check (or an ``int()`` traceback for inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value.is_integer()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a pixel count; give a whole number of pixels of at least 1, e.g. 50000000 or 5e7"
        )
    return int(text) if text.strip().isdigit() else int(value)  # digits exactly, past float's 2**53
