"""The leakage check every split passes before it is used: no identical file, and no subject group, on two sides.

Made, folded and read-back splits all call :func:`check_leakage`, so a split that would let a test cell (or its
person) be seen in training never reaches a model.
"""

from __future__ import annotations

from blastscope.data.split.model import PARTS, Split
from blastscope.data.table import Cell
from blastscope.errors import LeakageError


def check_leakage(split: Split) -> None:
    """Raise if an identical file, or (for subject-level splits) a subject group, sits in two parts.

    Parameters
    ----------
    split : Split
        The split to check; files are compared by content digest, not path.

    Raises
    ------
    LeakageError
        When one digest sits in two parts; for a subject-level split also when a cell has no subject id or one subject
        group sits in two parts.
    """
    file_part: dict[str, tuple[str, Cell]] = {}
    group_part: dict[str, tuple[str, Cell]] = {}
    for part, cell in split.cells():
        other = file_part.setdefault(cell.digest, (part, cell))
        if other[0] != part:
            raise LeakageError(
                f"identical files in {other[0]} and {part}: {other[1].path} and {cell.path}; "
                "make a new split with `blastscope data split`"
            )
        if not split.subject_level:
            continue
        if cell.subject is None:
            raise LeakageError(f"{cell.path} has no subject id in a subject-level split; split by image instead")
        group = split.group_of(cell)
        other = group_part.setdefault(group, (part, cell))
        if other[0] != part:
            raise LeakageError(
                f"subject group {group} sits in {other[0]} ({other[1].path.name}) and {part} ({cell.path.name}); "
                "make a new split with `blastscope data split`"
            )


def groups_in_several_parts(split: Split) -> dict[str, list[str]]:
    """Each subject group that has cells in more than one part, with those parts in part order.

    What makes a split read from CSV image-level rather than subject-level; named to the person so they can find the
    rows (cells without a subject id belong to no group and are not listed).

    Parameters
    ----------
    split : Split

    Returns
    -------
    dict of str to list of str
        Group -> its parts, groups in the order their first cell comes in the split.
    """
    parts: dict[str, set[str]] = {}
    for part, cell in split.cells():
        if cell.subject is not None:
            parts.setdefault(split.group_of(cell), set()).add(part)
    return {group: [part for part in PARTS if part in used] for group, used in parts.items() if len(used) > 1}
