"""Turn a folder or a CSV manifest into a CellTable: labels, subjects, hashes, duplicates and unreadable files.

Three layouts are read, tried in this order:

* **C-NMC 2019** (kind ``"cnmc"``): a folder holding any file named ``UID_<subject>_<image>_<cell>_<all|hem>.<ext>``.
  See :mod:`blastscope.data.cnmc`; the preliminary test set joins the pool (``prelim="pool"``) or is pinned to the test
  part (``prelim="test"``); the unlabelled final test set is left out with a note.
* **class per folder** (kind ``"folders"``): the class of an image is the *top-level* folder under the root it sits in,
  at any depth below (``root/blast/patient_7/img.png`` is class ``blast``). Such trees carry no subject ids. A root
  whose top-level folders all hold the same class folders (``train/{a,b}`` and ``test/{a,b}``; two copies
  ``v1/{all,hem}`` and ``v2/{all,hem}``), or whose top-level folders are named as dataset parts and hold folders
  (``train/{a,b,c}`` and ``val/{a,b}``), is refused: its top-level folders are splits or copies, not classes. Only
  when the top-level names surely are classes (each reads as one, positive and negative both present) and the shared
  subfolders read neither as classes nor as parts (``Blast/{day1,day2}``, ``Normal/{day1,day2}``) are they classes
  holding sessions. A single top-level folder named as a part (``test/HEM/`` beside ``ALL/``, ``test/*.png`` beside
  ``ALL/`` and ``HEM/``) or holding a folder named as another class (``more/HEM/`` beside ``ALL/``,
  ``patient1/ALL/``) is refused too: its images would silently take its name as their class.
* **CSV manifest** (kind ``"manifest"``): only when the path given *is* a ``.csv`` file. Columns are found by header
  name: ``path`` (relative to the CSV's folder, or absolute; ``\\`` separators as Windows writes them are accepted),
  ``label``, optional ``subject``; others are ignored. The delimiter (``,``, ``;`` or tab, as spreadsheet programs
  write them by locale) is detected; UTF-8 with or without a byte-order mark, and UTF-16 with one, are read.

Folders are searched by :func:`blastscope.data.files.find_image_files`, the finder ``predict`` uses too: symlinked
folders are followed once each, operating-system litter (``__MACOSX/``, ``._*``, ``.DS_Store``...) is ignored, and
other hidden image files, folders that cannot be listed, special files (named pipes, devices) and files over the byte
limit are counted skips. Manifest rows are read under the same rules (:func:`blastscope.data.reading.read_image_file`).

Every file's bytes are hashed (BLAKE2b, 128 bits): identical files count once, and subjects that share an identical
file are linked so that a split keeps them on one side. Cells ``blastscope synth`` drew, known by their PNG mark, are
announced when other cells sit beside them, and their subject ids from C-NMC-style names become ``SYNTH<seed>-<id>``:
synth numbers its people as C-NMC does, so its ``H3`` is not the real ``H3``. Headers are checked without a full
decode (see :func:`blastscope.data.images.probe_image`); unreadable files are counted skips, an unusable dataset is a
DataError.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from PIL import Image

from blastscope.data import cnmc
from blastscope.data.attribution import SYNTH_PNG_KEY
from blastscope.data.classes import NEGATIVE, POSITIVE, canonical_spellings, name_meaning, name_tokens
from blastscope.data.files import find_image_files
from blastscope.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageHeader, probe_image
from blastscope.data.reading import read_image_file
from blastscope.data.table import Cell, CellTable
from blastscope.errors import DataError, ImageError

log = logging.getLogger(__name__)

PRELIM_CHOICES = ("pool", "test")
MANIFEST_DELIMITERS = ",;\t"
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
Skip = tuple[Path, str]  # a file set aside, and why
_PART_WORDS = frozenset(
    {"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval", "evaluation", "holdout"}
)
_PART_FILLER_WORDS = frozenset({"data", "set", "split", "images"})  # training_data, test_set, val_images
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CONFLICT = "identical files labelled"  # how a skip of identical files under two classes starts (_keep_one)


@dataclass(frozen=True, slots=True)
class LabelledFile:
    """A file the layout has given a label (and maybe a subject) before it is hashed and checked."""

    path: Path
    label: str
    subject: str | None
    fixed_split: str | None = None


def scan_dataset(
    path: Path | str, *, prelim: str = "pool", max_pixels: int = DEFAULT_MAX_PIXELS, for_splits: bool = True
) -> CellTable:
    """Read the dataset at ``path`` (folder or ``.csv`` manifest); raise DataError when it cannot be used.

    ``for_splits``: the table will be split (train, compare, ``data``), so missing subject ids are warned about
    (splits then go by image) and two classes are needed; False for a dataset only scored (``evaluate --data``),
    where that note would mislead and one class is enough (one new person's normal cells).
    """
    path = Path(path).expanduser().resolve()
    if prelim not in PRELIM_CHOICES:
        raise DataError(f"prelim must be one of {', '.join(PRELIM_CHOICES)}, not {prelim!r}")
    if not path.exists():
        raise DataError(f"{path} does not exist; give a dataset folder or a CSV manifest")
    skipped: list[Skip] = []
    notes: list[str] = []
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"{path} is a file but not a .csv manifest; give the dataset folder or the manifest")
        kind, root, labelled = "manifest", path.parent, _from_manifest(path, notes)
    else:
        found = find_image_files(path)
        files = found.files
        skipped.extend(found.skipped)
        if found.litter:
            notes.append(
                f"{found.litter:,} operating-system files ignored (__MACOSX/, ._* AppleDouble files, .DS_Store, "
                "Thumbs.db, desktop.ini)"
            )
        if found.other:
            kinds = ", ".join(
                f"{extension or 'no extension'} {count:,}" for extension, count in sorted(found.other.items())
            )
            count = found.other.total()
            what = "file of another type" if count == 1 else "files of other types"
            notes.append(
                f"{count:,} {what} passed over ({kinds}); only {', '.join(sorted(IMAGE_EXTENSIONS))} files are read "
                "as cells"
            )
        if not files:
            extensions = " ".join(sorted(IMAGE_EXTENSIONS))
            hidden = ""
            if skipped:
                hidden = f"; {len(skipped):,} files or folders skipped (first: {skipped[0][0]}: {skipped[0][1]})"
            raise DataError(
                f"{path} holds no images ({extensions}); point at the folder that contains the classes{hidden}"
            )
        root = path
        if any(cnmc.parse_name(file.name) or cnmc.within(file, cnmc.PRELIM_DIR) for file in files):
            kind, labelled = "cnmc", _from_cnmc(files, prelim, skipped, notes)
        else:
            _refuse_ambiguous_folders(root, files)
            kind, labelled = "folders", _from_folders(root, files, skipped)
    table = _hash_and_deduplicate(root, kind, labelled, max_pixels, skipped, notes)
    _check_usable(path, table, for_splits)
    if kind == "folders" and (empty := _empty_folders(path, table)):
        table.notes.append(f"not a class: {empty.strip(' ()')}")
    if for_splits:
        _note_subjects(table)
    return table


def subject_groups(table: CellTable) -> dict[str, str]:
    """Map every subject id to its group id: subjects linked by identical files share one group (``51+75+78``)."""
    parent = {cell.subject: cell.subject for cell in table.cells if cell.subject is not None}

    def find(subject: str) -> str:
        while parent[subject] != subject:
            parent[subject] = parent[parent[subject]]
            subject = parent[subject]
        return subject

    for first, second in table.subject_links:
        parent.setdefault(first, first)
        parent.setdefault(second, second)
        parent[find(first)] = find(second)
    members: dict[str, list[str]] = defaultdict(list)
    for subject in parent:
        members[find(subject)].append(subject)
    return {subject: "+".join(sorted(group, key=natural_key)) for group in members.values() for subject in group}


def merged_groups(table: CellTable) -> list[str]:
    """The group ids that join more than one subject, for reports."""
    return sorted({group for group in subject_groups(table).values() if "+" in group}, key=natural_key)


def natural_key(text: str) -> tuple[object, ...]:
    """Sort ``H2 < H10`` and ``2 < 11``, as people read ids."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _from_cnmc(files: Sequence[Path], prelim: str, skipped: list[Skip], notes: list[str]) -> list[LabelledFile]:
    final = [file for file in files if cnmc.within(file, cnmc.FINAL_DIR)]
    if final:
        notes.append(f"{len(final):,} unlabelled images in {cnmc.FINAL_DIR}/ (the final test set) left out")
    prelim_files = [file for file in files if cnmc.within(file, cnmc.PRELIM_DIR)]
    labelled = _prelim_cells(prelim_files, prelim, skipped, notes) if prelim_files else []
    for file in files:
        if cnmc.within(file, cnmc.FINAL_DIR) or cnmc.within(file, cnmc.PRELIM_DIR):
            continue
        if cnmc.parse_name(file.name) is None:
            skipped.append((file, "not a C-NMC cell name UID_<subject>_<image>_<cell>_<all|hem>; rename or remove it"))
            continue
        name = cnmc.training_cell(file)
        labelled.append(LabelledFile(file, name.label, name.subject))
    return labelled


def _prelim_cells(files: Sequence[Path], prelim: str, skipped: list[Skip], notes: list[str]) -> list[LabelledFile]:
    """Label the renamed preliminary test images from the CSV that sits next to their folder."""
    folder = next(parent for parent in files[0].parents if parent.name.lower() == cnmc.PRELIM_DIR.lower())
    labels_csv = next(
        (path for path in folder.parent.iterdir() if path.name.lower() == cnmc.PRELIM_LABELS.lower()), None
    )
    fixed_split = "test" if prelim == "test" else None
    labelled = []
    if labels_csv is None:
        # Files renamed back to their original names carry their label; the others cannot be labelled.
        for file in files:
            name = cnmc.parse_name(file.name)
            if name is not None:
                cnmc.check_subject(file, name)
                labelled.append(LabelledFile(file, name.label, name.subject, fixed_split))
        unnamed = len(files) - len(labelled)
        if unnamed:
            notes.append(
                f"{unnamed:,} preliminary test images left out: {folder.parent / cnmc.PRELIM_LABELS} "
                "(their labels) is missing"
            )
        if labelled:
            notes.append(f"{len(labelled):,} preliminary test cells labelled by their original C-NMC file names")
    else:
        labels = cnmc.read_prelim_labels(labels_csv)
        by_original = 0
        for file in files:
            name = labels.get(file.name.lower())
            if name is None:
                skipped.append(
                    (file, f"not listed in {labels_csv.name} (new_names or Patient_ID); add its row or remove it")
                )
                continue
            by_original += cnmc.parse_name(file.name) is not None
            labelled.append(LabelledFile(file, name.label, name.subject, fixed_split))
        if by_original:
            notes.append(
                f"{by_original:,} preliminary test images renamed to their original names matched to "
                f"{labels_csv.name} by its Patient_ID column"
            )
    if not labelled:
        return []
    subjects = len({cell.subject for cell in labelled})
    where = "pinned to the test part" if fixed_split else "added to the pool"
    notes.append(f"{len(labelled):,} preliminary test cells of {subjects} subjects {where} (prelim={prelim})")
    return labelled


def _refuse_ambiguous_folders(root: Path, files: Sequence[Path]) -> None:
    """Stop, in one line naming the folder and the fix, where taking each top-level folder for a class would be
    wrong: the top-level folders are splits or copies (:func:`_refuse_repeated_class_folders`), one is named as a
    dataset part (:func:`_refuse_part_folders`), or one holds a folder named as a class (``more/HEM/`` beside ``ALL/``,
    ``patient1/ALL/``; :func:`_refuse_classes_within`)."""
    inner: dict[str, set[str]] = defaultdict(set)  # top-level folder -> its subfolders holding images, as spelt
    for file in files:
        parts = file.relative_to(root).parts
        if len(parts) >= 2:
            inner[parts[0]].add(parts[1] if len(parts) >= 3 else "")  # "": an image right in the top folder
    _refuse_repeated_class_folders(root, files, inner)
    _refuse_part_folders(root, inner)
    _refuse_classes_within(root, inner)


def _refuse_repeated_class_folders(root: Path, files: Sequence[Path], inner: dict[str, set[str]]) -> None:
    """Stop when every top-level folder holds the same set of two or more subfolders (``train/{a,b}``,
    ``test/{a,b}``): those would be taken as the classes (train, test) while the real classes sit one level down.
    Classes holding the same session folders (:func:`_classes_holding_sessions`) pass. Only splits are told to point
    at one of them: folders per person (``patient1/{ALL,HEM}``) are told to go into a manifest with their subject."""
    shapes = {frozenset(name.lower() for name in names) for names in inner.values()}
    shared = next(iter(shapes), frozenset())
    if (
        len(inner) >= 2
        and len(shapes) == 1
        and "" not in shared
        and len(shared) >= 2
        and not _classes_holding_sessions(root, files)
    ):
        tops = sorted(inner, key=natural_key)
        first = tops[0]
        classes = sorted(inner[first])
        if _reads_as_classes(tops) and all(_names_a_part(name) for name in shared):
            raise DataError(
                f"{root}: the class folders ({', '.join(tops)}) each hold the same dataset parts "
                f"({', '.join(classes)}), but the class is read from the top-level folder, so pointing at {first}/ "
                f"would take the parts for classes; rearrange as {root / classes[0] / first}/... and point at "
                f"{root / classes[0]}, or list the files and their classes in a CSV manifest (path,label) to use "
                "them all"
            )
        if all(_names_a_part(top) for top in tops):
            raise DataError(
                f"{root}: every top-level folder ({', '.join(tops)}) holds the same class folders "
                f"({', '.join(classes)}), so they look like splits, not classes; point at one of them, e.g. "
                f"{root / first}, or list the files and their classes in a CSV manifest (path,label) to use them all"
            )
        raise DataError(  # people (patient1/{ALL,HEM}) or copies: pointing at one would drop the other people
            f"{root}: every top-level folder ({', '.join(tops)}) holds the same class folders ({', '.join(classes)}), "
            "so they are not classes; if they are people (or sites, batches), list the files in a CSV manifest with "
            "path,label,subject columns (subject: the top-level folder) to use them all; only if they are copies of "
            f"one dataset, point at one of them, e.g. {root / first}"
        )


def _refuse_part_folders(root: Path, inner: dict[str, set[str]]) -> None:
    """Stop when a top-level folder is named as a dataset part (``train``, ``test_set``...): it is no class. Two or
    more holding folders are splits (``train/{a,b,c}``, ``val/{a,b}``: a part may lack a class); one holding folders
    beside classes (``ALL/`` and ``test/HEM/``) would be read as a class ``test`` holding the HEM cells; one holding
    images right in it would be read as a class named after the part."""
    named_parts = sorted((top for top in inner if _names_a_part(top)), key=natural_key)
    holding = [top for top in named_parts if inner[top] - {""}]
    if len(holding) >= 2:
        classes = sorted({name for top in holding for name in inner[top] - {""}}, key=natural_key)
        raise DataError(
            f"{root}: the top-level folders {', '.join(holding)} are named as dataset parts and hold folders "
            f"({', '.join(classes)}), so they look like splits, not classes; point at one of them, e.g. "
            f"{root / holding[0]}, or list the files and their classes in a CSV manifest (path,label) to use them "
            "all"
        )
    others = sorted(set(inner) - set(named_parts), key=natural_key)
    beside = f" beside {', '.join(f'{top}/' for top in others)}" if others else ""
    if holding:
        part = holding[0]
        folders = sorted(inner[part] - {""}, key=natural_key)
        raise DataError(
            f"{root}: {part}/ is named as a dataset part and holds folders ({', '.join(folders)}){beside}, so it is "
            f"not a class, yet the class is read from the top-level folder; point at {root / part} if it is the "
            f"dataset, or move its class folders up to {root} (e.g. {root / folders[0]}), or list the files and "
            "their classes in a CSV manifest (path,label)"
        )
    if named_parts:
        part = named_parts[0]
        raise DataError(
            f"{root}: {part}/ is named as a dataset part, not a class, yet its images{beside} would be read as class "
            f"'{part}'; move them into folders named after their classes, move {part}/ out of {root}, or list the "
            "files and their classes in a CSV manifest (path,label)"
        )


def _refuse_classes_within(root: Path, inner: dict[str, set[str]]) -> None:
    """Stop when a top-level folder holds a folder named as another class: the name of another top-level folder, or a
    class word meaning otherwise than the top-level name (``more/HEM/`` beside ``ALL/``; ``patient1/ALL/``,
    ``patient2/HEM/``; ``Normal/blast/``). Its images would silently take the top-level folder's class.
    Subfolders that agree with their class (``ALL/blast_cells/``, ``Blast/day1/``) pass. A lone top-level folder
    holding only class folders (``data/{ALL,HEM}``) is the dataset itself, so the fix is to point at it, not to move one
    class folder up and leave the others behind."""
    tops = {top.casefold(): top for top in inner}
    for top in sorted(inner, key=natural_key):
        meaning = name_meaning(top)
        for folder in sorted(inner[top] - {""}, key=natural_key):
            if tops.get(folder.casefold(), top) == top and name_meaning(folder) in (None, meaning):
                continue
            if len(inner) == 1 and meaning is None and all(name_meaning(name) for name in inner[top]):  # data/{ALL,HEM}
                folders = ", ".join(sorted(inner[top], key=natural_key))
                raise DataError(
                    f"{root}: the one top-level folder, {top}/, holds the class folders ({folders}) and no image "
                    f"beside them; point at {root / top}"
                )
            raise DataError(
                f"{root}: {top}/ holds {folder}/, a folder named as a class, but a cell's class is the top-level "
                f"folder it sits in, so its images would be class '{top}'; move {folder}/ up to {root / folder} if it "
                f"is a class, rename it if it is not, or list the files and their classes in a CSV manifest "
                "(path,label)"
            )


def _classes_holding_sessions(root: Path, files: Sequence[Path]) -> bool:
    """Whether a tree whose top-level folders hold the same subfolders is, unambiguously, classes holding sessions
    (``Blast/{day1,day2}``, ``Normal/{day1,day2}``): every top-level name reads as a class, positive and negative both
    present (so not two copies of one class), and no subfolder name reads as a class or a dataset part."""
    tops: set[str] = set()
    subfolders: set[str] = set()
    for file in files:
        parts = file.relative_to(root).parts
        if len(parts) >= 3:
            tops.add(parts[0])
            subfolders.add(parts[1])
    return _reads_as_classes(tops) and not any(name_meaning(name) or _names_a_part(name) for name in subfolders)


def _reads_as_classes(names: Iterable[str]) -> bool:
    """Whether folder names surely are a two-class dataset's classes: each reads as a class, positive and negative
    both present (``Blast``, ``Normal``), so not two copies of one class nor dataset parts."""
    return {name_meaning(name) for name in names} == {POSITIVE, NEGATIVE}


def _names_a_part(folder: str) -> bool:
    """Whether a folder's name says it is a dataset part (``train``, ``Validation``, ``test_set``, ``training_data``),
    not a class."""
    words = {word for word in name_tokens(folder) if not word.isdigit()} - _PART_FILLER_WORDS
    return bool(words) and words <= _PART_WORDS


def _from_folders(root: Path, files: Sequence[Path], skipped: list[Skip]) -> list[LabelledFile]:
    labelled = []
    for file in files:
        relative = file.relative_to(root)
        if len(relative.parts) < 2:
            skipped.append((file, "not inside a class folder; move it into root/<class>/"))
        else:
            labelled.append(LabelledFile(file, relative.parts[0], None))
    return labelled


def _from_manifest(csv_path: Path, notes: list[str]) -> list[LabelledFile]:
    rows = _manifest_rows(csv_path)
    classes = {row["label"].strip().lower() for _, row in rows}
    labelled = []
    named_subjects = 0
    listed: dict[Path, int] = {}
    for line, row in rows:
        file = _manifest_path(csv_path, line, row["path"])
        if (where := file.resolve()) in listed:
            raise DataError(f"{csv_path}, lines {listed[where]} and {line}: both list {file}; keep one row per file")
        listed[where] = line
        label = row["label"].strip()
        subject = (row.get("subject") or "").strip().upper() or None
        if not label:
            raise DataError(f"{csv_path}, line {line}: empty label; fill it in or remove the row")
        name = cnmc.parse_name(file.name)
        if name is not None and label.lower() in cnmc.CLASSES:
            _check_manifest_against_name(csv_path, line, file, label, subject, name)
            if subject is None:
                subject, named_subjects = name.subject, named_subjects + 1
        folder = file.parent.name.lower()
        if folder in classes and folder != label.lower():
            raise DataError(
                f"{csv_path}, line {line}: {file.name} is labelled '{label}' but sits in {file.parent.name}/; "
                "fix the label or move the file"
            )
        labelled.append(LabelledFile(file, label, subject))
    if named_subjects:
        notes.append(f"subject ids of {named_subjects:,} cells taken from their C-NMC file names")
    return labelled


def _manifest_rows(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        text, delimiter, removed = _manifest_dialect(csv_path, cnmc.csv_text(csv_path))
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = [name.strip().lower() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = []
            for row in reader:
                line = reader.line_num + removed
                short = [column for column in ("path", "label") if row.get(column) is None]
                if short:
                    raise DataError(
                        f"{csv_path}, line {line}: no {' or '.join(short)} column in this row; complete or remove it"
                    )
                rows.append((line, row))
    except (OSError, csv.Error) as error:
        raise DataError(f"{csv_path}: cannot be read as a CSV manifest ({error})") from error
    if not rows:
        raise DataError(f"{csv_path}: the manifest lists no images; add rows path,label[,subject]")
    return rows


def _manifest_dialect(csv_path: Path, text: str) -> tuple[str, str, int]:
    """The manifest's text without the ``sep=;`` line Excel may put first (and how many lines that removed), and its
    delimiter: the one (``,``, ``;`` or tab) that makes the header name the columns path and label, trying the ``sep=``
    line's and :class:`csv.Sniffer`'s choice first. Without one, a one-line DataError says what the header read as."""
    first, _, rest = text.partition("\n")
    declared, removed = None, 0
    if re.fullmatch(r"sep=[,;\t]", first.rstrip("\r")):
        declared, removed, text = first.rstrip("\r")[-1], 1, rest
    header_line = text.partition("\n")[0].rstrip("\r")
    try:
        sniffed = csv.Sniffer().sniff(text[:65536], delimiters=MANIFEST_DELIMITERS).delimiter
    except csv.Error:  # one column, or too little text to tell
        sniffed = None
    columns: dict[str, list[str]] = {}
    for delimiter in dict.fromkeys(d for d in (declared, sniffed, *MANIFEST_DELIMITERS) if d is not None):
        columns[delimiter] = [name.strip().lower() for name in next(csv.reader([header_line], delimiter=delimiter))]
        if {"path", "label"} <= set(columns[delimiter]):
            return text, delimiter, removed
    guess = declared or sniffed or ","
    missing = {"path", "label"} - set(columns[guess])
    read_as = ", ".join(repr(name) for name in columns[guess] if name) or "nothing"
    raise DataError(
        f"{csv_path}: a manifest needs the columns path and label (optional: subject); missing "
        f"{', '.join(sorted(missing))}: its first line reads as {read_as} (split at {_DELIMITER_NAMES[guess]}s; "
        "comma, semicolon and tab are understood); name the columns path and label"
    )


def _manifest_path(csv_path: Path, line: int, value: str | None) -> Path:
    written = (value or "").strip()
    relative = Path(written)
    if "\\" in written and not (csv_path.parent / relative).is_file():
        windows = PureWindowsPath(written)
        if windows.drive or windows.root:
            raise DataError(
                f"{csv_path}, line {line}: {written} is an absolute Windows path; write paths relative to the "
                "CSV's folder (images\\a.png or images/a.png)"
            )
        relative = Path(*windows.parts)
    file = relative if relative.is_absolute() else csv_path.parent / relative
    if not relative.parts or not file.exists():  # a pipe or device is a counted skip when read, not "missing"
        raise DataError(
            f"{csv_path}, line {line}: {file} does not exist (paths are relative to the CSV's folder); "
            "fix the path or remove the row"
        )
    return file.resolve() if file.is_file() else file.absolute()  # a skip keeps the name the row gave it


def _check_manifest_against_name(
    csv_path: Path, line: int, file: Path, label: str, subject: str | None, name: cnmc.CnmcName
) -> None:
    if name.label != label.lower():
        raise DataError(
            f"{csv_path}, line {line}: {file.name} is labelled '{label}' but its name says '{name.label}'; "
            "fix the label or the name"
        )
    if subject is not None and subject != name.subject:
        raise DataError(
            f"{csv_path}, line {line}: {file.name} has subject '{subject}' but its name says '{name.subject}'; "
            "fix the subject column"
        )


def content_digest(data: bytes) -> str:
    """A file's ``Cell.digest``: BLAKE2b-128 of its bytes, also for checking later that a file still holds them."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read(entry: LabelledFile, max_pixels: int) -> tuple[str, ImageHeader, str | None] | ImageError:
    """Hash the bytes, check the header and read the synthetic mark from the same single read; an unreadable file
    comes back as its error."""
    try:
        data = read_image_file(entry.path)
        return content_digest(data), probe_image(entry.path, data, max_pixels), _synthetic_seed(data)
    except ImageError as error:
        return error


def _synthetic_seed(data: bytes) -> str | None:
    """The seed ``blastscope synth`` wrote into a PNG cell's text chunk (read before the pixels, nothing decoded);
    None for any other file."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            return image.info.get(SYNTH_PNG_KEY)
    except (OSError, SyntaxError, ValueError):  # probe_image has said whether it is usable
        return None


def _separate_synthetic_subjects(
    read: list[tuple[LabelledFile, str, ImageHeader, str | None]], notes: list[str]
) -> list[tuple[LabelledFile, str, ImageHeader, str | None]]:
    """Synthetic cells beside other cells (real C-NMC ones, or another seed's), announced in one note, their subject
    ids from C-NMC-style names moved to ``SYNTH<seed>-<id>``: synth numbers its people ``1..n`` and ``H1..Hn`` as
    C-NMC does, so synthetic ``H3`` and the real ``H3`` (or seed 1's ``H3``) would be split as one person."""
    seeds = sorted({seed for *_, seed in read if seed is not None}, key=natural_key)
    synthetic = sum(seed is not None for *_, seed in read)
    if not seeds or (synthetic == len(read) and len(seeds) == 1):
        return read
    separated, moved = [], 0
    for entry, digest, header, seed in read:
        name = cnmc.parse_name(entry.path.name)
        if seed is not None and name is not None and entry.subject == name.subject:
            entry = dataclasses.replace(
                entry, subject=f"SYNTH{re.sub(r'[^0-9A-Za-z]', '', seed).upper()}-{name.subject}"
            )
            moved += 1
        separated.append((entry, digest, header, seed))
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(seeds)}"
    others = len(read) - synthetic
    beside = f"mixed with {others:,} other cells" if others else "of several seeds mixed"
    ids = (
        f"; their subject ids are read as SYNTH<seed>-<id> (e.g. SYNTH{seeds[0]}-H1), so that no synthetic person is "
        "grouped with a real one or another seed's of the same id"
        if moved
        else ""
    )
    notes.append(
        f"{synthetic:,} synthetic cells (blastscope synth, {which}) {beside}{ids}; remove them to train and score on "
        "real cells only"
    )
    return separated


def _hash_and_deduplicate(
    root: Path,
    kind: str,
    labelled: Sequence[LabelledFile],
    max_pixels: int,
    skipped: list[Skip],
    notes: list[str],
) -> CellTable:
    spelling = canonical_spellings(entry.label for entry in labelled)  # `ALL` and `all` are one class, not two
    notes.extend(_merged_spellings_note(spelling))
    labelled = [dataclasses.replace(entry, label=spelling[entry.label]) for entry in labelled]
    read: list[tuple[LabelledFile, str, ImageHeader, str | None]] = []  # entry, digest, header, synth seed
    for entry in labelled:
        result = _read(entry, max_pixels)
        if isinstance(result, ImageError):
            skipped.append((entry.path, result.reason))
        else:
            read.append((entry, *result))
    copies: dict[str, list[tuple[LabelledFile, ImageHeader]]] = defaultdict(list)
    for entry, digest, header, _ in _separate_synthetic_subjects(read, notes):
        copies[digest].append((entry, header))
    table = CellTable(root=root, cells=[], classes=(), kind=kind, skipped=skipped, notes=notes)
    for digest, group in copies.items():
        _keep_one(table, digest, group)
    table.cells.sort(key=lambda cell: cell.path)
    table.classes = class_order(cell.label for cell in table.cells)
    kept = {cell.digest for cell in table.cells}
    table.synthetic_seeds = {digest: seed for _, digest, _, seed in read if seed is not None and digest in kept}
    return table


def _merged_spellings_note(spelling: dict[str, str]) -> list[str]:
    """One line per class spelt in several ways, so that a folder ``Blast/`` beside ``blast/`` is not merged unsaid."""
    merged: dict[str, list[str]] = defaultdict(list)
    for variant, chosen in sorted(spelling.items()):
        merged[chosen].append(variant)
    return [
        f"labels {', '.join(repr(variant) for variant in variants)} differ only in case: taken as one class "
        f"{chosen!r} (the most frequent spelling); rename them alike to fix the name"
        for chosen, variants in merged.items()
        if len(variants) > 1
    ]


def _keep_one(table: CellTable, digest: str, copies: list[tuple[LabelledFile, ImageHeader]]) -> None:
    """Keep one of several identical files (a pinned copy first), linking the subjects of all of them."""
    labels = sorted({entry.label for entry, _ in copies})
    if len(labels) > 1:
        paths = ", ".join(str(entry.path) for entry, _ in copies)
        for entry, _ in copies:
            table.skipped.append((entry.path, f"{_CONFLICT} {' and '.join(labels)} ({paths}); remove the wrong copy"))
        return
    copies = sorted(copies, key=lambda copy: copy[0].fixed_split is None)
    kept, header = copies[0]
    table.cells.append(Cell(kept.path, kept.label, kept.subject, digest, kept.fixed_split))
    table.image_sizes[(header.width, header.height)] += 1
    for dropped, _ in copies[1:]:
        table.duplicates.append((dropped.path, kept.path))
        if dropped.subject is not None and kept.subject is not None and dropped.subject != kept.subject:
            table.subject_links.append((dropped.subject, kept.subject))


def class_order(labels: Iterable[str]) -> tuple[str, ...]:
    """C-NMC's positive class ALL last (index 1, as in its label files); other class names sorted."""
    present = set(labels)
    if present == set(cnmc.CLASSES):
        return cnmc.CLASSES
    return tuple(sorted(present, key=natural_key))


def _check_usable(path: Path, table: CellTable, for_splits: bool) -> None:
    if not table.cells:
        first = f" (first: {table.skipped[0][0]}: {table.skipped[0][1]})" if table.skipped else ""
        raise DataError(f"{path}: no readable images; {len(table.skipped):,} files skipped{first}")
    if for_splits and len(table.classes) < 2:
        raise DataError(
            f"{path}: only one class ({table.classes[0]}) found{_empty_folders(path, table)}; a classifier needs at "
            "least two class folders or labels"
        )


def _empty_folders(path: Path, table: CellTable) -> str:
    """`` (hem/ holds no readable image)``: the top folders of ``path`` that gave no cell, when there are any. Those
    whose images were dropped as identical files under two classes (:func:`_keep_one`) say so, not that they held no
    readable image."""
    if not path.is_dir():
        return ""
    used = {cell.path.relative_to(path).parts[0] for cell in table.cells if cell.path.is_relative_to(path)}
    conflicted = {
        skipped.relative_to(path).parts[0]
        for skipped, reason in table.skipped
        if reason.startswith(_CONFLICT) and skipped.is_relative_to(path)
    }
    empty = sorted(
        entry.name
        for entry in path.iterdir()
        if entry.is_dir() and not entry.name.startswith((".", "_")) and entry.name not in used
    )
    unreadable = [f"{name}/" for name in empty if name not in conflicted]
    dropped = [f"{name}/" for name in empty if name in conflicted]
    parts = []
    if unreadable:
        parts.append(f"{', '.join(unreadable)} {'holds' if len(unreadable) == 1 else 'hold'} no readable image")
    if dropped:
        parts.append(f"the images in {', '.join(dropped)} were dropped as identical files under two classes")
    return f" ({'; '.join(parts)})" if parts else ""


def _note_subjects(table: CellTable) -> None:
    """Say once, loudly, when splits cannot be by subject: cells of one person may then land in train and test."""
    missing = sum(cell.subject is None for cell in table.cells)
    if missing == len(table.cells):
        message = (
            "no subject ids in this dataset: splits will be by image, so cells of one person may sit in both "
            "train and test and scores will be optimistic; give a manifest with a subject column to split by subject"
        )
    elif missing:
        message = f"{missing:,} of {len(table.cells):,} cells have no subject id; fill them in to split by subject"
    else:
        groups = merged_groups(table)
        if groups:
            table.notes.append(f"subjects sharing identical files are kept together as one group: {', '.join(groups)}")
        return
    table.notes.append(message)
    log.warning(message)
