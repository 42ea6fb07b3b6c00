"""Whose cells are whose: grouping one call's images by person for a run that normalises colours per person.

A run trained with ``--colour-norm subject`` maps each cell's colours by the statistics of all cells of its person
(:class:`~blastscope.data.stain.SubjectColour`), so every door must know which images belong to one person. C-NMC
names carry the subject (``UID_<subject>_...``); otherwise one call's images are taken as one person's, or each
folder as one person's when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blastscope.data.cnmc import parse_name
from blastscope.errors import BlastscopeError

ONE_PERSON = ""
"""The person of every item that is not a dataset cell, unless the caller groups them: one call's images are taken
as one person's (one smear, one folder of a patient's cells)."""

PERSON_BY = ("auto", "name", "folder", "all")
"""``--person-by``: ``name`` the C-NMC subject id in each file
name; ``folder`` each file's parent folder; ``all`` every image of the call one person's; ``auto`` (default)
``name`` when every name parses, else ``all``."""


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


def group_people(images: Sequence[object], person_by: str = "auto") -> People:
    """Each of ``images`` (paths, PIL images or prepared inputs) given its person as ``person_by`` says
    (:data:`PERSON_BY`).

    Raises
    ------
    BlastscopeError
        For an unknown ``person_by``; for ``name`` when a name is not a C-NMC cell name, or ``folder`` when an image
        has no file (both name the image and the fix).
    """
    if person_by not in PERSON_BY:
        raise BlastscopeError(f"person grouping {person_by!r} is unknown: use one of {', '.join(PERSON_BY)}")
    names = [image_name(image) for image in images]
    subjects = [parse_name(Path(name).name) if name else None for name in names]
    if person_by == "name" or (person_by == "auto" and images and all(subjects)):
        for name, subject in zip(names, subjects, strict=True):
            if subject is None:
                raise BlastscopeError(
                    f"{name or 'an image without a file name'}: not a C-NMC cell name UID_<subject>_..., so its "
                    "person is unknown; rename it, or use --person-by folder or all"
                )
        ids = [subject.subject for subject in subjects]  # type: ignore[union-attr]
        count = len(set(ids))
        return People(ids, f"colours normalised per person: {count} subject{'s' * (count != 1)} from C-NMC names")
    if person_by == "folder":
        missing = [i for i, name in enumerate(names) if name is None]
        if missing:
            raise BlastscopeError(
                f"image {missing[0]} has no file, so it has no folder: use --person-by all (one person per call)"
            )
        ids = [str(Path(name).resolve().parent) for name in names]  # type: ignore[arg-type]
        count = len(set(ids))
        return People(ids, f"colours normalised per person: {count} folder{'s' * (count != 1)}, each one person's")
    count = len(images)
    return People(
        [ONE_PERSON] * count,
        f"all {count} image{'s' * (count != 1)} taken as one person's: run predict once per person",
    )
