"""Grouping one call's images by person, for a run that normalises colours per person."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from blastscope.data.people import ONE_PERSON, group_people
from blastscope.errors import BlastscopeError

NAMED = [Path("a/UID_h3_1_1_hem.bmp"), Path("b/UID_H3_1_2_hem.bmp"), Path("b/UID_7_2_1_all.bmp")]


def test_cnmc_names_give_their_subjects_and_auto_takes_them() -> None:
    for person_by in ("auto", "name"):
        people = group_people(NAMED, person_by)
        assert people.ids == ["H3", "H3", "7"]
        assert people.line == "colours normalised per person: 2 subjects from C-NMC names"


def test_auto_takes_every_image_as_one_persons_when_a_name_does_not_parse() -> None:
    people = group_people([*NAMED, Path("cell.png")], "auto")
    assert people.ids == [ONE_PERSON] * 4
    assert people.line == "all 4 images taken as one person's: run predict once per person"
    assert group_people([Image.new("RGB", (4, 4))], "auto").ids == [ONE_PERSON]


def test_folders_are_people_and_name_refuses_other_names() -> None:
    people = group_people(NAMED, "folder")
    assert people.ids[1] == people.ids[2] != people.ids[0]
    assert people.line == "colours normalised per person: 2 folders, each one person's"
    with pytest.raises(BlastscopeError, match=r"cell\.png: not a C-NMC cell name.*--person-by folder or all"):
        group_people([*NAMED, Path("cell.png")], "name")
    with pytest.raises(BlastscopeError, match="has no file.*--person-by all"):
        group_people([Image.new("RGB", (4, 4))], "folder")
    with pytest.raises(BlastscopeError, match="unknown: use one of auto, name, folder, all"):
        group_people(NAMED, "subject")
