"""Plain text for terminals and summary files: tables and lists of names in words.

One aligned-column format for every table a person reads in a terminal or a ``.txt`` file (split summaries, dataset
descriptions), so that numbers line up the same way everywhere; one way to name several things in a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as aligned columns a person can scan: numbers right-aligned, words left-aligned.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : sequence of sequences
        One sequence per row, as long as ``header``; values are shown with ``str``.

    Returns
    -------
    str
        Header line then one line per row, joined by newlines, no trailing newline or trailing spaces. A column other
        than the first is right-aligned when each of its non-empty values starts with a digit.
    """
    cells = [[str(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    numeric = [
        column > 0 and all(row[column][:1].isdigit() for row in cells[1:] if row[column])
        for column in range(len(header))
    ]
    lines = [
        "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def in_words(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: several things named in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
