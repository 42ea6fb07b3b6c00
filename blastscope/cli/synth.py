"""``blastscope synth``: draw the built-in synthetic demo dataset in the C-NMC layout."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

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
    parser.add_argument("--image-size", type=int, default=64, metavar="PX", help="image side in pixels (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--separation",
        type=float,
        default=1.6,
        metavar="SD",
        help="distance between the classes per cell trait, in within-class SDs: 0 = indistinguishable "
        "(default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.data.synth import synthesize

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
