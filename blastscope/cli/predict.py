"""``blastscope predict``: classify image files or folders with a trained run, optionally with Grad-CAM overlays."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blastscope.errors import BlastscopeError

if TYPE_CHECKING:
    from PIL.Image import Image

    from blastscope.api.classifier import Classifier

Row = dict[str, Any]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify cell images with a trained run",
        description="Print (or write) the class and per-class probabilities of each image. Unreadable files are "
        "listed and skipped; the exit status is 1 when any file failed.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/...)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="IMAGES_OR_DIRS", help="image files or folders")
    parser.add_argument("--out", type=Path, help="write predictions to this .csv or .json file instead of stdout")
    parser.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations of each image")
    parser.add_argument("--gradcam", type=Path, metavar="DIR", help="save a Grad-CAM overlay PNG per image here")
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto (default): ONNX Runtime when RUN_DIR/export holds a model, else PyTorch",
    )
    parser.add_argument("--variant", help="exported variant to use (fp32, int8, bf16); default: export.json's choice")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="decide at p(positive) >= P for this call instead of the run's stored operating point",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.api import load
    from blastscope.data.classes import positive_class_line
    from blastscope.metrics import class_display_name

    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        raise BlastscopeError(f"{args.out}: --out must end in .csv or .json")
    if args.out and not args.out.parent.is_dir():
        raise BlastscopeError(f"{args.out}: folder {args.out.parent} does not exist; create it or choose another --out")
    if args.batch_size < 1:
        raise BlastscopeError(f"--batch-size must be at least 1 (got {args.batch_size})")
    paths = expand_inputs(args.inputs)
    classifier = load(args.run_dir, backend=args.backend, variant=args.variant, threshold=args.threshold)
    print(f"{classifier.name}: {len(paths)} images, backend {classifier.backend}", file=sys.stderr)
    point = classifier.operating_point
    print(positive_class_line(point.positive_class, point.classes, "run", class_display_name), file=sys.stderr)
    print(f"decision: {point.describe()}", file=sys.stderr)
    if args.gradcam:
        args.gradcam.mkdir(parents=True, exist_ok=True)
    rows = [
        row
        for start in range(0, len(paths), args.batch_size)
        for row in predict_chunk(classifier, paths[start : start + args.batch_size], paths, args)
    ]
    write_rows(rows, classifier.classes, args.out)
    failures = sum(row["error"] is not None for row in rows)
    if failures:
        print(f"{failures} of {len(paths)} files could not be read (listed above)", file=sys.stderr)
    return 1 if failures else 0


def predict_chunk(
    classifier: Classifier, chunk: list[Path], all_paths: list[Path], args: argparse.Namespace
) -> list[Row]:
    """One row per file of ``chunk``, in order: its prediction, or why it could not be read."""
    from blastscope.data.images import read_rgb
    from blastscope.errors import ImageError

    images: dict[int, Image] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(chunk):
        try:
            images[i] = read_rgb(path)
        except ImageError as error:
            errors[i] = error.reason
            print(f"skipped {error}", file=sys.stderr)
    predictions = dict(zip(images, classifier.predict(list(images.values()), tta=args.tta), strict=True))
    rows: list[Row] = []
    for i, path in enumerate(chunk):
        if i in errors:
            rows.append(
                {
                    "file": str(path),
                    "label": None,
                    "probabilities": None,
                    "threshold": None,
                    "decided_by": None,
                    "error": errors[i],
                }
            )
            continue
        rows.append({**predictions[i].to_dict(), "file": str(path), "error": None})
        if args.gradcam:
            explanation = classifier.explain(images[i], target=predictions[i].label)
            if explanation.usable:
                explanation.overlay.save(args.gradcam / gradcam_name(path, all_paths))
            else:
                print(f"no Grad-CAM overlay for {path}: {explanation.note}", file=sys.stderr)
    return rows


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given (whatever their extension, so a bad one is reported); folders searched for image files by the
    dataset scan's own finder: symlinked folders followed once, OS litter (``__MACOSX/``, ``._*``, ``.DS_Store``)
    ignored, and other hidden image files named on stderr and left out."""
    from blastscope.data.files import find_image_files

    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = find_image_files(item)
            for path, reason in found.skipped:
                print(f"ignored {path}: {reason}", file=sys.stderr)
            paths.extend(found.files)
        elif item.exists():
            paths.append(item)
        else:
            raise BlastscopeError(f"{item}: no such file or folder")
    if not paths:
        raise BlastscopeError(f"no image files in {', '.join(map(str, inputs))} (.png .jpg .bmp .tif .webp)")
    return paths


def gradcam_name(path: Path, all_paths: list[Path]) -> str:
    """``<stem>_gradcam.png``, prefixed by the parent folder when two inputs share a stem."""
    clash = sum(p.stem == path.stem for p in all_paths) > 1
    return f"{path.parent.name}_{path.stem}_gradcam.png" if clash else f"{path.stem}_gradcam.png"


def write_rows(rows: list[Row], classes: tuple[str, ...], out: Path | None) -> None:
    """JSON keeps the nested probabilities; CSV and stdout get one ``p_<class>`` column per class."""
    if out is not None and out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=2) + "\n")
        return
    header = ["file", "label", *(f"p_{label}" for label in classes), "threshold", "decided_by", "error"]
    flat = [
        {
            "file": row["file"],
            "label": row["label"] or "",
            **{f"p_{label}": f"{row['probabilities'][label]:.6f}" if row["probabilities"] else "" for label in classes},
            "threshold": "" if row["threshold"] is None else f"{row['threshold']:.6f}",
            "decided_by": row["decided_by"] or "",
            "error": row["error"] or "",
        }
        for row in rows
    ]
    with out.open("w", newline="") if out is not None else nullcontext(sys.stdout) as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(flat)
