"""``blastscope synth``: draw the built-in synthetic demo dataset in the C-NMC layout, or smear photographs."""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

from blastscope.cli._arguments import image_size
from blastscope.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="draw a synthetic C-NMC-layout dataset of stained cells (demo data, no download)",
        description="Draw synthetic stained single cells on black, ALL (blast) vs HEM (normal), in the C-NMC 2019 "
        "layout OUT/training_data/fold_N/{all,hem}/UID_<subject>_<image>_<cell>_<label>.png. The same arguments "
        "always give byte-identical files.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="folder to write the dataset into")
    parser.add_argument(
        "--subjects-per-class", type=int, default=20, metavar="N", help="subjects per class (default %(default)s)"
    )
    parser.add_argument(
        "--cells-per-subject", type=int, default=8, metavar="N", help="cells per subject (default %(default)s)"
    )
    parser.add_argument(
        "--image-size", type=image_size, default=64, metavar="PX", help="image side in pixels (default 64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--separation",
        type=float,
        default=1.6,
        metavar="SD",
        help="distance between the classes per cell trait, in within-class SDs: 0 = indistinguishable "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--smear",
        type=int,
        metavar="N",
        help="instead of the cell dataset, draw N smear-field photographs (640x480 px, 1-4 white cells among red "
        "cells and platelets, the first two touching, every second field with a cell cut by the border) as "
        "OUT/smear_NNN.png, with the true white-cell boxes in OUT/smear_boxes.csv",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.data.synth import synthesize

    if args.smear is not None:
        return write_smear_fields(args.out, args.smear, args.seed, args.overwrite)

    existing = args.out / "training_data"
    if existing.exists():
        if not args.overwrite:
            raise DataError(f"{existing} already exists; choose another OUT or pass --overwrite to replace it")
        shutil.rmtree(existing)
    started = time.perf_counter()
    synthesize(
        args.out,
        subjects_per_class=args.subjects_per_class,
        cells_per_subject=args.cells_per_subject,
        image_size=args.image_size,
        seed=args.seed,
        separation=args.separation,
    )
    cells = 2 * args.subjects_per_class * args.cells_per_subject
    print(
        f"wrote {cells} synthetic cells ({args.subjects_per_class} ALL + {args.subjects_per_class} HEM subjects, "
        f"{args.image_size}x{args.image_size} px, seed {args.seed}) to {args.out} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def write_smear_fields(out: Path, count: int, seed: int, overwrite: bool) -> int:
    """Draw ``count`` smear fields (seeds ``seed``, ``seed + 1``, ...) into ``out`` with their true white-cell boxes."""
    from PIL import Image

    from blastscope.data.synth import smear_field

    if count < 1:
        raise DataError(f"--smear {count}: give the number of smear fields to draw, 1 or more")
    existing = sorted(out.glob("smear_*.png"))
    if existing and not overwrite:
        raise DataError(f"{out} already holds smear fields ({existing[0].name}...); choose another OUT or --overwrite")
    for stale in existing:
        stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for index in range(count):
        field = smear_field(seed + index, height=480, width=640, cut_cells=index % 2)
        name = f"smear_{index:03d}.png"
        Image.fromarray(field.image).save(out / name)
        for cell, (box, cut) in enumerate(zip(field.boxes, field.cut_by_border, strict=True), start=1):
            x0, y0, x1, y1 = box
            rows.append({"file": name, "cell": cell, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "cut_by_border": cut})
    with (out / "smear_boxes.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "cell", "x0", "y0", "x1", "y1", "cut_by_border"])
        writer.writeheader()
        writer.writerows(rows)
    whole = sum(not row["cut_by_border"] for row in rows)
    print(
        f"wrote {count} synthetic smear fields (640x480 px, {whole} whole white cells, {len(rows) - whole} cut by the "
        f"border, seed {seed}) and their boxes to {out} in {time.perf_counter() - started:.1f} s"
    )
    return 0
