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


def test_auto_takes_every_image_as_one_persons_when_no_name_parses() -> None:
    people = group_people([Path("a/cell.png"), Path("b/other.png"), Path("c/UID_x.png")], "auto")
    assert people.ids == [ONE_PERSON] * 3
    assert people.line == "all 3 images taken as one person's: run predict once per person"
    assert group_people([Image.new("RGB", (4, 4))], "auto").ids == [ONE_PERSON]
    assert group_people([Path("cell.png")], "auto", door="serve").line == (
        "all 1 image taken as one person's: upload one person's cells per request"
    )


def test_auto_refuses_names_of_which_only_some_parse_never_pooling_named_subjects() -> None:
    with pytest.raises(
        BlastscopeError,
        match=r"^cell\.png: not a C-NMC cell name UID_<subject>_\.\.\., while the names of 3 other images give 2 "
        r"subjects, so whose cells are whose is unknown; rename it, or use --person-by folder or all$",
    ):
        group_people([*NAMED, Path("cell.png")], "auto")
    with pytest.raises(BlastscopeError, match=r"cell\.png: .* of 2 other images give subject H3, .*unknown"):
        group_people([*NAMED[:2], Path("cell.png")], "auto")
    with pytest.raises(BlastscopeError, match=r"people='folder' or 'all'$"):
        group_people([*NAMED, Path("cell.png")], "auto", door="api")
    with pytest.raises(BlastscopeError, match=r"upload one person's cells per request, named the C-NMC way or none"):
        group_people([*NAMED, Path("cell.png")], "auto", door="serve")


def test_folders_are_people_and_name_refuses_other_names() -> None:
    people = group_people(NAMED, "folder")
    assert people.ids[1] == people.ids[2] != people.ids[0]
    assert people.line == "colours normalised per person: 2 folders, each one person's"
    with pytest.raises(BlastscopeError, match=r"cell\.png: not a C-NMC cell name.*--person-by folder or all"):
        group_people([*NAMED, Path("cell.png")], "name")
    with pytest.raises(BlastscopeError, match="has no file.*--person-by all"):
        group_people([Image.new("RGB", (4, 4))], "folder")
    with pytest.raises(BlastscopeError, match=r"cell\.png: not a C-NMC cell name.*people='folder' or 'all'$"):
        group_people([*NAMED, Path("cell.png")], "name", door="api")
    with pytest.raises(BlastscopeError, match="unknown: use one of auto, name, folder, all"):
        group_people(NAMED, "subject")


def test_an_unreadable_file_without_a_cnmc_name_is_left_out_of_the_grouping() -> None:
    broken = Path("notes.png")
    people = group_people([*NAMED, broken], "auto", readable=lambda image: image != broken)
    assert people.ids == [*group_people(NAMED, "auto").ids, ONE_PERSON]
    assert people.line == "colours normalised per person: 2 subjects from C-NMC names"
    with pytest.raises(BlastscopeError, match=r"cell\.png: not a C-NMC cell name"):  # readable: still refused
        group_people([*NAMED, Path("cell.png")], "auto", readable=lambda image: True)
