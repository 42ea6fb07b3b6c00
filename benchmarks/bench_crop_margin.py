"""Does a single-cell crop's margin change the cell blastscope cuts out of it? Real BCCD cells, margins 0-120 px.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_crop_margin.py --bccd ../shared/data/bccd --cells 50 \\
        --run /tmp/bench-accuracy/base-balanced/runs/fold-1

Each annotated white-cell box of a BCCD field (MIT licence, BCCD Dataset by Shenggan; boxes away from the field's
edge, fields in name order, the first ``--cells``) is cropped with ``--margins`` px of its field around it on every
side (clipped at the field's edge), and :func:`blastscope.segmentation.segment_cell` cuts the cell out of each crop
with its default scale (no red-cell diameter given: what a user's crop gets). Printed per margin: the mask IoU, in
field coordinates, against the mask cut out of the crop with the largest margin (the same cell, more context), as
the median and minimum over cells, and how many crops had no cell found (IoU 0). With ``--run``, each crop also goes
through ``blastscope.load(RUN)`` (its own ``--segment`` mode, at its stored operating point) and the spread of
p(positive) across one cell's margins (largest minus smallest) is printed, with how many cells change their label.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from bench_segmentation import _at_edge, read_boxes
from PIL import Image
from threadpoolctl import threadpool_limits

from blastscope.segmentation import segment_cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=Path("../shared/data/bccd"), help="BCCD folder (JPEGImages/, ...)")
    parser.add_argument("--cells", type=int, default=50, help="white cells to use (default 50)")
    parser.add_argument("--margins", default="0,10,25,50,80,120", help="crop margins, px (largest: the reference)")
    parser.add_argument("--run", type=Path, help="also classify every crop with this run and report p(ALL)'s spread")
    args = parser.parse_args(argv)
    margins = sorted(int(m) for m in args.margins.split(","))
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    classifier = None
    if args.run is not None:
        import blastscope

        classifier = blastscope.load(args.run)
    started = time.perf_counter()
    ious, spreads, flips, probabilities = [], [], 0, []
    with threadpool_limits(1):
        for name, rgb, box in _cells(args.bccd, args.cells):
            masks, positive, labels = [], [], set()
            for margin in margins:
                crop, origin = _crop(rgb, box, margin)
                cell = segment_cell(crop)
                full = np.zeros(rgb.shape[:2], bool)
                if cell.found:
                    top, left = origin
                    full[top : top + crop.shape[0], left : left + crop.shape[1]] = cell.input_mask(crop.shape)
                masks.append(full)
                if classifier is not None:
                    prediction = classifier.predict(Image.fromarray(crop))[0]
                    positive.append(prediction.probabilities[classifier.operating_point.positive_class])
                    labels.add(prediction.label)
            reference = masks[-1]
            ious.append([_iou(mask, reference) for mask in masks])
            if classifier is not None:
                probabilities.append(positive)
                spreads.append(max(positive) - min(positive))
                flips += len(labels) > 1
            print(f"  {name} box {box}: IoU {' '.join(f'{v:.2f}' for v in ious[-1])}", flush=True)
    table = np.array(ious)
    print(f"\n{len(table)} BCCD white cells, crops at margins {margins} px; mask IoU against margin {margins[-1]} px:")
    for column, margin in enumerate(margins[:-1]):
        values = table[:, column]
        print(
            f"  margin {margin:>3} px: median {np.median(values):.3f}, min {values.min():.3f}, "
            f">= 0.9: {np.mean(values >= 0.9):.0%}, no cell found: {int((values == 0).sum())}"
        )
    worst = table[:, :-1].min(axis=1)
    print(f"  per cell, worst margin: median {np.median(worst):.3f}, min {worst.min():.3f}")
    if classifier is not None:
        spread = np.array(spreads)
        means = np.array(probabilities).mean(axis=0)
        print(
            f"p({classifier.operating_point.positive_class}) across margins ({classifier.name}): spread median "
            f"{np.median(spread):.3f}, 90th percentile {np.percentile(spread, 90):.3f}, max {spread.max():.3f}; "
            f"{flips} of {len(spread)} cells change label; mean p per margin: "
            + ", ".join(f"{m}: {p:.3f}" for m, p in zip(margins, means, strict=True))
        )
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


def _cells(root: Path, limit: int):
    """(field name, field RGB, box) of the first ``limit`` WBC boxes away from their field's edge, in name order."""
    count = 0
    for path in sorted((root / "JPEGImages").glob("*.jpg")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for box in read_boxes(root / "Annotations" / f"{path.stem}.xml"):
            if count >= limit:
                return
            if not _at_edge(box, rgb.shape[:2]):
                count += 1
                yield path.stem, rgb, box


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int], margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The box widened by ``margin`` px on every side, clipped to the field, and its (top, left) in the field."""
    x0, y0, x1, y1 = box
    top, left = max(0, y0 - margin), max(0, x0 - margin)
    return rgb[top : min(rgb.shape[0], y1 + margin), left : min(rgb.shape[1], x1 + margin)], (top, left)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
