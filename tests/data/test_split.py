"""Splits keep subject groups whole, balance classes, reject leaks, round-trip through CSV, and fold for CV."""

from __future__ import annotations

import csv
import errno
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from blastscope.data.discover import scan_dataset
from blastscope.data.split import (
    Split,
    SplitContentsMissing,
    changed_cells,
    check_leakage,
    groups_in_several_parts,
    kfold_splits,
    make_split,
    read_split_csv,
    write_split_csv,
)
from blastscope.data.table import Cell, CellTable
from blastscope.errors import BlastscopeError, DataError, LeakageError

ROOT = Path("/data/cells")


def _table(
    sizes: dict[str, list[int]],
    links: list[tuple[str, str]] | None = None,
    subjects: bool = True,
    root: Path = ROOT,
) -> CellTable:
    """Cells of each class; ``sizes[label]`` lists how many cells each subject of that class has."""
    cells = []
    for label, counts in sizes.items():
        for index, count in enumerate(counts):
            subject = f"{label[0].upper()}{index}"
            for cell in range(count):
                cells.append(
                    Cell(
                        path=root / label / f"{subject}_{cell}.png",
                        label=label,
                        subject=subject if subjects else None,
                        digest=f"{label}-{subject}-{cell}",
                    )
                )
    return CellTable(root=root, cells=cells, classes=tuple(sizes), kind="folders", subject_links=list(links or []))


def _part_of(split: Split) -> dict[str, str]:
    return {cell.digest: part for part, cell in split.cells()}


def _subject_parts(split: Split) -> dict[str, set[str]]:
    parts: dict[str, set[str]] = {}
    for part, cell in split.cells():
        parts.setdefault(cell.subject, set()).add(part)
    return parts


BALANCED = {"normal": [10, 12, 8, 9, 11, 10, 7, 13, 10, 10], "blast": [20, 5, 15, 10, 12, 8, 9, 11, 14, 6]}


def test_split_keeps_subjects_whole_and_every_class_near_its_ratio() -> None:
    table = _table(BALANCED)

    split = make_split(table, seed=0)

    assert split.subject_level and split.seed == 0
    assert all(len(parts) == 1 for parts in _subject_parts(split).values())
    shares = {(share.part, share.label): share.share for share in split.shares()}
    for label in ("normal", "blast"):
        assert [round(shares[part, label], 1) for part in ("train", "val", "test")] == [0.6, 0.2, 0.2]
    assert sum(len(cells) for cells in split.parts.values()) == len(table.cells)


def test_same_seed_same_split_and_other_seeds_differ() -> None:
    table = _table(BALANCED)

    first, again = make_split(table, seed=3), make_split(table, seed=3)
    others = {make_split(table, seed=seed).hash for seed in range(4, 8)}

    assert first.hash == again.hash and _part_of(first) == _part_of(again)
    assert others - {first.hash}


def test_subjects_linked_by_identical_files_land_in_one_part() -> None:
    table = _table(BALANCED, links=[("N0", "N1"), ("N1", "N2"), ("B3", "B4")])

    for seed in range(5):
        split = make_split(table, seed=seed)
        parts = _subject_parts(split)
        assert parts["N0"] == parts["N1"] == parts["N2"] and parts["B3"] == parts["B4"]
        assert split.groups["N2"] == "N0+N1+N2"


def test_ratios_are_configurable() -> None:
    split = make_split(_table(BALANCED), ratios=(0.8, 0.2, 0.0))

    assert not split.parts["test"]
    assert {cell.label for cell in split.parts["val"]} == {"normal", "blast"}
    assert split.ratios == (0.8, 0.2, 0.0)


@pytest.mark.parametrize("ratios", [(0.6, 0.2), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_ratios_are_refused(ratios: tuple[float, ...]) -> None:
    with pytest.raises(BlastscopeError, match="three numbers >= 0"):
        make_split(_table(BALANCED), ratios=ratios)


def test_a_class_with_too_few_subject_groups_is_a_data_error_naming_it() -> None:
    table = _table({"normal": [30, 40], "blast": [10, 10, 10, 10]})

    with pytest.raises(
        DataError, match=r"class 'normal' has only 2 subject groups, too few for 3 parts.*--split-by image"
    ):
        make_split(table)
    assert make_split(table, ratios=(0.5, 0.5, 0.0)).subject_level


def test_three_groups_of_a_class_still_fill_three_parts() -> None:
    table = _table({"normal": [10, 10, 10], "blast": [10] * 9})

    for seed in range(5):
        split = make_split(table, seed=seed)
        assert all({cell.label for cell in cells} == {"normal", "blast"} for cells in split.parts.values())


def test_without_subjects_the_split_is_by_image_and_flagged() -> None:
    table = _table(BALANCED, subjects=False)

    split = make_split(table)

    assert not split.subject_level and "BY IMAGE" in split.summary()
    counts = {part: Counter(cell.label for cell in cells) for part, cells in split.parts.items()}
    assert counts["train"] == {"normal": 60, "blast": 66} and counts["test"] == {"normal": 20, "blast": 22}
    with pytest.raises(DataError, match="have no subject id"):
        make_split(table, by="subject")


def test_split_by_image_on_request_even_with_subjects() -> None:
    split = make_split(_table(BALANCED), by="image")

    assert not split.subject_level
    assert any(len(parts) > 1 for parts in _subject_parts(split).values())


def test_cells_missing_a_subject_stop_a_subject_split() -> None:
    table = _table(BALANCED)
    table.cells[0] = Cell(table.cells[0].path, table.cells[0].label, None, table.cells[0].digest)

    with pytest.raises(DataError, match=r"1 cells have no subject id \(e\.g\. .*N0_0\.png\).*--split-by image"):
        make_split(table)


def test_pinned_cells_fill_their_part_and_the_rest_shares_the_others() -> None:
    table = _table(BALANCED)
    pinned = {"N9", "B9"}
    table.cells = [
        Cell(cell.path, cell.label, cell.subject, cell.digest, "test" if cell.subject in pinned else None)
        for cell in table.cells
    ]

    split = make_split(table)

    assert {cell.subject for cell in split.parts["test"]} == pinned
    assert {cell.label for cell in split.parts["val"]} == {"normal", "blast"}
    train, val = len(split.parts["train"]), len(split.parts["val"])
    assert abs(train / (train + val) - 0.75) < 0.1


def test_leakage_check_catches_a_group_or_a_file_in_two_parts() -> None:
    split = make_split(_table(BALANCED, links=[("N0", "N1")]))
    n0 = next(cell for cell in split.parts["train"] + split.parts["val"] + split.parts["test"] if cell.subject == "N0")
    n1_part = next(part for part, cell in split.cells() if cell.subject == "N1")
    other = next(part for part in ("train", "val", "test") if part != n1_part)
    moved = Split(
        {part: [c for c in cells if c != n0] for part, cells in split.parts.items()},
        split.groups,
        True,
        0,
        split.ratios,
    )
    moved.parts[other].append(n0)

    with pytest.raises(LeakageError, match=r"subject group N0\+N1 sits in"):
        check_leakage(moved)

    copy = Cell(ROOT / "elsewhere.png", n0.label, "B0", n0.digest)
    duplicated = Split({part: list(cells) for part, cells in split.parts.items()}, split.groups, False, 0, split.ratios)
    duplicated.parts[other].append(copy)
    with pytest.raises(LeakageError, match=r"identical files in .*elsewhere\.png"):
        check_leakage(duplicated)


def test_csv_round_trip_keeps_parts_groups_and_hash(tmp_path: Path) -> None:
    table = _table(BALANCED, links=[("B1", "B2")])
    split = make_split(table, seed=1)
    path = tmp_path / "split.csv"

    write_split_csv(split, path)
    alone, matched = read_split_csv(path), read_split_csv(path, table)

    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "split", "label", "subject", "group", "digest"]
    assert {row["group"] for row in rows if row["subject"] == "B1"} == {"B1+B2"}
    for read in (alone, matched):
        assert read.hash == split.hash and read.subject_level
        assert _part_of(read) == _part_of(split)
        assert read.seed is None and abs(sum(read.ratios) - 1) < 1e-9
    assert matched.classes == table.classes


def test_a_failure_mid_write_leaves_the_previous_split_or_none_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, failing = tmp_path / "kept" / "split.csv", tmp_path / "new" / "split.csv"
    write_split_csv(make_split(_table(BALANCED), seed=1), kept)
    before = kept.read_bytes()
    real_writer = csv.writer

    class FillsTheDisk:
        def __init__(self, handle: object) -> None:
            self.writer, self.rows = real_writer(handle), 0

        def writerow(self, row: list[str]) -> None:
            self.rows += 1
            if self.rows == 5:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.writer.writerow(row)

    monkeypatch.setattr(csv, "writer", FillsTheDisk)
    for path in (kept, failing):
        with pytest.raises(OSError, match="No space left"):
            write_split_csv(make_split(_table(BALANCED), seed=2), path)
    assert kept.read_bytes() == before and not failing.exists()
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == ["split.csv"]


def test_hash_ignores_where_the_data_lives_but_not_the_assignment(tmp_path: Path) -> None:
    here = make_split(_table(BALANCED), seed=2)
    moved = make_split(_table(BALANCED, root=Path("/mnt/other/copy")), seed=2)
    swapped = Split(
        {"train": here.parts["val"], "val": here.parts["train"], "test": here.parts["test"]},
        here.groups,
        True,
        2,
        here.ratios,
    )

    assert here.hash == moved.hash
    assert swapped.hash != here.hash


def test_content_hash_tells_a_redrawn_dataset_from_the_old_one_but_not_a_moved_one() -> None:
    here = make_split(_table(BALANCED), seed=2)
    moved = make_split(_table(BALANCED, root=Path("/mnt/other/copy")), seed=2)
    redrawn = Split(
        {part: [replace(cell, digest=cell.digest + "-seed1") for cell in cells] for part, cells in here.parts.items()},
        here.groups,
        True,
        2,
        here.ratios,
    )

    assert moved.content_hash == here.content_hash
    assert redrawn.hash == here.hash and redrawn.content_hash != here.content_hash


def test_reading_a_split_for_other_data_is_an_error_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    write_split_csv(make_split(_table(BALANCED)), path)
    smaller = _table({"normal": BALANCED["normal"][:5], "blast": BALANCED["blast"]})

    with pytest.raises(DataError, match=r"split\.csv, line \d+: .* is not in the dataset"):
        read_split_csv(path, smaller)


def test_reading_a_split_whose_images_changed_counts_every_row_without_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    write_split_csv(make_split(_table(BALANCED)), path)
    table = _table(BALANCED)
    table.cells[3:7] = [replace(cell, digest=cell.digest + "-redrawn") for cell in table.cells[3:7]]
    rows = sum(BALANCED["normal"]) + sum(BALANCED["blast"])

    with pytest.raises(
        SplitContentsMissing, match=rf"\(no file has its digest; 4 of its {rows} rows are so\)"
    ) as caught:
        read_split_csv(path, table)
    assert (caught.value.count, caught.value.rows) == (4, rows)
    assert caught.value.first in {str(cell.path) for cell in table.cells[3:7]}


def test_changed_cells_are_the_files_holding_other_bytes_than_recorded(synth_small: Path, tmp_path: Path) -> None:
    table = scan_dataset(synth_small)
    first, second, third = (
        Path(shutil.copy(cell.path, tmp_path / f"{i}.png")) for i, cell in enumerate(table.cells[:3])
    )
    cells = [replace(cell, path=path) for cell, path in zip(table.cells[:3], (first, second, third), strict=True)]
    second.write_bytes(table.cells[5].path.read_bytes())  # another image under the old name
    third.unlink()  # unreadable: left to whoever reads it for a model

    assert changed_cells(cells) == [cells[1]]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[1].update(split="holdout"), r"line 3: split 'holdout' is not one of train, val, test"),
        (
            lambda rows: rows[1].update(
                digest=rows[0]["digest"], split="test" if rows[0]["split"] != "test" else "val"
            ),
            "identical files",
        ),
        (lambda rows: rows.clear(), "has no rows"),
    ],
)
def test_tampered_split_csvs_are_refused(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "split.csv"
    write_split_csv(make_split(_table(BALANCED)), path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    edit(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "split", "label", "subject", "group", "digest"])
        writer.writeheader()
        writer.writerows(rows)

    with pytest.raises(DataError, match=message):
        read_split_csv(path)


def test_a_hand_made_csv_without_the_recorded_columns_names_them_and_the_way_to_a_whole_one(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("path,split\na.png,train\n")
    with pytest.raises(
        DataError, match=r"mine\.csv: .*missing columns digest, group, label, subject; .*data split"
    ) as caught:
        read_split_csv(path)
    assert "\n" not in str(caught.value)


def test_a_subject_moved_across_parts_reads_back_as_not_subject_level(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    write_split_csv(make_split(_table(BALANCED)), path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    first = rows[0]
    first["split"] = next(part for part in ("train", "val", "test") if part != first["split"])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(first))
        writer.writeheader()
        writer.writerows(rows)

    read = read_split_csv(path)
    assert not read.subject_level
    used = {row["split"] for row in rows if row["subject"] == first["subject"]}
    assert groups_in_several_parts(read) == {first["subject"]: [p for p in ("train", "val", "test") if p in used]}


def _rewrite(path: Path, edit: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    with path.open() as handle:
        rows = edit(list(csv.DictReader(handle)))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "split", "label", "subject", "group", "digest"])
        writer.writeheader()
        writer.writerows(rows)


def test_cells_of_the_data_a_split_csv_puts_in_no_part_are_left_out_and_listed(tmp_path: Path) -> None:
    """A split CSV with rows deleted trains on the rest: the cells it no longer names are counted, not lost."""
    table = _table(BALANCED)
    path = tmp_path / "split.csv"
    write_split_csv(make_split(table), path)
    dropped: list[str] = []

    def drop_test_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        dropped.extend(row["digest"] for row in rows if row["split"] == "test")
        return [row for row in rows if row["split"] != "test"]

    _rewrite(path, drop_test_rows)
    read = read_split_csv(path, table)

    assert sorted(cell.digest for cell in read.left_out) == sorted(dropped)
    assert sum(len(cells) for cells in read.parts.values()) + len(read.left_out) == len(table.cells)
    assert read_split_csv(path).left_out == []  # without the data there is nothing to leave out


def test_two_rows_of_one_image_in_one_part_are_refused_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    write_split_csv(make_split(_table(BALANCED)), path)
    _rewrite(path, lambda rows: [*rows, rows[0]])
    last = sum(BALANCED["normal"]) + sum(BALANCED["blast"]) + 2

    with pytest.raises(DataError, match=rf"line {last}: .* is the image of line 2 again .*delete one of the two rows"):
        read_split_csv(path)


def test_kfold_tests_every_cell_once_with_whole_groups() -> None:
    table = _table(BALANCED, links=[("N3", "N4")])

    splits = kfold_splits(table, 5, seed=0)

    assert len(splits) == 5
    tested = Counter(cell.digest for split in splits for cell in split.parts["test"])
    assert set(tested.values()) == {1} and len(tested) == len(table.cells)
    for split in splits:
        assert split.subject_level and split.ratios == (0.6, 0.2, 0.2)
        assert all(len(parts) == 1 for parts in _subject_parts(split).values())
        assert all({cell.label for cell in cells} == {"normal", "blast"} for cells in split.parts.values())
    assert [cell.digest for cell in splits[0].parts["val"]] == [cell.digest for cell in splits[1].parts["test"]]


def test_kfold_refuses_too_few_groups_small_k_and_pinned_cells() -> None:
    table = _table({"normal": [5, 5, 5], "blast": [5] * 6})

    with pytest.raises(DataError, match=r"class 'normal' has only 3 subject groups, too few for 4 parts"):
        kfold_splits(table, 4)
    with pytest.raises(BlastscopeError, match="k >= 3"):
        kfold_splits(table, 2)
    table.cells[0] = Cell(table.cells[0].path, "normal", "N0", table.cells[0].digest, "test")
    with pytest.raises(DataError, match="no cell can be pinned"):
        kfold_splits(table, 3)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_with_val_ratio_tests_every_subject_once_and_validates_inside_the_training_folds(k: int) -> None:
    table = _table(BALANCED, links=[("N3", "N4")])

    splits = kfold_splits(table, k, seed=0, val_ratio=0.25)

    tested = Counter(subject for split in splits for subject in {cell.subject for cell in split.parts["test"]})
    assert tested == Counter({cell.subject for cell in table.cells}), "every subject is tested in exactly one fold"
    for split in splits:
        parts = _subject_parts(split)
        assert all(len(used) == 1 for used in parts.values()), "a subject sits in two parts of one split"
        assert parts["N3"] == parts["N4"], "linked subjects stay together"
        assert all({cell.label for cell in cells} == {"normal", "blast"} for cells in split.parts.values())
        trained_or_validated = len(split.parts["train"]) + len(split.parts["val"])
        assert 0.1 < len(split.parts["val"]) / trained_or_validated < 0.4
        assert split.ratios == pytest.approx(((k - 1) / k * 0.75, (k - 1) / k * 0.25, 1 / k))
    if k >= 3:  # the test folds are those of the default, next-fold validation
        assert [s.parts["test"] for s in splits] == [s.parts["test"] for s in kfold_splits(table, k, seed=0)]


def test_kfold_val_ratio_must_be_a_share() -> None:
    with pytest.raises(BlastscopeError, match="between 0 and 1"):
        kfold_splits(_table(BALANCED), 3, val_ratio=1.0)
    with pytest.raises(BlastscopeError, match="k >= 2"):
        kfold_splits(_table(BALANCED), 1, val_ratio=0.2)


def _heavy(k: int) -> dict[str, list[int]]:
    """k huge HEM subjects (620-700 cells) among 4k+1 small ones (9-50), and 20 ALL subjects of 30-119 cells: cell
    balance alone would give each fold one huge HEM subject padded with however many small ones fill it."""
    small = [12, 35, 20, 48, 9, 27, 40, 16, 31, 22, 44, 14, 38, 25, 18, 50, 11, 29, 33, 42, 24]
    return {"hem": [700 - 40 * i for i in range(k)] + small[: 4 * k + 1], "all": [30 + 37 * i % 90 for i in range(20)]}


def _groups(cells: list[Cell], label: str) -> int:
    return len({cell.subject for cell in cells if cell.label == label})


CELL_TOLERANCE = 0.05  # a test fold's cells of a class may differ from 1/k of that class's cells by this share


@pytest.mark.parametrize("val_ratio", [None, 0.2])
@pytest.mark.parametrize("k", [3, 5])
def test_kfold_balances_subjects_of_each_class_per_fold_not_only_cells(k: int, val_ratio: float | None) -> None:
    table = _table(_heavy(k))
    cells = Counter(cell.label for cell in table.cells)
    subjects = {label: len(sizes) for label, sizes in _heavy(k).items()}

    splits = kfold_splits(table, k, seed=0, val_ratio=val_ratio)

    for split in splits:
        for label, n in subjects.items():
            tested = _groups(split.parts["test"], label)
            assert tested in (n // k, -(-n // k)), f"{label}: {tested} of {n} subjects in a test fold"
            rest = n - tested
            trained = _groups(split.parts["train"], label)
            if val_ratio is None:  # the validation part is the next fold, balanced the same way
                assert rest - trained in (n // k, -(-n // k))
            else:
                assert trained in (math.floor(rest * (1 - val_ratio)), math.ceil(rest * (1 - val_ratio)))
            share = sum(cell.label == label for cell in split.parts["test"]) / (cells[label] / k)
            assert abs(share - 1) <= CELL_TOLERANCE, f"{label}: a test fold holds {share:.0%} of its share of cells"


@pytest.mark.parametrize("val_ratio", [None, 0.2])
def test_same_seed_same_folds(val_ratio: float | None) -> None:
    table = _table(BALANCED)

    hashes = [[split.hash for split in kfold_splits(table, 3, seed=1, val_ratio=val_ratio)] for _ in range(2)]

    assert hashes[0] == hashes[1]


def test_holdout_split_holds_its_share_of_subjects_of_each_class() -> None:
    table = _table(_heavy(3))

    for seed in range(3):
        split = make_split(table, seed=seed)
        for label, sizes in _heavy(3).items():
            for part, ratio in zip(("train", "val", "test"), (0.6, 0.2, 0.2), strict=True):
                held = _groups(split.parts[part], label)
                assert math.floor(ratio * len(sizes)) <= held <= math.ceil(ratio * len(sizes)), (seed, label, part)


def test_a_part_with_a_tiny_ratio_still_gets_one_subject_group_of_each_class() -> None:
    split = make_split(_table({"normal": [10, 10, 10], "blast": [10, 10, 10, 10]}), ratios=(0.9, 0.05, 0.05))

    assert [_groups(split.parts[part], "normal") for part in ("train", "val", "test")] == [1, 1, 1]
    assert [_groups(split.parts[part], "blast") for part in ("train", "val", "test")] == [2, 1, 1]


def test_plain_cell_tables_from_other_code_split_too() -> None:
    scanned = _table(BALANCED)
    plain = CellTable(root=ROOT, cells=scanned.cells, classes=scanned.classes, kind="folders")

    assert make_split(plain, seed=0).hash == make_split(scanned, seed=0).hash


@pytest.mark.integration
def test_cnmc_dev_split_is_leak_free_with_both_classes_in_every_part(cnmc_dev: Path, tmp_path: Path) -> None:
    table = scan_dataset(cnmc_dev)

    split = make_split(table, seed=0)

    check_leakage(split)
    assert all({cell.label for cell in cells} == {"hem", "all"} for cells in split.parts.values())
    parts = _subject_parts(split)
    assert parts["51"] == parts["75"] == parts["78"] and parts["H2"] == parts["H4"] == parts["H5"]
    assert parts["H3"] == parts["H10"]
    for share in split.shares():
        assert abs(share.share - {"train": 0.6, "val": 0.2, "test": 0.2}[share.part]) < 0.05
    write_split_csv(split, tmp_path / "split.csv")
    assert read_split_csv(tmp_path / "split.csv", table).hash == split.hash


@pytest.mark.integration
def test_cnmc_dev_folds_each_test_and_train_on_a_share_of_the_hem_people(cnmc_dev: Path) -> None:
    table = scan_dataset(cnmc_dev)
    cells = Counter(cell.label for cell in table.cells)

    splits = kfold_splits(table, 3, seed=0, val_ratio=0.2)

    for split in splits:  # 11 HEM subject groups: 3 or 4 tested per fold, 5 or 6 of the other 7 or 8 trained on
        tested, trained = (
            len({split.groups[c.subject] for c in split.parts[p] if c.label == "hem"}) for p in ("test", "train")
        )
        assert tested in (3, 4) and trained in (5, 6), (tested, trained)
        for label, total in cells.items():
            assert abs(sum(c.label == label for c in split.parts["test"]) / (total / 3) - 1) < 0.1
