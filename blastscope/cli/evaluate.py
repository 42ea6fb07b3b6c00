"""``blastscope evaluate RUN_DIR``: score a trained run on its test split, another split, or a new dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blastscope.cli._arguments import red_cell_diameter, refer_error, target_sensitivity, threshold_choice, whole_number
from blastscope.data.preprocessing import SEGMENT_MODES
from blastscope.inference.precision import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained run: metrics with subject-bootstrap CIs, calibration, optional TTA",
        description=(
            "Predict a run's test split (or every cell of --data) and write evaluation.json and predictions.csv. "
            "Without --threshold or --target-sensitivity the run is scored at its stored operating point (threshold "
            "and temperature), the one predict, serve and the Python API use. With one, a new point is chosen "
            "(temperature fitted on the run's validation split, threshold chosen there or given), scored, and "
            "stored in the run. --refer-error also chooses, on validation, a band around the threshold whose cells "
            "are flagged 'uncertain — refer' for a person to review, and stores it with the point."
        ),
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory made by `blastscope train`")
    parser.add_argument("--data", type=Path, help="evaluate on all of this dataset instead (same classes as the run)")
    parser.add_argument(
        "--split", choices=("test", "val", "train"), default="test", help="which part of the run's split"
    )
    parser.add_argument(
        "--threshold",
        type=threshold_choice,
        metavar="val|X",
        help="choose and store a new operating point: a threshold on p(positive class) (two-class runs), or 'val' "
        "to choose it on the validation split (best weighted F1, or see --target-sensitivity; for a multi-class run, "
        "'val' fits only the temperature); default: the run's stored point",
    )
    parser.add_argument(
        "--target-sensitivity",
        type=target_sensitivity,
        metavar="S",
        help="choose and store a new operating point whose threshold is the highest reaching this validation "
        "sensitivity, e.g. 0.95 (two-class runs)",
    )
    parser.add_argument(
        "--refer-error",
        type=refer_error,
        metavar="E",
        help="choose and store a refer band: the fewest validation cells around the threshold to refer to a person "
        "so that at most this share of the cells it calls are wrong, e.g. 0.05 (labels stay the threshold's; "
        "alone it keeps the stored threshold)",
    )
    parser.add_argument("--tta", action="store_true", help="also report test-time augmentation (8 flips/rotations)")
    parser.add_argument(
        "--transductive-neighbours",
        type=whole_number("a number of neighbours", "10"),
        metavar="K",
        help="also report, in a separate labelled section, each cell's probability mixed with its K most similar "
        "cells of this evaluation set (Pan et al. 2019, the C-NMC 2019 winner's neighbourhood correction): not a "
        "per-cell prediction; never the default, never used by predict or serve",
    )
    parser.add_argument(
        "--bootstrap",
        type=whole_number("a number of resamples", "1000", minimum=0),
        default=1000,
        metavar="N",
        help="bootstrap resamples; 0 turns CIs off",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--checkpoint", default="best", help="best, last, or a path to a .ckpt file")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="inference precision; fp32 (default) gives the numbers predict, serve and the export give",
    )
    parser.add_argument("--batch-size", type=whole_number("a batch size", "32"), default=32)
    parser.add_argument(
        "--segment",
        choices=SEGMENT_MODES,
        help="cut cells out of their background as this mode says instead of as the run was trained (default: the "
        "run's own); cells whose cell cannot be found are skipped and listed either way",
    )
    parser.add_argument(
        "--red-cell-diameter",
        type=red_cell_diameter,
        metavar="PX",
        help="cut cells out at this red-cell diameter (px of the images, at least 8) instead of the run's own "
        "(measured on each image unless the run was trained with one); an operating point chosen so is not stored",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default RUN_DIR/evaluation-<split or data name>, "
        "with -<checkpoint> for another checkpoint than best)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.cli._output import check_writable
    from blastscope.evaluation.evaluate import evaluate_run, format_summary, write_evaluation

    scored = "" if args.checkpoint == "best" else f"-{Path(args.checkpoint).stem}"  # never over the best's folder
    out = args.out or args.run_dir / f"evaluation-{args.data.name if args.data else args.split}{scored}"
    check_writable(out, "--out")  # before the cells are scored and a new operating point is stored in the run
    result = evaluate_run(
        args.run_dir,
        data=args.data,
        split=args.split,
        threshold=args.threshold,  # checked before the run loads: even --threshold 0.5 conflicts with a target
        tta=args.tta,
        bootstrap=args.bootstrap,
        seed=args.seed,
        target_sensitivity=args.target_sensitivity,
        refer_error=args.refer_error,
        segment=args.segment,
        red_cell_diameter=args.red_cell_diameter,
        transductive_neighbours=args.transductive_neighbours,
        checkpoint=args.checkpoint,
        precision=args.precision,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
        announce=lambda line: print(line, file=sys.stderr, flush=True),
    )
    path = write_evaluation(result, out)
    print(format_summary(result))
    written = [path.with_name(name) for name in ("predictions.csv", "risk_coverage.png")]
    print(f"\nwrote {path}, " + " and ".join(str(file) for file in written if file.is_file()))
    if result.stored_to:
        print(f"stored the operating point in {result.stored_to}: predict, serve and the Python API now decide there")
    return 0
