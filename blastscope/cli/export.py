"""``blastscope export``: a trained run as ONNX files for ONNX Runtime, checked against PyTorch on its test cells."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained run to ONNX (optionally int8 / bf16 variants)",
        description="Write RUN_DIR/export/model.onnx carrying its preprocessing and class names as metadata, check "
        "its logits against PyTorch on the run's test cells, score every variant's weighted F1 on the validation and "
        "test splits and record it all in RUN_DIR/export/export.json. `predict` and `serve` then use the fastest "
        "variant whose validation F1 stays within 0.005 of fp32 (chosen on validation so the test split stays "
        "unseen; test F1 is shown for information).",
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
    from blastscope.runs.folder import load_run

    trained = load_run(args.run_dir, checkpoint=args.checkpoint)
    record = export_run(trained, int8=args.quantize == "int8", bf16=args.bf16)
    chosen_on = record["default_chosen_on"]
    print(
        f"weighted F1 per variant, minus fp32's: validation {record['val_cells']} cells, test {record['test_cells']} "
        f"cells; default: the fastest within {record['f1_tolerance']} of fp32 on "
        f"{'validation' if chosen_on == 'val' else 'test (the run has no validation cells)'}"
    )
    for variant, info in record["variants"].items():
        mark = "default" if variant == record["default"] else ("ok" if info["within_tolerance"] else "too far")
        scores = "  ".join(
            f"{split} {info[f'{split}_weighted_f1']:.4f} ({info[f'{split}_f1_minus_fp32']:+.4f})"
            for split in ("val", "test")
            if f"{split}_weighted_f1" in info
        )
        print(f"  {variant:5s} {scores}  {info['bytes'] / 1e6:6.2f} MB  {info['file']}  [{mark}]")
    print(f"wrote {Path(args.run_dir) / EXPORT_DIR / RECORD_NAME}")
    return 0
