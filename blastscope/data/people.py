"""Whose cells are whose: grouping one call's images by person for a run that normalises colours per person.

A run trained with ``--colour-norm subject`` maps each cell's colours by the statistics of all cells of its person
(:class:`~blastscope.data.stain.SubjectColour`), so every door must know which images belong to one person. C-NMC
names carry the subject (``UID_<subject>_...``); when no name does, one call's images are taken as one person's, or
each folder as one person's when asked; a call where only some names do is refused rather than pooled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from blastscope.data.cnmc import parse_name
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError, DataError

ONE_PERSON = ""
"""The person of every item that is not a dataset cell, unless the caller groups them: one call's images are taken
as one person's (one smear, one folder of a patient's cells)."""

PERSON_BY = ("auto", "name", "folder", "all")
"""``--person-by``: ``name`` the C-NMC subject id in each file
name; ``folder`` each file's parent folder; ``all`` every image of the call one person's; ``auto`` (default)
``name`` when every name parses, ``all`` when none does, refused when only some do (never pools named subjects)."""

Door = Literal["cli", "api", "serve"]
"""Who asks: its errors and lines name its own way of choosing a grouping (``--person-by``, ``people=``, one request
per person)."""


@dataclass(frozen=True, slots=True)
class People:
    """Each image's person, and one line saying how they were grouped.

    Attributes
    ----------
    ids : list of str
        One person id per image, in order (:data:`ONE_PERSON` for ``all``).
    line : str
        E.g. ``colours normalised per person: 3 subjects from C-NMC names``.
    """

    ids: list[str]
    line: str


def image_name(image: object) -> str | None:
    """The file name an image came from (a path, or a PIL image opened from a file); None when it has none."""
    if isinstance(image, (str, Path)):
        return str(image)
    return getattr(image, "filename", "") or None  # a PIL image opened from a file


def group_people(
    images: Sequence[object],
    person_by: str = "auto",
    door: Door = "cli",
    readable: Callable[[Any], bool] | None = None,
) -> People:
    """Each of ``images`` (paths, PIL images or prepared inputs) given its person as ``person_by`` says
    (:data:`PERSON_BY`); errors and the line name ``door``'s way of choosing.

    ``readable`` (optional) says whether an image can be given to the model at all: an image whose name is not a
    C-NMC name and that cannot be read is left out of the grouping (its id is :data:`ONE_PERSON`; the caller reports
    it as unreadable), so one broken file does not stop a person's folder.

    Raises
    ------
    BlastscopeError
        For an unknown ``person_by``; for ``name`` when a name is not a C-NMC cell name, ``folder`` when an image
        has no file, or ``auto`` when some names parse and others do not (each names the image and the fix).
    """
    if person_by not in PERSON_BY:
        raise BlastscopeError(f"person grouping {person_by!r} is unknown: use one of {', '.join(PERSON_BY)}")
    names = [image_name(image) for image in images]
    subjects = [parse_name(Path(name).name) if name else None for name in names]
    if readable is not None and person_by in ("auto", "name") and any(subjects) and not all(subjects):
        broken = [i for i, subject in enumerate(subjects) if subject is None and not readable(images[i])]
        if broken:
            kept = sorted(set(range(len(images))) - set(broken))
            grouped = group_people([images[i] for i in kept], person_by, door)
            ids = [ONE_PERSON] * len(images)
            for i, person in zip(kept, grouped.ids, strict=True):
                ids[i] = person
            return People(ids, grouped.line)
    if person_by == "auto" and any(subjects) and not all(subjects):
        _refuse_mixed(names, [subject.subject if subject else None for subject in subjects], door)
    if person_by == "name" or (person_by == "auto" and images and all(subjects)):
        for name, subject in zip(names, subjects, strict=True):
            if subject is None:
                raise BlastscopeError(
                    f"{name or 'an image without a file name'}: not a C-NMC cell name UID_<subject>_..., so its "
                    f"person is unknown; rename it, or use {_choose(door, 'folder', 'all')}"
                )
        ids = [subject.subject for subject in subjects]  # type: ignore[union-attr]
        count = len(set(ids))
        return People(ids, f"colours normalised per person: {count} subject{'s' * (count != 1)} from C-NMC names")
    if person_by == "folder":
        missing = [i for i, name in enumerate(names) if name is None]
        if missing:
            raise BlastscopeError(
                f"image {missing[0]} has no file, so it has no folder: use {_choose(door, 'all')} (one person per call)"
            )
        ids = [str(Path(name).resolve().parent) for name in names]  # type: ignore[arg-type]
        count = len(set(ids))
        return People(ids, f"colours normalised per person: {count} folder{'s' * (count != 1)}, each one person's")
    count = len(images)
    once = {"cli": "run predict once per person", "api": "predict once per person", "serve": _ONE_REQUEST}[door]
    return People([ONE_PERSON] * count, f"all {count} image{'s' * (count != 1)} taken as one person's: {once}")


_ONE_REQUEST = "upload one person's cells per request"


def _refuse_mixed(names: Sequence[str | None], subjects: Sequence[str | None], door: Door) -> None:
    """``auto`` over names of which only some parse: whether the others are those subjects' cells is unknown, and
    pooling them as one person's would mix named subjects' colours, so refuse naming a file that does not parse."""
    first = next(i for i, subject in enumerate(subjects) if subject is None)
    named = sorted({subject for subject in subjects if subject is not None})
    others = sum(subject is not None for subject in subjects)
    whose = f"subject {named[0]}" if len(named) == 1 else f"{len(named)} subjects"
    fix = (
        f"{_ONE_REQUEST}, named the C-NMC way or none of them"
        if door == "serve"
        else f"rename it, or use {_choose(door, 'folder', 'all')}"
    )
    raise BlastscopeError(
        f"{names[first] or f'image {first}'}: not a C-NMC cell name UID_<subject>_..., while the names of {others} "
        f"other image{'s' * (others != 1)} give {whose}, so whose cells are whose is unknown; {fix}"
    )


def _choose(door: Door, *modes: str) -> str:
    """The groupings ``modes`` as ``door`` chooses them: ``--person-by folder or all``, ``people='folder' or 'all'``."""
    if door == "api":
        return "people=" + " or ".join(repr(mode) for mode in modes)
    return "--person-by " + " or ".join(modes)


def require_subjects(cells: Sequence[Cell], source: object, fix: str) -> None:
    """Every cell's person, before any image is read: per-person colour normalisation pools a person's cells.

    Raises
    ------
    DataError
        Naming ``source``, how many cells have no subject id, the first of them, and the ways on: C-NMC names, a
        manifest's subject column, or ``fix``.
    """
    unknown = [cell for cell in cells if cell.subject is None]
    if unknown:
        raise DataError(
            f"{source}: colours are normalised per person (--colour-norm subject), but {len(unknown)} of {len(cells)} "
            f"cells have no subject id (e.g. {unknown[0].path}); name files the C-NMC way (UID_<subject>_...) or give "
            f"a manifest with a subject column, or {fix}"
        )
