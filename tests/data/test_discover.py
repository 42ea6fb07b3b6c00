"""scan_dataset on small fake trees of every layout, every kind of bad input, and the real C-NMC cells."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from blastscope.data.discover import merged_groups, scan_dataset, subject_groups
from blastscope.data.synth import synthesize
from blastscope.data.table import CellTable
from blastscope.errors import DataError

PRELIM = "validation_data/C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
FINAL = "testing_data/C-NMC_test_final_phase_data"


def _cell(path: Path, seed: int, size: int = 8) -> Path:
    """A tiny image whose bytes differ for every seed, so that only deliberate copies are duplicates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _cnmc_tree(root: Path, top: str = "training_data", suffix: str = ".bmp") -> Path:
    """Two ALL and two HEM subjects in two folds, three cells each; subject ``h4`` written in lower case."""
    seed = 0
    for fold, subjects in (("fold_0", ("1", "H3")), ("fold_1", ("2", "h4"))):
        for subject in subjects:
            label = "hem" if subject.upper().startswith("H") else "all"
            for cell in range(3):
                seed += 1
                _cell(root / top / fold / label / f"UID_{subject}_1_{cell}_{label}{suffix}", seed)
    return root


def _add_prelim(root: Path) -> None:
    _cell(root / PRELIM / "1.bmp", 101)
    _cell(root / PRELIM / "2.bmp", 102)
    (root / PRELIM_LABELS).write_text(
        "Patient_ID,new_names,labels\nUID_57_29_1_all.bmp,1.bmp,1\nUID_H60_2_3_hem.bmp,2.bmp,0\n"
    )
    _cell(root / FINAL / "1.bmp", 103)
    _cell(root / FINAL / "2.bmp", 104)


@pytest.mark.parametrize(
    ("top", "suffix"), [("training_data", ".bmp"), ("train", ".png"), ("C-NMC_Leukemia/x", ".webp")]
)
def test_cnmc_layout_is_recognised_whatever_the_folders_above(tmp_path: Path, top: str, suffix: str) -> None:
    table = scan_dataset(_cnmc_tree(tmp_path, top, suffix))

    assert table.kind == "cnmc"
    assert table.classes == ("hem", "all")
    assert Counter(cell.label for cell in table.cells) == {"all": 6, "hem": 6}
    assert {cell.subject for cell in table.cells} == {"1", "2", "H3", "H4"}
    assert len({cell.digest for cell in table.cells}) == 12
    assert table.image_sizes == {(8, 8): 12}


def test_prelim_cells_join_the_pool_and_the_final_test_set_is_left_out(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    _add_prelim(tmp_path)

    table = scan_dataset(tmp_path)

    prelim = {cell.path.name: cell for cell in table.cells if "prelim" in str(cell.path)}
    assert (prelim["1.bmp"].subject, prelim["1.bmp"].label, prelim["1.bmp"].fixed_split) == ("57", "all", None)
    assert (prelim["2.bmp"].subject, prelim["2.bmp"].label) == ("H60", "hem")
    assert len(table.cells) == 14
    assert not any("final" in str(cell.path) for cell in table.cells)
    assert any("2 unlabelled images in C-NMC_test_final_phase_data/" in note for note in table.notes)


def test_prelim_cells_can_be_pinned_to_the_test_part(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    _add_prelim(tmp_path)

    table = scan_dataset(tmp_path, prelim="test")

    pinned = [cell for cell in table.cells if cell.fixed_split == "test"]
    assert sorted(cell.path.name for cell in pinned) == ["1.bmp", "2.bmp"]
    with pytest.raises(DataError, match="prelim must be one of pool, test"):
        scan_dataset(tmp_path, prelim="train")


def test_prelim_images_missing_from_the_label_file_are_skips(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    _add_prelim(tmp_path)
    _cell(tmp_path / PRELIM / "3.bmp", 105)

    table = scan_dataset(tmp_path)

    assert [(path.name, "not listed" in reason) for path, reason in table.skipped] == [("3.bmp", True)]


def test_identical_files_count_once_and_link_their_subjects(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    source = tmp_path / "training_data/fold_0/all/UID_1_1_0_all.bmp"
    copy = tmp_path / "training_data/fold_1/all/UID_2_9_9_all.bmp"
    shutil.copy(source, copy)

    table = scan_dataset(tmp_path)

    assert len(table.cells) == 12
    assert [(dropped.name, kept.name) for dropped, kept in table.duplicates] == [(copy.name, source.name)]
    assert subject_groups(table)["1"] == subject_groups(table)["2"] == "1+2"
    assert merged_groups(table) == ["1+2"]
    assert any("1+2" in note for note in table.notes)


def test_identical_files_with_different_labels_are_both_skipped(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    source = tmp_path / "training_data/fold_0/all/UID_1_1_0_all.bmp"
    shutil.copy(source, tmp_path / "training_data/fold_0/hem/UID_H3_9_9_hem.bmp")

    table = scan_dataset(tmp_path)

    assert len(table.skipped) == 2 and all("labelled all and hem" in reason for _, reason in table.skipped)
    assert len(table.cells) == 11


def test_a_name_contradicting_its_folder_stops_the_scan_naming_the_file(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    _cell(tmp_path / "training_data/fold_0/all/UID_H9_1_1_hem.bmp", 77)

    with pytest.raises(DataError, match=r"UID_H9_1_1_hem\.bmp: its name says 'hem' but it sits in all/"):
        scan_dataset(tmp_path)


def test_class_per_folder_uses_the_top_level_folder_at_any_depth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for index in range(3):
        _cell(tmp_path / "blast" / f"patient{index}" / "deep" / f"{index}.png", index)
        _cell(tmp_path / "normal" / f"{index}.jpg", 10 + index)
    _cell(tmp_path / "stray.png", 99)
    (tmp_path / "readme.txt").write_text("not an image, ignored")

    with caplog.at_level(logging.WARNING):
        table = scan_dataset(tmp_path)

    assert table.kind == "folders" and table.classes == ("blast", "normal")
    assert Counter(cell.label for cell in table.cells) == {"blast": 3, "normal": 3}
    assert not table.has_subjects and all(cell.subject is None for cell in table.cells)
    assert [(path.name, "not inside a class folder" in reason) for path, reason in table.skipped] == [
        ("stray.png", True)
    ]
    assert sum("no subject ids" in note for note in table.notes) == 1
    assert sum("no subject ids" in record.getMessage() for record in caplog.records) == 1


def test_manifest_reads_columns_by_name_with_paths_relative_to_the_csv(tmp_path: Path) -> None:
    _cell(tmp_path / "images" / "a.png", 1)
    _cell(tmp_path / "images" / "b.png", 2)
    _cell(tmp_path / "images" / "c.tif", 3)
    manifest = tmp_path / "cells.csv"
    manifest.write_text(
        "stain,label,path,subject\nx,blast,images/a.png,p1\nx,normal,images/b.png,P2\ny,blast,images/c.tif,p1\n"
    )

    table = scan_dataset(manifest)

    assert table.kind == "manifest" and table.root == tmp_path
    assert [(cell.path.name, cell.label, cell.subject) for cell in table.cells] == [
        ("a.png", "blast", "P1"),
        ("b.png", "normal", "P2"),
        ("c.tif", "blast", "P1"),
    ]


def test_manifest_takes_subjects_from_cnmc_names_when_it_has_no_subject_column(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    manifest = tmp_path / "MANIFEST.csv"
    manifest.write_text(
        "path,label\ntraining_data/fold_0/all/UID_1_1_0_all.bmp,all\ntraining_data/fold_0/hem/UID_H3_1_0_hem.bmp,hem\n"
    )

    table = scan_dataset(manifest)

    assert table.classes == ("hem", "all")
    assert sorted(cell.subject for cell in table.cells) == ["1", "H3"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("path,label\nimages/gone.png,blast\n", r"cells\.csv, line 2: .*gone\.png does not exist"),
        (
            "path,label\nimages/blast/a.png,normal\nimages/normal/b.png,blast\n",
            r"line 2: a\.png is labelled 'normal' but sits in blast/",
        ),
        (
            "path,label\ntraining_data/fold_0/all/UID_1_1_0_all.bmp,hem\n",
            r"line 2: UID_1_1_0_all\.bmp is labelled 'hem' but its name says 'all'",
        ),
        (
            "path,label,subject\ntraining_data/fold_0/all/UID_1_1_0_all.bmp,all,7\n",
            r"has subject '7' but its name says '1'",
        ),
        ("file,class\nimages/blast/a.png,blast\n", r"needs the columns path and label .* missing label, path"),
        ("path,label\n", r"lists no images"),
        (
            "path,label\nimages/blast/a.png,blast\nimages/normal/b.png,normal\n./images/blast/a.png,normal\n",
            r"cells\.csv, lines 2 and 4: both list .*a\.png; keep one row per file",
        ),
        ("path,label\nimages/blast/a.png,blast\nimages/normal/b.png\n", r"cells\.csv, line 3: no label column"),
    ],
)
def test_bad_manifests_are_one_line_errors_naming_the_csv(tmp_path: Path, rows: str, message: str) -> None:
    _cnmc_tree(tmp_path)
    _cell(tmp_path / "images" / "blast" / "a.png", 1)
    _cell(tmp_path / "images" / "normal" / "b.png", 2)
    (tmp_path / "cells.csv").write_text(rows)

    with pytest.raises(DataError, match=message) as error:
        scan_dataset(tmp_path / "cells.csv")
    assert "\n" not in str(error.value)


def test_a_manifest_that_is_not_utf8_is_a_one_line_error_naming_the_line(tmp_path: Path) -> None:
    _cell(tmp_path / "images" / "blast" / "a.png", 1)
    (tmp_path / "cells.csv").write_bytes(b"path,label\nimages/blast/a.png,blast\nimages/\xff\xfe.png,blast\n")
    with pytest.raises(DataError, match=r"cells\.csv, line 3: not UTF-8") as error:
        scan_dataset(tmp_path / "cells.csv")
    assert "\n" not in str(error.value)


def test_unreadable_files_are_counted_skips_with_reasons(tmp_path: Path) -> None:
    for index in range(2):
        _cell(tmp_path / "blast" / f"{index}.png", index)
        _cell(tmp_path / "normal" / f"{index}.png", 10 + index)
    (tmp_path / "blast" / "empty.png").write_bytes(b"")
    (tmp_path / "blast" / "text.jpg").write_text("not an image")
    whole = _cell(tmp_path / "normal" / "whole.png", 50, size=32).read_bytes()
    (tmp_path / "normal" / "cut.png").write_bytes(whole[: len(whole) // 2])
    _cell(tmp_path / "normal" / "huge.png", 51, size=40)

    table = scan_dataset(tmp_path, max_pixels=1024)

    reasons = {path.name: reason for path, reason in table.skipped}
    assert sorted(reasons) == ["cut.png", "empty.png", "huge.png", "text.jpg"]
    assert "empty file" in reasons["empty.png"]
    assert "not a BMP, PNG, JPEG, TIFF or WebP image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.png"]
    assert "--max-pixels" in reasons["huge.png"]
    assert len(table.cells) == 5


def test_pipes_device_links_huge_files_and_unlistable_folders_are_listed_skips(
    tmp_path: Path,
    special_files: Callable[[Path], dict[Path, str]],
    returns_within: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = [
        _cell(tmp_path / label / f"{index}.png", seed)
        for seed, (label, index) in enumerate([("blast", 0), ("blast", 1), ("normal", 0), ("normal", 1)])
    ]
    reasons = special_files(tmp_path / "blast")
    locked = tmp_path / "normal" / "locked"
    _cell(locked / "2.png", 9)
    scandir = os.scandir

    def refuse_locked(path: object = ".") -> object:  # as chmod 000 does for anyone but root
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    table = returns_within(20, scan_dataset, tmp_path)

    assert [cell.path for cell in table.cells] == good
    assert table.classes == ("blast", "normal")
    skipped = dict(table.skipped)
    assert sorted(skipped) == sorted([*reasons, locked])
    assert all(skipped[path].startswith(reason) for path, reason in reasons.items())
    assert "Permission denied" in skipped[locked]


def test_a_manifest_row_naming_a_pipe_is_a_counted_skip_not_a_hang(
    tmp_path: Path, special_files: Callable[[Path], dict[Path, str]], returns_within: Callable[..., Any]
) -> None:
    _cell(tmp_path / "images" / "a.png", 1)
    _cell(tmp_path / "images" / "b.png", 2)
    reasons = special_files(tmp_path / "images")
    rows = ["images/a.png,blast", "images/b.png,normal", *(f"images/{path.name},blast" for path in reasons)]
    (tmp_path / "cells.csv").write_text("path,label\n" + "\n".join(rows) + "\n")

    table = returns_within(20, scan_dataset, tmp_path / "cells.csv")

    assert len(table.cells) == 2
    assert {path.name: reason.split(";")[0] for path, reason in table.skipped} == {
        path.name: reason for path, reason in reasons.items()
    }


def _missing(root: Path) -> Path:
    return root / "nowhere"


def _one_class(root: Path) -> Path:
    _cell(root / "blast" / "a.png", 1)
    return root


def _one_class_and_an_empty_one(root: Path) -> Path:
    _cell(root / "blast" / "a.png", 1)
    (root / "normal").mkdir()
    return root


def _one_class_and_one_of_empty_folders(root: Path) -> Path:
    _cell(root / "blast" / "a.png", 1)
    (root / "normal" / "day1").mkdir(parents=True)  # a class folder holding only folders, none with an image
    return root


def _one_cnmc_class(root: Path) -> Path:
    return _cnmc_tree(root) / "training_data" / "fold_0" / "all"


def test_a_lone_wrapper_folder_holding_the_class_folders_is_named_to_point_at(tmp_path: Path) -> None:
    """data/{ALL,HEM} was told to move ALL/ up, which would leave HEM/ behind."""
    root = _images_in(tmp_path / "L7", "data/ALL", "data/HEM")

    with pytest.raises(DataError, match=r"the one top-level folder, data/, holds the class folders") as error:
        scan_dataset(root)
    assert "(ALL, HEM) and no image beside them" in str(error.value) and "move" not in str(error.value)
    assert str(error.value).endswith(f"; point at {root / 'data'}")
    assert scan_dataset(root / "data").classes == ("ALL", "HEM")  # the advice works


def _one_class_and_ones_dropped_as_identical_under_two_classes(root: Path) -> Path:
    _cell(root / "ALL" / "a.png", 1)
    for folder in ("HEM", "unlabelled"):
        _cell(root / folder / "b.png", 2)  # the same bytes under two classes: both copies dropped
    return root


def _only_unreadable(root: Path) -> Path:
    for label in ("blast", "normal"):
        (root / label).mkdir()
        (root / label / "a.png").write_bytes(b"")
    return root


def _not_csv(root: Path) -> Path:
    return _cell(root / "a.png", 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, r"nowhere does not exist"),
        (lambda root: root, r"holds no images"),
        (_one_class, r"only one class \(blast\) found; a classifier"),
        (_one_class_and_an_empty_one, r"only one class \(blast\) found \(normal/ holds no readable image\); "),
        (_one_class_and_one_of_empty_folders, r"only one class \(blast\) found \(normal/ holds no readable image\)"),
        (  # was: "HEM/, unlabelled/ hold no readable image"
            _one_class_and_ones_dropped_as_identical_under_two_classes,
            r"only one class \(ALL\) found \(the images in HEM/, unlabelled/ were dropped as identical files under "
            r"two classes\); ",
        ),
        (_one_cnmc_class, r"only one class \(all\) found"),
        (_only_unreadable, r"no readable images; 2 files skipped \(first: .*a\.png: empty file"),
        (_not_csv, r"a\.png is a file but not a \.csv manifest"),
    ],
)
def test_unusable_datasets_stop_with_one_line_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)

    with pytest.raises(DataError, match=message) as error:
        scan_dataset(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("make", [_one_class, _one_cnmc_class])
def test_one_class_is_enough_for_data_only_scored_but_not_for_a_split(tmp_path: Path, make) -> None:
    path = make(tmp_path)

    assert len(scan_dataset(path, for_splits=False).classes) == 1  # `evaluate --data`: one new person's cells
    with pytest.raises(DataError, match="only one class"):
        scan_dataset(path)


@pytest.fixture(scope="module")
def dev_table(cnmc_dev: Path) -> CellTable:
    return scan_dataset(cnmc_dev)


@pytest.mark.integration
def test_cnmc_dev_has_6371_distinct_cells_41_subjects_and_three_merged_groups(dev_table: CellTable) -> None:
    table = dev_table

    assert table.kind == "cnmc" and table.classes == ("hem", "all")
    assert len(table.cells) == 6371 and len(table.duplicates) == 32 and not table.skipped
    assert Counter(cell.label for cell in table.cells) == {"all": 4227, "hem": 2144}
    assert len({cell.subject for cell in table.cells}) == 41
    assert merged_groups(table) == ["51+75+78", "H2+H4+H5", "H3+H10"]
    assert len(set(subject_groups(table).values())) == 36


@pytest.mark.integration
def test_cnmc_dev_manifest_agrees_with_the_folder_scan(cnmc_dev: Path, dev_table: CellTable) -> None:
    by_manifest = scan_dataset(cnmc_dev / "MANIFEST.csv")

    assert by_manifest.kind == "manifest"
    assert {(c.digest, c.label, c.subject) for c in by_manifest.cells} == {
        (c.digest, c.label, c.subject) for c in dev_table.cells
    }


@pytest.mark.integration
def test_cnmc_sample_has_52_cells_of_26_subjects(cnmc_sample: Path) -> None:
    table = scan_dataset(cnmc_sample)

    assert len(table.cells) == 52 and not table.duplicates and not table.skipped
    assert Counter(cell.label for cell in table.cells) == {"all": 26, "hem": 26}
    assert len({cell.subject for cell in table.cells}) == 26


@pytest.mark.parametrize(
    ("tree", "first"),
    [
        ({"variantA": ("all", "hem"), "variantB": ("all", "hem")}, "variantA"),
        ({"train": ("a", "b"), "test": ("A", "b"), "val": ("a", "B")}, "test"),
    ],
)
def test_top_level_folders_that_repeat_the_class_folders_are_refused(
    tmp_path: Path, tree: dict[str, tuple[str, ...]], first: str
) -> None:
    seed = 0
    for top, classes in tree.items():
        for label in classes:
            for index in range(2):
                seed += 1
                _cell(tmp_path / top / label / f"cell{index}.png", seed)

    with pytest.raises(DataError, match="holds the same class folders") as error:
        scan_dataset(tmp_path)
    assert f"point at one of them, e.g. {tmp_path / first}" in str(error.value)
    assert "\n" not in str(error.value)


def test_folders_per_person_holding_the_class_folders_are_told_to_use_a_manifest_with_subjects(tmp_path: Path) -> None:
    """patient1/{ALL,HEM}, patient2/{ALL,HEM} was told to point at patient1, dropping the other person."""
    root = _repeated_tree(tmp_path / "L5", {"patient1": ("ALL", "HEM"), "patient2": ("ALL", "HEM")})

    with pytest.raises(DataError, match="holds the same class folders") as error:
        scan_dataset(root)
    message = str(error.value)
    assert "CSV manifest with path,label,subject columns (subject: the top-level folder)" in message
    assert f"only if they are copies of one dataset, point at one of them, e.g. {root / 'patient1'}" in message
    rows = [f"{file.relative_to(root).as_posix()},{file.parts[-2]},{file.parts[-3]}" for file in root.rglob("*.png")]
    (root / "cells.csv").write_text("path,label,subject\n" + "\n".join(rows) + "\n")
    table = scan_dataset(root / "cells.csv")  # the advice works: every person's cells, with their subject
    assert len(table.cells) == 8 and {cell.subject for cell in table.cells} == {"PATIENT1", "PATIENT2"}


def _repeated_tree(root: Path, tree: dict[str, tuple[str, ...]]) -> Path:
    seed = 0
    for top, subfolders in tree.items():
        for subfolder in subfolders:
            for index in range(2):
                _cell(root / top / subfolder / f"cell{index}.png", seed := seed + 1)
    return root


def test_class_folders_holding_the_same_session_folders_are_classes(tmp_path: Path) -> None:
    table = scan_dataset(_repeated_tree(tmp_path, {"Blast": ("day1", "day2"), "Normal": ("day1", "Day2")}))

    assert table.kind == "folders" and table.classes == ("Blast", "Normal")
    assert Counter(cell.label for cell in table.cells) == {"Blast": 4, "Normal": 4}


@pytest.mark.parametrize(
    "tree",
    [
        {"Blast": ("all", "hem"), "Normal": ("all", "hem")},  # the subfolders read as classes too
        {"blast_v1": ("day1", "day2"), "blast_v2": ("day1", "day2")},  # two copies of one class
        {"run1": ("day1", "day2"), "run2": ("day1", "day2")},  # no top-level name reads as a class
        {"blast": ("day1", "day2"), "mono": ("day1", "day2")},  # one of them does not
    ],
    ids=["class-subfolders", "same-class-copies", "no-class-names", "one-unknown-name"],
)
def test_repeated_subfolders_are_refused_unless_the_top_folders_are_surely_classes(
    tmp_path: Path, tree: dict[str, tuple[str, ...]]
) -> None:
    with pytest.raises(DataError, match="holds the same class folders"):
        scan_dataset(_repeated_tree(tmp_path, tree))


def test_class_folders_holding_the_same_parts_are_refused_naming_the_layout_to_make(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"the class folders \(ALL, HEM\) each hold the same dataset parts") as error:
        scan_dataset(_repeated_tree(tmp_path, {"ALL": ("train", "test"), "HEM": ("train", "test")}))
    # was: "point at one of them, e.g. ALL", which then took the parts test and train for the classes
    assert f"rearrange as {tmp_path / 'test' / 'ALL'}/... and point at {tmp_path / 'test'}" in str(error.value)
    assert "\n" not in str(error.value)


def test_top_level_folders_named_as_parts_are_refused_even_when_a_part_lacks_a_class(tmp_path: Path) -> None:
    tree = {"train": ("blast", "mono", "normal"), "Validation": ("blast", "normal"), "test_set": ("mono", "normal")}
    seed = 0
    for top, classes in tree.items():
        for label in classes:
            _cell(tmp_path / top / label / "cell.png", seed := seed + 1)

    with pytest.raises(DataError, match="named as dataset parts") as error:  # was: three classes train, test_set, ...
        scan_dataset(tmp_path)
    assert f"point at one of them, e.g. {tmp_path / 'Validation'}" in str(error.value)
    assert "(blast, mono, normal)" in str(error.value) and "\n" not in str(error.value)


def test_class_folders_with_their_own_subfolders_are_still_classes(tmp_path: Path) -> None:
    for label, seed in (("blast", 0), ("normal", 10)):
        for patient in ("p1", f"{label}-p2"):
            _cell(tmp_path / label / patient / "a.png", seed := seed + 1)

    assert scan_dataset(tmp_path).classes == ("blast", "normal")


def _images_in(root: Path, *folders: str) -> Path:
    for seed, folder in enumerate(folders):
        _cell(root / folder / "cell.png", seed)
    return root


@pytest.mark.parametrize(
    ("folders", "message", "fix"),
    [
        (  # was: classes ALL and test, the HEM cells taken for a class "test"
            ("ALL", "test/HEM"),
            r"test/ is named as a dataset part and holds folders \(HEM\) beside ALL/, so it is not a class",
            "point at {root}/test if it is the dataset, or move its class folders up to {root} (e.g. {root}/HEM)",
        ),
        (  # was: one class "train"
            ("train/ALL", "train/HEM"),
            r"train/ is named as a dataset part and holds folders \(ALL, HEM\), so it is not a class",
            "point at {root}/train if it is the dataset",
        ),
        (  # was: classes train and val
            ("train", "val"),
            r"train/ is named as a dataset part, not a class, yet its images would be read as class 'train'",
            "move them into folders named after their classes, move train/ out of {root}",
        ),
        (  # was: three classes ALL, HEM and Test
            ("ALL", "HEM", "Test"),
            r"Test/ is named as a dataset part, not a class, yet its images beside ALL/, HEM/ would be read as class",
            "move Test/ out of {root}",
        ),
        (  # was: classes ALL and more
            ("ALL", "more/HEM"),
            r"more/ holds HEM/, a folder named as a class, but a cell's class is the top-level folder it sits in, so "
            r"its images would be class 'more'",
            "move HEM/ up to {root}/HEM if it is a class",
        ),
        (  # a folder per person with the class below: was classes p1 and p2
            ("p1/ALL", "p2/HEM"),
            r"p1/ holds ALL/, a folder named as a class",
            "move ALL/ up to {root}/ALL if it is a class",
        ),
        (  # a wrapper holding an image beside the class folders is no plain wrapper: the fix is as before
            ("data", "data/ALL", "data/HEM"),
            r"data/ holds ALL/, a folder named as a class",
            "move ALL/ up to {root}/ALL if it is a class",
        ),
        (  # was: the blast cells filed under normal counted as Normal
            ("Blast", "Normal", "Normal/blast"),
            r"Normal/ holds blast/, a folder named as a class",
            "move blast/ up to {root}/blast",
        ),
        (  # the subfolder's name is another top-level folder's, whatever it means
            ("cats", "dogs", "cats/Dogs"),
            r"cats/ holds Dogs/, a folder named as a class",
            "move Dogs/ up to {root}/Dogs",
        ),
    ],
    ids=[
        "class-beside-part",
        "one-part",
        "parts-holding-images",
        "part-beside-classes",
        "class-in-other",
        "person-folders",
        "wrapper-with-image",
        "class-in-class",
        "top-name-in-other",
    ],
)
def test_class_folders_mixed_with_parts_or_holding_other_classes_are_refused_in_one_line(
    tmp_path: Path, folders: tuple[str, ...], message: str, fix: str
) -> None:
    with pytest.raises(DataError, match=message) as error:
        scan_dataset(_images_in(tmp_path, *folders))
    assert fix.format(root=tmp_path) in str(error.value) and "CSV manifest (path,label)" in str(error.value)
    assert "\n" not in str(error.value)


def test_subfolders_that_agree_with_their_class_keep_it(tmp_path: Path) -> None:
    table = scan_dataset(_images_in(tmp_path, "ALL/blast_cells", "ALL", "HEM/p1", "HEM/normal-day2"))

    assert table.classes == ("ALL", "HEM") and Counter(cell.label for cell in table.cells) == {"ALL": 2, "HEM": 2}


def _mixed_synth_and_real(root: Path) -> Path:
    """One synthetic dataset (subjects 1, 2, H1, H2) and real-looking C-NMC cells of subjects 1 and H1."""
    synthesize(root / "synth", subjects_per_class=2, cells_per_subject=2, image_size=16, seed=3)
    for index in range(2):
        _cell(root / "real" / "fold_0" / "all" / f"UID_1_{index}_1_all.bmp", index)
        _cell(root / "real" / "fold_0" / "hem" / f"UID_H1_{index}_1_hem.bmp", 10 + index)
    return root


def test_synthetic_subjects_mixed_with_real_cnmc_ones_are_never_the_same_person(tmp_path: Path) -> None:
    table = scan_dataset(_mixed_synth_and_real(tmp_path))

    real = {cell.subject for cell in table.cells if "real" in cell.path.parts}
    synthetic = {cell.subject for cell in table.cells if "synth" in cell.path.parts}
    assert real == {"1", "H1"}  # was: synthetic 1 and H1 grouped with the real people 1 and H1
    assert synthetic == {"SYNTH3-1", "SYNTH3-2", "SYNTH3-H1", "SYNTH3-H2"}
    assert len(set(subject_groups(table).values())) == 6
    mixes = [note for note in table.notes if "synthetic cells" in note]
    assert mixes == [
        "8 synthetic cells (blastscope synth, seed 3) mixed with 4 other cells; their subject ids are read as "
        "SYNTH<seed>-<id> (e.g. SYNTH3-H1), so that no synthetic person is grouped with a real one or another seed's "
        "of the same id; remove them to train and score on real cells only"
    ]


def test_two_synthetic_seeds_are_different_people_and_one_alone_keeps_its_ids(tmp_path: Path) -> None:
    for seed in (0, 1):
        synthesize(tmp_path / f"seed{seed}", subjects_per_class=1, cells_per_subject=2, image_size=16, seed=seed)

    alone = scan_dataset(tmp_path / "seed0")
    assert {cell.subject for cell in alone.cells} == {"1", "H1"}  # split CSVs of synth folders stay valid
    assert not any("synthetic cells" in note for note in alone.notes)
    both = scan_dataset(tmp_path)
    assert {cell.subject for cell in both.cells} == {"SYNTH0-1", "SYNTH0-H1", "SYNTH1-1", "SYNTH1-H1"}
    assert any(
        note.startswith("8 synthetic cells (blastscope synth, seeds 0, 1) of several seeds") for note in both.notes
    )


def test_renamed_synthetic_cells_among_the_users_own_are_announced(tmp_path: Path) -> None:
    data = synthesize(tmp_path / "synth", subjects_per_class=1, cells_per_subject=2, image_size=16, seed=5)
    for index, cell in enumerate(sorted(data.rglob("*.png"))):
        (tmp_path / "mine" / cell.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(cell, tmp_path / "mine" / cell.parent.name / f"cell{index}.png")
    _images_in(tmp_path / "mine", "all", "hem")

    table = scan_dataset(tmp_path / "mine")
    assert any(
        note.startswith("4 synthetic cells (blastscope synth, seed 5) mixed with 2 other cells; remove them")
        for note in table.notes
    )


def test_cnmc_folds_at_the_root_still_scan_as_classes_all_and_hem(tmp_path: Path) -> None:
    table = scan_dataset(_cnmc_tree(tmp_path) / "training_data")  # top-level folders fold_0, fold_1, each {all,hem}

    assert table.kind == "cnmc" and table.classes == ("hem", "all") and len(table.cells) == 12


def _manifest_cells(root: Path) -> None:
    _cell(root / "images" / "blast" / "a.png", 1)
    _cell(root / "images" / "normal" / "b.png", 2)


@pytest.mark.parametrize(
    "data",
    [
        b"path;label;subject\nimages/blast/a.png;blast;p1\nimages/normal/b.png;normal;p2\n",
        b"path\tlabel\tsubject\r\nimages/blast/a.png\tblast\tp1\r\nimages/normal/b.png\tnormal\tp2\r\n",
        b"\xef\xbb\xbfpath,label,subject\r\nimages\\blast\\a.png,blast,p1\r\nimages\\normal\\b.png,normal,p2\r\n",
        b'sep=;\r\npath;label;subject\r\n.\\images\\blast\\a.png;blast;p1\r\n"images/normal/b.png";normal;p2\r\n',
        "path\tlabel\tsubject\r\nimages\\blast\\a.png\tblast\tp1\r\nimages\\normal\\b.png\tnormal\tp2\r\n".encode(
            "utf-16"
        ),
    ],
    ids=["semicolon", "tab", "bom-and-backslashes", "excel-sep-line", "utf16-tab"],
)
def test_manifests_from_spreadsheet_programs_read_like_plain_csv(tmp_path: Path, data: bytes) -> None:
    _manifest_cells(tmp_path)
    (tmp_path / "cells.csv").write_bytes(data)

    table = scan_dataset(tmp_path / "cells.csv")

    assert [(cell.path.relative_to(tmp_path).as_posix(), cell.label, cell.subject) for cell in table.cells] == [
        ("images/blast/a.png", "blast", "P1"),
        ("images/normal/b.png", "normal", "P2"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"file;class\nimages/blast/a.png;blast\n",
            r"missing label, path: its first line reads as 'file', 'class' \(split at semicolons",
        ),
        (b"path|label\nimages/blast/a.png|blast\n", r"missing label, path: its first line reads as 'path\|label'"),
        (b"path;label\nC:\\cells\\a.png;blast\n", r"line 2: C:\\cells\\a\.png is an absolute Windows path"),
        (
            b"sep=;\npath;label\nimages/blast/a.png;blast\nimages/gone.png;normal\n",
            r"line 4: .*gone\.png does not exist",
        ),
    ],
)
def test_manifest_errors_name_the_real_cause(tmp_path: Path, data: bytes, message: str) -> None:
    _manifest_cells(tmp_path)
    (tmp_path / "cells.csv").write_bytes(data)

    with pytest.raises(DataError, match=message) as error:
        scan_dataset(tmp_path / "cells.csv")
    assert "\n" not in str(error.value)


def test_prelim_images_renamed_back_to_their_original_names_are_matched_by_patient_id(tmp_path: Path) -> None:
    _cnmc_tree(tmp_path)
    _add_prelim(tmp_path)
    (tmp_path / PRELIM / "1.bmp").rename(tmp_path / PRELIM / "UID_57_29_1_all.bmp")
    (tmp_path / PRELIM / "2.bmp").rename(tmp_path / PRELIM / "uid_h60_2_3_HEM.BMP")

    table = scan_dataset(tmp_path, prelim="test")

    prelim = sorted(
        (c.path.name, c.label, c.subject, c.fixed_split) for c in table.cells if PRELIM in c.path.as_posix()
    )
    assert prelim == [("UID_57_29_1_all.bmp", "all", "57", "test"), ("uid_h60_2_3_HEM.BMP", "hem", "H60", "test")]
    assert not table.skipped
    assert any("2 preliminary test images renamed to their original names" in note for note in table.notes)


def test_prelim_images_with_original_names_are_labelled_by_name_when_the_label_file_is_missing(
    tmp_path: Path,
) -> None:
    _cnmc_tree(tmp_path)
    _add_prelim(tmp_path)
    (tmp_path / PRELIM_LABELS).unlink()
    (tmp_path / PRELIM / "1.bmp").rename(tmp_path / PRELIM / "UID_57_29_1_all.bmp")

    table = scan_dataset(tmp_path)

    prelim = [(c.path.name, c.label, c.subject) for c in table.cells if PRELIM in c.path.as_posix()]
    assert prelim == [("UID_57_29_1_all.bmp", "all", "57")]
    assert any("1 preliminary test images left out" in note for note in table.notes)


def test_one_class_however_its_folders_or_labels_are_spelled(tmp_path: Path) -> None:
    from PIL import Image

    from blastscope.data.discover import scan_dataset

    for folder, shade in (("ALL", 10), ("all", 20), ("ALL", 30), ("hem", 40)):
        (tmp_path / "root" / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (shade, shade, shade)).save(tmp_path / "root" / folder / f"c{shade}.png")
    (tmp_path / "root" / "Hem").mkdir()
    Image.new("RGB", (8, 8), (50, 50, 50)).save(tmp_path / "root" / "Hem" / "c50.png")

    table = scan_dataset(tmp_path / "root")
    assert sorted(table.classes) == ["ALL", "Hem"]  # the most frequent spelling; a tie goes to the first sorted
    assert len(table.cells) == 5 and sorted(cell.label for cell in table.cells) == ["ALL", "ALL", "ALL", "Hem", "Hem"]
    merges = [note for note in table.notes if "differ only in case" in note]
    assert merges == [
        "labels 'ALL', 'all' differ only in case: taken as one class 'ALL' (the most frequent spelling); rename them "
        "alike to fix the name",
        "labels 'Hem', 'hem' differ only in case: taken as one class 'Hem' (the most frequent spelling); rename them "
        "alike to fix the name",
    ]
