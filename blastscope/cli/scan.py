"""``blastscope scan``: find every white cell of smear photographs, classify each with a run, and judge each image."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from blastscope.workflows.scan import ScanWriter

from blastscope.cli._arguments import (
    MIN_RED_CELL_DIAMETER,
    PIXEL_LIMIT_HELP,
    pixel_count,
    probability_threshold,
    red_cell_diameter,
)
from blastscope.data.images import DEFAULT_MAX_PIXELS
from blastscope.errors import BlastscopeError

T = TypeVar("T")
SCAN_PERSON_BY = ("all", "file")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="find and classify every white cell of smear photographs",
        description="For each photograph of a blood smear: find every white cell (red cells and platelets ignored, "
        "touching cells split, cells cut by the border left out and counted), cut each out onto black as C-NMC "
        "cells are, classify it with the run, and judge the image. Writes OUT/cells.csv (one row per cell: "
        "centroid, box, class, probabilities, the positive class and threshold that decided, uncertain), "
        "OUT/images.csv and OUT/summary.txt (one line per photograph: n of m white cells called ALL; verdict), "
        "OUT/scan.json (all of it) and an overlay PNG per photograph in OUT/overlays. Unreadable files, grey "
        "photographs and single cells already cut out onto black (`blastscope predict` classifies those) are "
        "listed as not scanned; the exit status is 1 when any was. "
        "Interrupted (Ctrl-C), it writes the files for the photographs finished so far and says so. "
        "For a run trained with --colour-norm subject, the white cells of all the photographs of one call are "
        "taken as one person's and their colours normalised together (--person-by).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a training run directory (runs/...)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="IMAGES_OR_DIRS", help="photographs or folders")
    parser.add_argument(
        "--out", type=Path, default=Path("blastscope-scan"), help="folder to write into (default %(default)s)"
    )
    parser.add_argument(
        "--red-cell-diameter",
        type=red_cell_diameter,
        metavar="PX",
        help="red-cell diameter in the photographs, px; sets the scale cells are cut out at (default: 1/6.4 of "
        f"the longer side, as in a BCCD field: 100 px at 640x480). At least {MIN_RED_CELL_DIAMETER:g} px, below "
        "which the segmentation's smallest sizes are under a pixel, and below a photograph's shorter side, else "
        "that photograph is listed as not scanned (a whole white cell must fit)",
    )
    parser.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"largest photograph read, in pixels (default {DEFAULT_MAX_PIXELS:,}; {PIXEL_LIMIT_HELP}; guards "
        "against decompression bombs): a larger one is listed as not scanned",
    )
    parser.add_argument("--tta", action="store_true", help="average each cell over its 8 flips/rotations")
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto (default): ONNX Runtime when RUN/export holds a model, else PyTorch",
    )
    parser.add_argument("--variant", help="exported variant to use (fp32, int8, bf16); default: export.json's choice")
    parser.add_argument(
        "--threshold",
        type=probability_threshold,
        metavar="P",
        help="decide at p(positive) >= P for this call instead of the run's stored operating point (no refer band)",
    )
    parser.add_argument(
        "--person-by",
        choices=SCAN_PERSON_BY,
        default="all",
        help="for a run trained with --colour-norm subject, whose cells are whose: all (default: every photograph "
        "of this call is one person's smear; all are held until their cells are classified together) or file "
        "(each photograph its own person). Runs without it ignore it",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.api import load
    from blastscope.cli._interrupt import Interrupted
    from blastscope.cli._output import check_writable
    from blastscope.cli.predict import expand_inputs, tta_line
    from blastscope.data.classes import positive_class_line
    from blastscope.errors import ImageError
    from blastscope.inference.tta import VIEW_NAMES
    from blastscope.metrics import class_display_name
    from blastscope.workflows.scan import ScanWriter
    from blastscope.workflows.scan.outputs import OVERLAY_DIR

    check_writable(args.out / OVERLAY_DIR, "--out")  # a file of that name stops here in one line, not in ScanWriter
    ignored: list[tuple[Path, str]] = []
    paths = _photographs(expand_inputs(args.inputs, ignored), args.out)
    classifier = load(
        args.run_dir,
        backend=args.backend,
        variant=args.variant,
        threshold=args.threshold,
        threshold_by="scan --threshold",
    )
    point = classifier.operating_point
    photographs = f"{len(paths)} photograph{'s' * (len(paths) != 1)}"
    print(f"{classifier.name}: {photographs}, backend {classifier.backend}", file=sys.stderr)
    print(positive_class_line(point.positive_class, point.classes, "run", class_display_name), file=sys.stderr)
    print(f"decision: {point.describe()}", file=sys.stderr)
    print(f"referral: {classifier.describe_referral()}", file=sys.stderr)
    for line in classifier.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.tta:
        print(tta_line(point, VIEW_NAMES, args.run_dir), file=sys.stderr)
    about = {
        "model": classifier.name,
        "backend": classifier.backend,
        "classes": list(point.classes),
        "operating_point": {**point.to_dict(), "description": point.describe()},
        "tta": args.tta,
    }
    writer = ScanWriter(args.out, point.classes, point.positive_class, about)
    together = classifier.per_person and args.person_by == "all"
    if classifier.per_person:
        print(_person_line(len(paths), together), file=sys.stderr)
    try:
        scans = (
            classifier.scan_together(
                paths,
                red_cell_diameter=args.red_cell_diameter,
                tta=args.tta,
                names=[str(path) for path in paths],
                max_pixels=args.max_pixels,
            )
            if together
            else []
        )
        for i, path in enumerate(paths):
            try:
                if together:
                    scan = scans[i]
                    if isinstance(scan, ImageError):
                        raise scan
                else:
                    scan = classifier.scan(
                        path,
                        red_cell_diameter=args.red_cell_diameter,
                        tta=args.tta,
                        name=str(path),
                        max_pixels=args.max_pixels,
                    )
            except ImageError as error:
                print(f"skipped {error}", file=sys.stderr)
                writer.add_error(str(path), error.reason)
                continue
            print(_written(partial(writer.add, scan, path), writer, args.out))
    except KeyboardInterrupt:  # Ctrl-C: the photographs finished are written below, not lost with the rest
        writer.interrupted(len(paths))
    written = _written(writer.close, writer, args.out)
    overall = writer.overall()
    print(overall["summary"])
    if ignored:
        print(f"{len(ignored)} more ignored in the folders, not read (the 'ignored' lines above)", file=sys.stderr)
    print(f"wrote {', '.join(str(path) for path in written)} and the overlays in {args.out / 'overlays'}")
    if overall["interrupted"] is not None:
        raise Interrupted(
            f"{args.out} holds the {len(writer.images)} of {len(paths)} photographs finished (its summary says it "
            f"was interrupted); running the same command again scans all {len(paths)} from the start, replacing them"
        )
    return 1 if overall["failed"] else 0


def _photographs(paths: list[Path], out: Path) -> list[Path]:
    """Each photograph once, in the order first given, and none from ``out``: one named twice (``photos
    photos/a.jpg``) would count its cells twice in the totals (and, for a run normalising colours per person, weigh
    twice in that person's colours), and an earlier scan's overlays in an ``--out`` inside the folder scanned would be
    scanned as photographs."""
    own = out.resolve()
    first: dict[Path, Path] = {}
    in_out = 0
    for path in paths:
        resolved = path.resolve()
        if resolved.is_relative_to(own):
            in_out += 1
            continue
        given = first.setdefault(resolved, path)
        if given is not path:
            print(f"ignored {path}: the same file as {given}, scanned once", file=sys.stderr)
    if in_out:
        print(f"ignored {in_out} file{'s' * (in_out != 1)} in {out}: this scan's own output", file=sys.stderr)
    if not first:
        raise BlastscopeError(f"no photographs to scan outside {out} (--out)")
    return list(first.values())


def _person_line(photographs: int, together: bool) -> str:
    """How a run that normalises colours per person groups the cells of this call, in one line."""
    if together:
        return (
            f"colours normalised per person: the white cells of all {photographs} photograph"
            f"{'s' * (photographs != 1)} taken as one person's; run scan once per person"
        )
    return "colours normalised per person: each photograph's white cells taken as one person's"


def _written(write: Callable[[], T], writer: ScanWriter, out: Path) -> T:
    """``write()``, its ``OSError`` (a full disk, mostly) turned into one line: the file, what is kept, the fix."""
    try:
        return write()
    except OSError as error:
        raise BlastscopeError(
            f"stopped: {error.filename or out}: {error.strerror or error}; {writer.saved_note()}; "
            "free space or choose another --out, then run again"
        ) from error
