"""``blastscope ensemble RUN RUN [RUN ...] --out DIR``: several finished runs as one run averaging their calibrated
probabilities."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="make one run that averages several runs' calibrated probabilities (evaluate/predict/serve/export it)",
        description=(
            "Write a new run folder DIR whose network averages the members' probabilities, each scaled by the "
            "temperature stored in its run (`evaluate --threshold val` fits it). DIR holds every member's weights, "
            "so it keeps working when the member folders move. Members must share classes, positive class, "
            "interpolation, --segment, --crop-fraction, --channels, stain normalisation and denoising; their "
            "architectures, normalisation and input sizes may differ (DIR takes the largest and resizes it for "
            "smaller members). When all trained on one split, DIR keeps it: `evaluate DIR` "
            "scores its test cells and `evaluate DIR --threshold val` chooses the ensemble's own threshold and "
            "temperature on its validation cells. Members trained on different splits (e.g. cross-validation folds) "
            "leave few or no held-out cells: DIR's threshold is then chosen on the members' validation cells pooled, "
            "each scored by the member that validated on it; score DIR with `evaluate DIR --data OTHER` on cells "
            "none of them trained on."
        ),
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN", help="two or more finished run folders")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the new run folder (must not exist)")
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="which checkpoint of each member to take"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.cli._output import check_writable
    from blastscope.workflows.ensemble import make_ensemble

    check_writable(args.out, "--out")
    out = make_ensemble(args.run_dirs, args.out, checkpoint=args.checkpoint)
    print(f"wrote {out}: predict, evaluate, serve or export it like any run")
    return 0
