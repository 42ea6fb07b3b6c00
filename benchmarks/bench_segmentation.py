"""White-cell segmentation against ground truth: BCCD white-cell boxes, and C-NMC cells pasted onto real smears.

    python benchmarks/bench_segmentation.py --bccd ../shared/data/bccd --cnmc ../shared/data/cnmc-dev \\
        --limit 364 --composites 300 --seed 0

(a) **Finding white cells** in BCCD smear photographs (364 fields, 640x480, MIT licence, BCCD Dataset by Shenggan):
every white cell :func:`blastscope.segmentation.label_white_cells` finds, cells cut by the border included, is
matched one-to-one to the annotated WBC boxes (greedy, highest IoU first); a match at box IoU >= 0.5 is a true
positive. Printed: recall and precision against the targets (>= 0.95, >= 0.90), the same with cells cut by the border
left out on both sides, the images with misses and extra cells, and the time per image on one thread.

(b) **Cutting a cell out**, with exact ground truth: a C-NMC 2019 cell (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New
Delhi, via TCIA: doi:10.7937/tcia.2019.dc64i46r) is on black, so its mask is exact (brightest channel >= 12, largest
component, holes filled). It is pasted, at ``--cell-scale``, off-centre onto a square of a BCCD field that overlaps no
annotated WBC box (fields with no WBC box are not used: their white cells went unannotated), and
:func:`blastscope.segmentation.segment_cell` cuts it back out. ``--stain-strength`` makes the pasted cells paler
(C-NMC cells are darker than BCCD's white cells) to test fainter stains. Printed: the median mask IoU against the target
(>= 0.90), its distribution, and the worst composites. Also: :func:`is_on_black` on the C-NMC cells (True expected)
and on the composites (False expected).

(c) **What cutting out costs the classifier**: ``bench_segmentation_f1.py --run RUN_DIR`` pastes a C-NMC-trained run's
own test cells the same way (:func:`make_composite`) and compares its weighted F1 on them with the same cells on black.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.transform import rescale
from threadpoolctl import threadpool_limits

from blastscope.segmentation import SegmentedCell, is_on_black, label_white_cells, segment_cell
from blastscope.segmentation.background import CELL_LEVEL

RECALL_TARGET, PRECISION_TARGET, IOU_TARGET = 0.95, 0.90, 0.90
MATCH_IOU = 0.5
BCCD_LIGHT = np.array([210.0, 212.0, 210.0])  # typical BCCD background, the light a pasted cell's density is against
Box = tuple[int, int, int, int]


@dataclass
class FieldResult:
    name: str
    truth: list[Box]
    found: list[Box]
    found_cut: list[bool]
    seconds: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=Path("../shared/data/bccd"), help="BCCD folder (JPEGImages/, ...)")
    parser.add_argument("--cnmc", type=Path, default=Path("../shared/data/cnmc-dev"), help="C-NMC folder with MANIFEST")
    parser.add_argument("--limit", type=int, default=364, help="BCCD fields to use, in name order (default all 364)")
    parser.add_argument("--composites", type=int, default=300, help="C-NMC composites to build (0: skip part b)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composites (cells, fields, positions)")
    parser.add_argument("--cell-scale", type=float, default=1.0, help="resize C-NMC cells by this before pasting")
    parser.add_argument(
        "--stain-strength",
        type=float,
        default=1.0,
        help="multiply the pasted cells' optical density by this (1: as in C-NMC; 0.5: about as pale as BCCD nuclei)",
    )
    parser.add_argument("--crop-margin", type=float, default=0.3, help="crop margin around a WBC box, box sides")
    parser.add_argument("--out", type=Path, help="write per-image / per-composite CSVs into this folder")
    args = parser.parse_args(argv)
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    with threadpool_limits(1):
        started = time.perf_counter()
        if args.limit > 0:
            fields = bench_fields(args.bccd, args.limit)
            report_fields(fields, args.out)
            report_crops(bench_crops(args.bccd, args.limit, args.crop_margin))
        if args.composites > 0:
            composites = bench_composites(
                args.bccd, args.cnmc, args.composites, args.seed, args.cell_scale, args.stain_strength
            )
            report_composites(composites, args.out)
        print(f"total {time.perf_counter() - started:.0f} s, one thread")
    return 0


# --- (a) BCCD boxes ------------------------------------------------------------------------------------------------


def read_boxes(annotation: Path, name: str = "WBC") -> list[Box]:
    """The Pascal-VOC boxes of class ``name``, as (x0, y0, x1, y1)."""
    boxes = []
    for item in ElementTree.parse(annotation).getroot().iter("object"):
        if item.findtext("name") != name:
            continue
        box = item.find("bndbox")
        boxes.append(tuple(int(float(box.findtext(key))) for key in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def box_iou(a: Box, b: Box) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match(truth: list[Box], found: list[Box]) -> list[tuple[int, int, float]]:
    """One-to-one matches (truth index, found index, IoU) at IoU >= 0.5, greedily by highest IoU."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, matches = set(), set(), []
    for iou, i, j in pairs:
        if iou < MATCH_IOU:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            matches.append((i, j, iou))
    return matches


def bench_fields(root: Path, limit: int) -> list[FieldResult]:
    images = sorted((root / "JPEGImages").glob("*.jpg"))[:limit]
    if not images:
        sys.exit(f"no BCCD images under {root / 'JPEGImages'}")
    results = []
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        begun = time.perf_counter()
        labels = label_white_cells(rgb)
        seconds = time.perf_counter() - begun
        windows = ndi.find_objects(labels.cells)
        found = [(w[1].start, w[0].start, w[1].stop, w[0].stop) for w in windows if w is not None]
        truth = read_boxes(root / "Annotations" / f"{path.stem}.xml")
        results.append(FieldResult(path.stem, truth, found, [bool(c) for c in labels.cut_by_border], seconds))
    return results


def score(results: list[FieldResult], complete_only: bool, shape: tuple[int, int] = (480, 640)) -> dict:
    """Recall and precision; with ``complete_only``, truth boxes at the image edge and cells flagged as cut by the
    border are "don't care": matched or not, they count neither way."""
    hits = truth_count = found_count = 0
    for result in results:
        matches = match(result.truth, result.found)
        ignore_t = {i for i, t in enumerate(result.truth) if complete_only and _at_edge(t, shape)}
        ignore_f = {j for j, cut in enumerate(result.found_cut) if complete_only and cut}
        for i, j, _ in matches:  # a match with either side ignored is ignored as a whole
            if i in ignore_t or j in ignore_f:
                ignore_t.add(i)
                ignore_f.add(j)
        hits += sum(1 for i, j, _ in matches if i not in ignore_t)
        truth_count += len(result.truth) - len(ignore_t)
        found_count += len(result.found) - len(ignore_f)
    return {
        "recall": hits / truth_count if truth_count else float("nan"),
        "precision": hits / found_count if found_count else float("nan"),
        "hits": hits,
        "truth": truth_count,
        "found": found_count,
    }


def _at_edge(box: Box, shape: tuple[int, int], margin: int = 2) -> bool:
    height, width = shape
    return box[0] <= margin or box[1] <= margin or box[2] >= width - margin or box[3] >= height - margin


def report_fields(results: list[FieldResult], out: Path | None) -> None:
    seconds = np.array([r.seconds for r in results])
    print(f"\n(a) BCCD: {len(results)} fields, {sum(len(r.truth) for r in results)} annotated WBC boxes")
    for label, complete in (("all cells (cut by the border included)", False), ("complete cells only", True)):
        s = score(results, complete)
        print(
            f"  {label:<40} recall {s['recall']:.3f} ({s['hits']}/{s['truth']}, target >= {RECALL_TARGET:.2f}: "
            f"{_verdict(s['recall'] >= RECALL_TARGET)})   precision {s['precision']:.3f} ({s['hits']}/{s['found']}, "
            f"target >= {PRECISION_TARGET:.2f}: {_verdict(s['precision'] >= PRECISION_TARGET)})"
        )
    print(
        f"  time per field, one thread: median {np.median(seconds) * 1000:.0f} ms, 95th percentile "
        f"{np.percentile(seconds, 95) * 1000:.0f} ms, max {seconds.max() * 1000:.0f} ms"
    )
    misses, extras = [], []
    for result in results:
        matches = match(result.truth, result.found)
        matched_t = {i for i, _, _ in matches}
        matched_f = {j for _, j, _ in matches}
        for i, box in enumerate(result.truth):
            if i not in matched_t:
                best = max((box_iou(box, f) for f in result.found), default=0.0)
                misses.append(f"{result.name} {box} best IoU {best:.2f}")
        for j, box in enumerate(result.found):
            if j not in matched_f:
                extras.append(f"{result.name} {box}{' cut by border' if result.found_cut[j] else ''}")
    print(f"  missed WBC boxes ({len(misses)}): " + ("; ".join(misses) or "none"))
    print(f"  cells found that match no WBC box ({len(extras)}): " + ("; ".join(extras) or "none"))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "bccd.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "truth_boxes", "found_boxes", "found_cut", "matched", "seconds"])
            for r in results:
                matched = len(match(r.truth, r.found))
                writer.writerow([r.name, r.truth, r.found, r.found_cut, matched, f"{r.seconds:.4f}"])


def bench_crops(root: Path, limit: int, margin: float) -> list[tuple[str, float, bool, float]]:
    """Single-cell crops: each WBC box away from the edge, widened by ``margin`` box sides on every side, segmented
    with :func:`segment_cell`; (image, box IoU of the cell found with the annotated box, found, seconds)."""
    results = []
    for path in sorted((root / "JPEGImages").glob("*.jpg"))[:limit]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for box in read_boxes(root / "Annotations" / f"{path.stem}.xml"):
            if _at_edge(box, rgb.shape[:2]):
                continue
            x0, y0, x1, y1 = box
            pad_x, pad_y = round(margin * (x1 - x0)), round(margin * (y1 - y0))
            left, top = max(0, x0 - pad_x), max(0, y0 - pad_y)
            crop = rgb[top : min(rgb.shape[0], y1 + pad_y), left : min(rgb.shape[1], x1 + pad_x)]
            begun = time.perf_counter()
            cell = segment_cell(crop)
            seconds = time.perf_counter() - begun
            shifted = (x0 - left, y0 - top, x1 - left, y1 - top)
            iou = box_iou(shifted, cell.box) if cell.found and cell.box else 0.0
            results.append((path.stem, iou, cell.found, seconds))
    return results


def report_crops(results: list[tuple[str, float, bool, float]]) -> None:
    ious = np.array([r[1] for r in results])
    seconds = np.array([r[3] for r in results])
    print(f"\n(a') BCCD single-cell crops (complete WBC boxes widened by the margin): {len(results)} crops")
    print(
        f"  cell found {sum(r[2] for r in results)}/{len(results)}; box IoU >= 0.5: {np.mean(ious >= MATCH_IOU):.3f}; "
        f"median box IoU {np.median(ious):.3f}; time per crop median {np.median(seconds) * 1000:.0f} ms"
    )
    low = sorted(results, key=lambda r: r[1])[:5]
    print("  lowest: " + "; ".join(f"{name} IoU {iou:.2f}" for name, iou, _, _ in low))


# --- (b) C-NMC cells pasted onto BCCD backgrounds ------------------------------------------------------------------


@dataclass
class CompositeResult:
    cell: str
    field: str
    side: int
    iou: float
    found: bool
    reason: str
    seconds: float
    on_black_cell: bool
    on_black_composite: bool


def cnmc_cell(path: Path, scale: float, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The cell cropped to its box, and its exact mask (brightest channel >= 12, largest component, holes filled);
    with ``strength`` != 1 its optical density (against BCCD's background light) is scaled: paler or darker."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    bright = rgb.max(axis=2) >= CELL_LEVEL
    labels, count = ndi.label(bright)
    sizes = np.bincount(labels.ravel())[1:]
    mask = ndi.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    rows, cols = ndi.find_objects(mask.astype(np.int8))[0]
    rgb, mask = rgb[rows, cols], mask[rows, cols]
    if scale != 1.0:
        rgb = np.clip(np.rint(rescale(rgb, scale, order=1, channel_axis=2, preserve_range=True)), 0, 255)
        rgb = rgb.astype(np.uint8)
        mask = rescale(mask.astype(float), scale, order=1) >= 0.5
    if strength != 1.0:
        density = -np.log((rgb.astype(np.float64) + 1) / (BCCD_LIGHT + 1))
        rgb = np.clip(np.rint((BCCD_LIGHT + 1) * np.exp(-strength * density) - 1), 0, 255).astype(np.uint8)
    return rgb, mask


def background_square(
    rng: np.random.Generator, fields: list[tuple[Path, list[Box]]], side: int
) -> tuple[np.ndarray, str]:
    """A ``side`` px square of a BCCD field that overlaps no annotated WBC box."""
    for _ in range(1000):
        path, boxes = fields[int(rng.integers(len(fields)))]
        with Image.open(path) as image:
            width, height = image.size
            if side > min(width, height):
                continue
            for _ in range(50):
                x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
                if all(x + side <= b[0] or x >= b[2] or y + side <= b[1] or y >= b[3] for b in boxes):
                    rgb = np.asarray(image.convert("RGB"))
                    return rgb[y : y + side, x : x + side].copy(), f"{path.stem}@{x},{y}"
    raise RuntimeError(f"no {side} px square without a WBC box found in the BCCD fields")


@dataclass
class Composite:
    """A C-NMC cell pasted onto a square of a BCCD field: the image, the cell's exact mask in it, and the field."""

    image: np.ndarray
    truth: np.ndarray
    field: str


def bccd_backgrounds(bccd: Path) -> list[tuple[Path, list[Box]]]:
    """The BCCD fields usable as backgrounds, with their WBC boxes: only fields with at least one WBC box (the fields
    without one hold white cells nobody boxed, which a pasted cell could land on)."""
    fields = []
    for path in sorted((bccd / "JPEGImages").glob("*.jpg")):
        boxes = read_boxes(bccd / "Annotations" / f"{path.stem}.xml")
        if boxes:
            fields.append((path, boxes))
    if not fields:
        sys.exit(f"no BCCD field with a WBC box under {bccd}")
    return fields


def make_composite(
    rng: np.random.Generator,
    cell_path: Path,
    fields: list[tuple[Path, list[Box]]],
    cell_scale: float = 1.0,
    strength: float = 1.0,
) -> Composite:
    """Paste the cell of ``cell_path`` (:func:`cnmc_cell`) onto a square of a BCCD field 1.6 times its longer side
    (at most 480 px), off-centre by up to a quarter of the free room so that segmentation cannot rely on the centre."""
    rgb, mask = cnmc_cell(cell_path, cell_scale, strength)
    height, width = mask.shape
    side = min(480, int(np.ceil(1.6 * max(height, width))))
    background, field = background_square(rng, fields, side)
    top = (side - height) // 2 + int(rng.integers(-((side - height) // 4), (side - height) // 4 + 1))
    left = (side - width) // 2 + int(rng.integers(-((side - width) // 4), (side - width) // 4 + 1))
    composite = background
    composite[top : top + height, left : left + width][mask] = rgb[mask]
    truth = np.zeros((side, side), bool)
    truth[top : top + height, left : left + width] = mask
    return Composite(composite, truth, field)


def mask_iou(segmented: SegmentedCell, truth: np.ndarray) -> float:
    """IoU of the mask :func:`segment_cell` found (nothing when not found) with the pasted cell's exact mask."""
    predicted = segmented.input_mask(truth.shape) if segmented.found else np.zeros_like(truth)
    return float((predicted & truth).sum() / (predicted | truth).sum())


def bench_composites(
    bccd: Path, cnmc: Path, count: int, seed: int, cell_scale: float, strength: float = 1.0
) -> list[CompositeResult]:
    with open(cnmc / "MANIFEST.csv", newline="") as handle:
        cells = [row["path"] for row in csv.DictReader(handle)]
    fields = bccd_backgrounds(bccd)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(cells), size=min(count, len(cells)), replace=False)
    results = []
    for pick in picks:
        cell_path = cnmc / cells[int(pick)]
        composite = make_composite(rng, cell_path, fields, cell_scale, strength)
        begun = time.perf_counter()
        segmented = segment_cell(composite.image)
        seconds = time.perf_counter() - begun
        on_black = is_on_black(np.asarray(Image.open(cell_path).convert("RGB")))
        results.append(
            CompositeResult(
                cells[int(pick)],
                composite.field,
                composite.truth.shape[0],
                mask_iou(segmented, composite.truth),
                segmented.found,
                segmented.reason,
                seconds,
                on_black,
                is_on_black(composite.image),
            )
        )
    return results


def report_composites(results: list[CompositeResult], out: Path | None) -> None:
    ious = np.array([r.iou for r in results])
    seconds = np.array([r.seconds for r in results])
    median = float(np.median(ious))
    print(f"\n(b) C-NMC cells on BCCD backgrounds: {len(results)} composites")
    print(f"  median mask IoU {median:.3f} (target >= {IOU_TARGET:.2f}: {_verdict(median >= IOU_TARGET)})")
    quantiles = [5, 10, 25, 50, 75, 90]
    print("  IoU percentiles " + ", ".join(f"p{q} {np.percentile(ious, q):.3f}" for q in quantiles))
    print(
        f"  IoU >= 0.95: {np.mean(ious >= 0.95):.1%}   >= 0.90: {np.mean(ious >= 0.9):.1%}   "
        f">= 0.80: {np.mean(ious >= 0.8):.1%}   < 0.50: {np.mean(ious < 0.5):.1%}   not found: "
        f"{sum(not r.found for r in results)}"
    )
    print(
        f"  time per composite, one thread: median {np.median(seconds) * 1000:.0f} ms, max "
        f"{seconds.max() * 1000:.0f} ms (squares of {min(r.side for r in results)}-{max(r.side for r in results)} px)"
    )
    print(
        f"  is_on_black: C-NMC cells {sum(r.on_black_cell for r in results)}/{len(results)} True, composites "
        f"{sum(not r.on_black_composite for r in results)}/{len(results)} False"
    )
    print("  worst composites:")
    for r in sorted(results, key=lambda r: r.iou)[:5]:
        print(f"    IoU {r.iou:.3f}  {r.cell} on {r.field} ({r.side} px): {r.reason}")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "composites.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["cell", "field", "side", "iou", "found", "seconds", "reason"])
            for r in results:
                writer.writerow([r.cell, r.field, r.side, f"{r.iou:.4f}", r.found, f"{r.seconds:.4f}", r.reason])


def _verdict(passed: bool) -> str:
    return "met" if passed else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
