"""What the C-NMC 2019 (ISBI 2019, Kaggle "C-NMC Leukemia") download looks like, and how to read labels from it.

Training cells are named ``UID_<subject>_<image>_<cell>_<all|hem>.<ext>`` and sit in a folder named after their class;
the folders above (``training_data/fold_0``, ``train/fold_1``, ...) vary between copies and do not matter. HEM (normal)
subject ids start with ``H``; ALL (blast) ones are plain numbers. The preliminary test images are renamed ``1.bmp``,
``2.bmp``, ... and labelled by a CSV that keeps each original name (``Patient_ID``); users often rename the images back
to those names, so a file is found in the CSV by either. The final test images carry no labels at all.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from blastscope.errors import DataError

CLASSES = ("hem", "all")  # positive class (ALL) last, as in the label files: 1 = ALL, 0 = HEM
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = "C-NMC_test_final_phase_data"
PRELIM_LABEL_VALUES = {"1": "all", "0": "hem"}

_NAME = re.compile(r"^UID_(?P<subject>H?\d+)_(?P<image>\d+)_(?P<cell>\d+)_(?P<label>all|hem)$", re.IGNORECASE)
_FOLD = re.compile(r"^fold_\d+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CnmcName:
    """The parts of a C-NMC cell name; ``subject`` upper-cased (``h3`` and ``H3`` are one subject)."""

    subject: str
    image: int
    cell: int
    label: str


def parse_name(filename: str) -> CnmcName | None:
    """Parse ``UID_H3_12_4_hem.bmp`` (extension optional); None for any other name."""
    match = _NAME.match(Path(filename).stem)
    if match is None:
        return None
    return CnmcName(
        subject=match["subject"].upper(),
        image=int(match["image"]),
        cell=int(match["cell"]),
        label=match["label"].lower(),
    )


def training_cell(path: Path) -> CnmcName:
    """The label and subject of a training cell, after checking that its name, folder and subject id agree."""
    name = parse_name(path.name)
    if name is None:
        raise DataError(f"{path}: not a C-NMC cell name UID_<subject>_<image>_<cell>_<all|hem>; rename or remove it")
    folder = path.parent.name.lower()
    if folder not in CLASSES:
        raise DataError(
            f"{path}: a file with a C-NMC name must sit directly in a folder named all/ or hem/, not in "
            f"{path.parent.name}/; move it into {name.label}/ (or rename it, for a class-per-folder dataset)"
        )
    if name.label != folder:
        raise DataError(
            f"{path}: its name says '{name.label}' but it sits in {path.parent.name}/; move it or fix its name"
        )
    check_subject(path, name)
    return name


def check_subject(path: Path, name: CnmcName) -> None:
    """HEM subject ids start with H and ALL ones do not; a mismatch means a mislabelled or misnamed file."""
    if (name.label == "hem") != name.subject.startswith("H"):
        expected = "start with H" if name.label == "hem" else "not start with H"
        raise DataError(
            f"{path}: subject id {name.subject} contradicts its class '{name.label}' "
            f"(C-NMC {name.label.upper()} subject ids {expected}); fix the name or the label"
        )


def read_prelim_labels(csv_path: Path) -> dict[str, CnmcName]:
    """Map each preliminary test file's name, as renamed (``1.bmp``) or as originally named (``UID_57_29_1_all.bmp``,
    the ``Patient_ID`` column), lower-cased, to its original name's parts; the label is checked against the CSV."""
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        reader = csv.DictReader(io.StringIO(csv_text(csv_path), newline=""))
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as error:
        raise DataError(f"{csv_path}: cannot be read as CSV ({error})") from error
    missing = {"Patient_ID", "new_names", "labels"} - set(rows[0][1] if rows else {})
    if missing:
        raise DataError(
            f"{csv_path}: needs the columns Patient_ID, new_names, labels; missing {', '.join(sorted(missing))}"
        )
    labels: dict[str, CnmcName] = {}
    listed_on: dict[str, int] = {}
    for line, row in rows:
        short = [column for column in ("Patient_ID", "new_names", "labels") if row.get(column) is None]
        if short:
            raise DataError(f"{csv_path}, line {line}: no {', '.join(short)} in this row; complete or remove it")
        name = parse_name(row["Patient_ID"].strip())
        label = PRELIM_LABEL_VALUES.get(row["labels"].strip())
        if name is None or label is None:
            raise DataError(f"{csv_path}, line {line}: expected Patient_ID like UID_57_29_1_all.bmp and labels 0 or 1")
        if name.label != label:
            raise DataError(
                f"{csv_path}, line {line}: {row['Patient_ID']} is labelled {row['labels']} ({label.upper()}), "
                f"but its name says {name.label.upper()}; fix the row"
            )
        check_subject(csv_path, name)
        for key in (row["new_names"].strip().lower(), row["Patient_ID"].strip().lower()):
            if key in labels and labels[key] != name:
                raise DataError(
                    f"{csv_path}, line {line}: {key} is already listed on line {listed_on[key]} with another cell; "
                    "remove one of the rows"
                )
            labels[key], listed_on[key] = name, listed_on.get(key, line)
    return labels


def csv_text(path: Path) -> str:
    """A CSV file's text as spreadsheet programs save it: UTF-8 with or without a byte-order mark, or UTF-16 with one
    (Excel's "Unicode text"). Unreadable or undecodable files are one-line DataErrors that say how to save them."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from error
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: broken UTF-16 text ({error.reason}); save it as UTF-8 CSV") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text ({error.reason}); save it as UTF-8 CSV") from error


def within(path: Path, folder: str) -> bool:
    """Whether ``path`` lies below a folder called ``folder`` (case-insensitive)."""
    return folder.lower() in (part.lower() for part in path.parent.parts)


def fold_of(path: Path) -> str | None:
    """The original challenge fold (``fold_0``...) a cell was filed under, ``prelim`` for the preliminary test set."""
    if within(path, PRELIM_DIR):
        return "prelim"
    return next((part.lower() for part in reversed(path.parent.parts) if _FOLD.match(part)), None)
