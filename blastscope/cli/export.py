"""``blastscope export``: a trained run as ONNX files for ONNX Runtime, checked against PyTorch on every test cell."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from blastscope.export.choice import F1_TOLERANCE, MIN_AGREEMENT, MIN_DECISION_CELLS

    parser = subparsers.add_parser(
        "export",
        help="export a trained run to ONNX (optionally int8 / bf16 variants)",
        description="Write RUN_DIR/export/model.onnx carrying its preprocessing, class names and the run's operating "
        "point (threshold, temperature) as metadata, check its logits against PyTorch on all the run's test cells "
        "(for a run without any, on the training cells int8 calibrates on), score "
        "every variant's weighted F1 and label agreement with fp32 at that operating point on the validation and test "
        "splits, and record it all in RUN_DIR/export/export.json. `predict` and `serve` then use int8 by default only "
        f"when the run has at least {MIN_DECISION_CELLS} validation cells, int8's labels agree with fp32's on at least "
        f"{MIN_AGREEMENT:.0%} of them and its validation weighted F1 is at most {F1_TOLERANCE:g} below fp32's; "
        "otherwise fp32, and the reason is printed. The test split never takes part in the choice (its numbers are "
        "shown for information).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/...)")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    parser.add_argument(
        "--quantize", choices=["int8"], help="also build a static int8 (QDQ) model calibrated on training cells"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also build a model with bfloat16-stored weights (half the size; ONNX Runtime CPU computes it in fp32)",
    )
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.export.onnx import EXPORT_DIR, RECORD_NAME, export_run
    from blastscope.inference.decision import OperatingPoint
    from blastscope.runs import load_run

    trained = load_run(args.run_dir, checkpoint=args.checkpoint)
    record = export_run(trained, int8=args.quantize == "int8", bf16=args.bf16)
    print(f"decision in every file and score: {OperatingPoint.from_dict(record['operating_point']).describe()}")
    print(
        f"weighted F1 per variant (minus fp32's) and labels equal to fp32's: validation {record['val_cells']} cells, "
        f"test {record['test_cells']} cells"
    )
    for variant, info in record["variants"].items():
        print(
            f"  {variant:5s} {_scores(info)}  {info['bytes'] / 1e6:6.2f} MB  {info['file']}  [{_mark(variant, record)}]"
        )
    print(record["default_reason"])
    print(f"wrote {Path(args.run_dir) / EXPORT_DIR / RECORD_NAME}")
    return 0


def _scores(info: dict[str, Any]) -> str:
    return "  ".join(
        f"{split} {info[f'{split}_weighted_f1']:.4f} ({info[f'{split}_f1_minus_fp32']:+.4f}, "
        f"agree {info[f'{split}_agreement']:.1%})"
        for split in ("val", "test")
        if f"{split}_weighted_f1" in info
    )


def _mark(variant: str, record: dict[str, Any]) -> str:
    if variant == record["default"]:
        return "default"
    info = record["variants"][variant]
    if "meets_rule" not in info:
        return "reference"
    if variant not in record["default_rule"]["candidates"]:
        return "never the default"
    return "meets rule" if info["meets_rule"] else "fails rule"
