"""``blastscope data inspect`` and ``blastscope data split``: look at a dataset before training on it, and split it."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

from blastscope.cli._arguments import PIXEL_LIMIT_HELP, pixel_count, whole_number
from blastscope.cli._output import check_writable, replace_whole
from blastscope.data import cnmc
from blastscope.data.attribution import dataset_attribution
from blastscope.data.classes import positive_class
from blastscope.data.discover import PRELIM_CHOICES, natural_key, scan_dataset, subject_groups
from blastscope.data.images import DEFAULT_MAX_PIXELS
from blastscope.data.split import DEFAULT_RATIOS, SPLIT_BY, kfold_splits, make_split, write_split_csv
from blastscope.data.table import CellTable
from blastscope.data.text_table import text_table
from blastscope.errors import BlastscopeError, DataError

LAYOUTS = {
    "cnmc": "C-NMC 2019 (cells named UID_<subject>_<image>_<cell>_<all|hem>, class = the all/ or hem/ folder)",
    "folders": "class per folder (class = top-level folder under the root)",
    "manifest": "CSV manifest (columns path, label, optional subject)",
}
LISTED = 20  # duplicate and skipped files listed before "... and N more"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="inspect a dataset and make subject-level train/val/test splits",
        description="Inspect a dataset (C-NMC 2019 download, class-per-folder tree or CSV manifest) and split it.",
    )
    actions = parser.add_subparsers(dest="data_action", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="classes, cells per class/subject/fold, duplicates, merged subject groups, unreadable files, sizes",
        description="Scan a dataset and report what a model would be trained on, and what was set aside and why.",
    )
    _add_dataset_arguments(inspect)
    inspect.set_defaults(run=run_inspect)

    split = actions.add_parser(
        "split",
        help="write a train/val/test split (whole subject groups, classes balanced) as CSV",
        description="Split a dataset by subject group (or by image), print the achieved ratios per class, and save "
        "the split as CSV (path,split,label,subject,group,digest) plus a .summary.txt next to it.",
    )
    _add_dataset_arguments(split)
    split.add_argument("--out", type=Path, required=True, help="split CSV to write, e.g. split.csv")
    split.add_argument(
        "--ratios",
        type=_ratios,
        metavar="TRAIN,VAL,TEST",
        help="shares of each class's cells (default 0.6,0.2,0.2; not with --cv)",
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the assignment (default 0)")
    split.add_argument(
        "--split-by",
        choices=SPLIT_BY,
        default=None,
        help="subject (default when any cell has a subject id; then every cell needs one) or image (cells of one "
        "person may then sit in several parts)",
    )
    split.add_argument(
        "--cv",
        type=whole_number(
            "a number of folds", "5", minimum=3, why=" (each fold is tested once, another validates, the rest train)"
        ),
        metavar="K",
        help="write K cross-validation splits instead (OUT-fold1.csv ...): fold i tests, fold i+1 validates",
    )
    split.set_defaults(run=run_split)


def run_inspect(args: argparse.Namespace) -> int:
    table = scan_dataset(args.dataset, prelim=args.prelim, max_pixels=args.max_pixels)
    print(describe(table))
    return 0


def run_split(args: argparse.Namespace) -> int:
    check_writable(args.out.parent, "--out")
    table = scan_dataset(args.dataset, prelim=args.prelim, max_pixels=args.max_pixels)
    print(f"{table.root}: {len(table.cells):,} cells, classes {', '.join(table.classes)}")
    for note in table.notes:
        print(f"note: {note}")
    if table.skipped:
        print(_skipped_section(table))
    if args.cv and args.ratios:
        raise BlastscopeError("--ratios and --cv exclude each other: K folds give (K-2)/K train, 1/K val, 1/K test")
    if args.cv:
        splits = kfold_splits(table, args.cv, args.seed, by=args.split_by)
        outputs = [
            args.out.with_name(f"{args.out.stem}-fold{index}{args.out.suffix}") for index in range(1, args.cv + 1)
        ]
    else:
        ratios = args.ratios or DEFAULT_RATIOS
        splits, outputs = [make_split(table, ratios, args.seed, by=args.split_by)], [args.out]
    summaries = [f"{out}\n{split.summary()}" for split, out in zip(splits, outputs, strict=True)]
    text = "\n\n".join(summaries)
    summary_path = args.out.with_suffix(".summary.txt")
    writers: list[tuple[Path, Callable[[Path], None]]] = [
        (out, partial(write_split_csv, split)) for split, out in zip(splits, outputs, strict=True)
    ]
    writers.append((summary_path, lambda path: path.write_text(text + "\n", encoding="utf-8")))
    for out, write in writers:
        try:
            replace_whole(out, write)
        except OSError as error:
            raise BlastscopeError(
                f"{out}: not written ({error.strerror or error}; no partial file left); free space or choose another "
                "--out"
            ) from error
    print(f"\n{text}\n\nleakage check passed; summary saved to {summary_path}")
    return 0


def describe(table: CellTable) -> str:
    """The whole inspection report, one section per question a person asks before training."""
    read = len(table.cells) + len(table.duplicates) + len(table.skipped)
    try:
        positive = positive_class(table.classes)
    except DataError:  # binary classes whose names do not say which is positive: train needs --positive-class
        positive = None
    classes = ", ".join(
        f"{label} (index {index}{', positive' if label == positive else ''})"
        for index, label in enumerate(table.classes)
    )
    if positive is None and len(table.classes) == 2:
        classes += " (which is positive is not clear from the names: train needs --positive-class NAME)"
    sections = [
        "\n".join(
            [
                f"dataset  {table.root}",
                f"layout   {LAYOUTS.get(table.kind, table.kind)}",
                (
                    f"files    {read:,} found: {len(table.cells):,} distinct cells, "
                    f"{len(table.duplicates):,} exact duplicates, {len(table.skipped):,} skipped"
                ),
                f"classes  {classes}",
                f"credit   {dataset_attribution(table)}",
            ]
        ),
        _class_section(table),
        _fold_section(table),
        _subject_section(table),
        _duplicate_section(table),
        _size_section(table),
        _skipped_section(table),
        "Notes\n" + "\n".join(f"  - {note}" for note in table.notes) if table.notes else "",
    ]
    return "\n\n".join(section for section in sections if section)


def _class_section(table: CellTable) -> str:
    groups = subject_groups(table)
    rows = []
    for label in table.classes:
        cells = [cell for cell in table.cells if cell.label == label]
        subjects = {cell.subject for cell in cells if cell.subject is not None}
        rows.append([label, f"{len(cells):,}", f"{len(subjects):,}", f"{len({groups[s] for s in subjects}):,}"])
    subjects = {cell.subject for cell in table.cells if cell.subject is not None}
    rows.append(["total", f"{len(table.cells):,}", f"{len(subjects):,}", f"{len(set(groups.values())):,}"])
    return "Cells per class\n" + _indent(text_table(["class", "cells", "subject ids", "subject groups"], rows))


def _fold_section(table: CellTable) -> str:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for cell in table.cells:
        fold = cnmc.fold_of(cell.path)
        if fold is not None:
            counts[fold][cell.label] += 1
    if not counts:
        return ""
    rows = [
        [fold, *(f"{counts[fold][label]:,}" for label in table.classes), f"{sum(counts[fold].values()):,}"]
        for fold in sorted(counts, key=natural_key)
    ]
    return "Cells per C-NMC fold\n" + _indent(text_table(["fold", *table.classes, "total"], rows))


def _subject_section(table: CellTable) -> str:
    if not table.has_subjects:
        return ""
    groups = subject_groups(table)
    counts = Counter((cell.subject, cell.label) for cell in table.cells)
    rows = [
        [subject, label, f"{count:,}", groups[subject] if "+" in groups[subject] else ""]
        for (subject, label), count in sorted(counts.items(), key=lambda item: natural_key(item[0][0]))
    ]
    merged = sorted({group for group in groups.values() if "+" in group}, key=natural_key)
    text = "Cells per subject\n" + _indent(text_table(["subject", "class", "cells", "merged group"], rows))
    if merged:
        text += (
            "\n\nMerged subject groups (identical files under different subject ids; always split together)\n"
            + "\n".join(f"  {group}" for group in merged)
        )
    return text


def _duplicate_section(table: CellTable) -> str:
    if not table.duplicates:
        return ""
    lines = [
        f"  {_relative(dropped, table.root)}  ==  {_relative(kept, table.root)}"
        for dropped, kept in table.duplicates[:LISTED]
    ]
    return f"Exact duplicate files ({len(table.duplicates):,}; counted once, the second path is kept)\n" + "\n".join(
        lines + _more(len(table.duplicates))
    )


def _size_section(table: CellTable) -> str:
    rows = [[f"{width}x{height}", f"{count:,}"] for (width, height), count in table.image_sizes.most_common()]
    return "Image sizes\n" + _indent(text_table(["size", "cells"], rows))


def _skipped_section(table: CellTable) -> str:
    if not table.skipped:
        return "Skipped files: none"
    lines = [f"  {_relative(path, table.root)}: {reason}" for path, reason in table.skipped[:LISTED]]
    return f"Skipped files ({len(table.skipped):,}; fix or remove them)\n" + "\n".join(
        lines + _more(len(table.skipped))
    )


def _more(total: int) -> list[str]:
    return [f"  ... and {total - LISTED:,} more"] if total > LISTED else []


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", type=Path, metavar="DIR", help="dataset folder, or a CSV manifest (path,label[,subject])"
    )
    parser.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"skip images with more pixels than this (default {DEFAULT_MAX_PIXELS:,}; {PIXEL_LIMIT_HELP}; guards "
        "against decompression bombs)",
    )
    parser.add_argument(
        "--prelim",
        choices=PRELIM_CHOICES,
        default="pool",
        help="C-NMC preliminary test set: add its subjects to the pool (default) or pin it to the test part",
    )


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.6,0.2,0.2, not {text!r}") from None
