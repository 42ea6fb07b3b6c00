"""C-NMC naming rules: subjects, labels from folders, contradictions, the preliminary test set's label file."""

from __future__ import annotations

from pathlib import Path

import pytest

from blastscope.data.cnmc import CnmcName, csv_text, fold_of, parse_name, read_prelim_labels, training_cell
from blastscope.errors import DataError


def test_names_parse_case_insensitively_with_subjects_upper_cased() -> None:
    assert parse_name("UID_h3_12_4_HEM.bmp") == CnmcName(subject="H3", image=12, cell=4, label="hem")
    assert parse_name("uid_11_10_1_all.webp") == CnmcName(subject="11", image=10, cell=1, label="all")
    assert parse_name("UID_11_10_all.bmp") is None
    assert parse_name("cell_01.png") is None


def test_the_folder_gives_the_class_and_must_agree_with_the_name(tmp_path: Path) -> None:
    assert training_cell(tmp_path / "fold_0" / "hem" / "UID_H3_1_1_hem.bmp").label == "hem"
    assert training_cell(tmp_path / "fold_0" / "ALL" / "UID_7_1_1_all.bmp").subject == "7"

    with pytest.raises(DataError, match=r"UID_7_1_1_hem\.bmp.*name says 'hem' but it sits in all/"):
        training_cell(tmp_path / "all" / "UID_7_1_1_hem.bmp")
    with pytest.raises(DataError, match=r"UID_7_1_1_all\.bmp: .* must sit directly in a folder named all/ or hem/"):
        training_cell(tmp_path / "cells" / "UID_7_1_1_all.bmp")
    with pytest.raises(DataError, match=r"directly in .*, not in patient1/; move it into all/"):
        training_cell(tmp_path / "all" / "patient1" / "UID_7_1_1_all.bmp")  # was told to move into all/, where it was


def test_hem_subjects_start_with_h_and_all_subjects_do_not(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"UID_7_1_1_hem\.bmp: subject id 7 contradicts its class 'hem'"):
        training_cell(tmp_path / "hem" / "UID_7_1_1_hem.bmp")
    with pytest.raises(DataError, match=r"subject id H7 contradicts its class 'all'"):
        training_cell(tmp_path / "all" / "UID_H7_1_1_all.bmp")


def test_prelim_labels_map_new_names_to_the_original_subject(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_h60_2_3_hem.bmp,2.bmp,0\n")

    parsed = read_prelim_labels(labels)

    assert parsed["1.bmp"] == CnmcName(subject="57", image=29, cell=1, label="all")
    assert parsed["2.bmp"].subject == "H60" and parsed["2.bmp"].label == "hem"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,0\n", r"line 2: UID_57_29_1_all\.bmp is labelled 0"),
        ("Patient_ID,new_names,labels\nsomething.bmp,1.bmp,1\n", r"line 2: expected Patient_ID like"),
        ("Patient_ID,new_names\nUID_57_29_1_all.bmp,1.bmp\n", r"needs the columns .* missing labels"),
        ("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_57_29_2_all.bmp,2.bmp\n", r"line 3: no labels"),
    ],
)
def test_bad_prelim_label_files_are_errors_naming_the_line(tmp_path: Path, rows: str, message: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(rows)

    with pytest.raises(DataError, match=message):
        read_prelim_labels(labels)


def test_a_label_file_that_is_not_utf8_is_an_error_naming_the_line(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,\xff.bmp,1\n")
    with pytest.raises(DataError, match=r"labels\.csv, line 2: not UTF-8"):
        read_prelim_labels(labels)


def test_fold_of_reads_the_challenge_fold_or_prelim() -> None:
    assert fold_of(Path("/d/training_data/fold_2/all/UID_1_1_1_all.bmp")) == "fold_2"
    assert fold_of(Path("/d/validation_data/C-NMC_test_prelim_phase_data/3.bmp")) == "prelim"
    assert fold_of(Path("/d/blast/x.png")) is None


def test_prelim_labels_find_files_by_their_original_names_too(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_H60_2_3_hem.bmp,2.bmp,0\n")

    parsed = read_prelim_labels(labels)

    assert parsed["uid_57_29_1_all.bmp"] == parsed["1.bmp"] == CnmcName(subject="57", image=29, cell=1, label="all")
    assert parsed["uid_h60_2_3_hem.bmp"].subject == "H60"


def test_a_name_listed_for_two_different_cells_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_H60_2_3_hem.bmp,1.bmp,0\n")

    with pytest.raises(DataError, match=r"line 3: 1\.bmp is already listed on line 2"):
        read_prelim_labels(labels)


def test_csv_text_reads_utf8_with_or_without_bom_and_utf16(tmp_path: Path) -> None:
    text = "path;label\nimages/é.png;blast\n"
    for index, data in enumerate([text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")]):
        (tmp_path / f"{index}.csv").write_bytes(data)
        assert csv_text(tmp_path / f"{index}.csv") == text
