"""Weighted F1 of a C-NMC-trained run on its test cells pasted onto BCCD smears, against the same cells on black.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_segmentation_f1.py \\
        --run /tmp/bench-accuracy/cv-proxy-clean/runs/fold-1 --bccd ../shared/data/bccd --max-cells 600 --seed 0

The cells are the run's own **test** cells (subjects it never trained or validated on, read from the run's split),
``--max-cells`` of them drawn without replacement so that each test subject keeps its share (seeded). Each is pasted
onto a BCCD background exactly as part (b) of ``bench_segmentation.py`` does (:func:`make_composite`). Both versions
go through the run's normal door, ``blastscope.load(run)``, with the run's recorded segment mode and at its stored
operating point: (a) the cell on black as C-NMC gives it (``--segment auto`` leaves it as it is) and (b) the
composite (``auto`` cuts its cell out onto the 450 px canvas; a cell it cannot find is skipped, and counted).

Printed: weighted F1 of both and their difference (composite minus black) with a 95% paired subject-bootstrap
interval (:func:`blastscope.evaluation.bootstrap.bootstrap_ci`: every resample draws both versions of the same
cells), on the composites found and again with every composite not found counted as an error, so that skipping
cannot flatter the gap; the label agreement; the target (|difference| <= 0.02); and which cells change their label,
by mask IoU (:func:`segment_cell` against the pasted cell's exact mask), cell size and stain density.

Data: C-NMC 2019 (SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA, doi:10.7937/tcia.2019.dc64i46r, CC BY 3.0);
BCCD Dataset by Shenggan (MIT licence).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_segmentation import BCCD_LIGHT, bccd_backgrounds, make_composite, mask_iou
from PIL import Image
from threadpoolctl import threadpool_limits

import blastscope
from blastscope.api import Classifier
from blastscope.data.table import Cell
from blastscope.errors import ImageError
from blastscope.evaluation.bootstrap import bootstrap_ci
from blastscope.metrics import MetricFn, weighted_f1
from blastscope.runs import TrainedRun, load_run
from blastscope.segmentation import segment_cell

GAP_TARGET = 0.02


@dataclass
class CellResult:
    """One test cell classified on black and as a composite (``p_*``: p(positive class); composite fields are
    meaningless when ``found`` is False)."""

    cell: Cell
    field: str
    label_black: str
    p_black: float
    found: bool
    reason: str
    label_composite: str
    p_composite: float
    iou: float
    area: int
    density: float
    extra: float
    missing: float
    seconds: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run trained on C-NMC cells (blastscope train)")
    parser.add_argument("--bccd", type=Path, default=Path("../shared/data/bccd"), help="BCCD folder (JPEGImages/, ...)")
    parser.add_argument("--max-cells", type=int, default=600, help="test cells to use, each subject keeping its share")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, the backgrounds and the bootstrap")
    parser.add_argument("--resamples", type=int, default=1000, help="subject-bootstrap resamples")
    parser.add_argument("--out", type=Path, help="write the per-cell CSV (cells.csv) into this folder")
    args = parser.parse_args(argv)
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    started = time.perf_counter()
    trained = load_run(args.run)
    clf = blastscope.load(args.run)
    test = trained.split.parts.get("test", [])
    if not test:
        sys.exit(f"{args.run}: the run's split has no test cells")
    rng = np.random.default_rng(args.seed)
    cells = stratified_sample(test, args.max_cells, rng)
    describe_run(trained, clf, test, cells)
    fields = bccd_backgrounds(args.bccd)
    with threadpool_limits(1):
        results, unreadable = classify_cells(clf, cells, fields, rng)
    report(results, unreadable, clf, args.resamples, args.seed)
    if args.out:
        write_cells(results, args.out / "cells.csv")
    print(f"total {time.perf_counter() - started:.0f} s, one thread")
    return 0


def stratified_sample(cells: list[Cell], count: int, rng: np.random.Generator) -> list[Cell]:
    """``count`` cells without replacement, each subject keeping its share (largest remainder), in the split's
    order; all of them when ``count`` is not smaller."""
    if count >= len(cells):
        return list(cells)
    by_subject: dict[str, list[int]] = defaultdict(list)
    for index, cell in enumerate(cells):
        by_subject[cell.subject or ""].append(index)
    subjects = sorted(by_subject)
    shares = np.array([count * len(by_subject[s]) / len(cells) for s in subjects])
    quotas = np.floor(shares).astype(int)
    for i in np.argsort(-(shares - quotas), kind="stable")[: count - quotas.sum()]:
        quotas[i] += 1
    chosen = [int(i) for s, q in zip(subjects, quotas, strict=True) for i in rng.choice(by_subject[s], q, False)]
    return [cells[i] for i in sorted(chosen)]


def describe_run(trained: TrainedRun, clf: Classifier, test: list[Cell], cells: list[Cell]) -> None:
    subjects = sorted({c.subject or "" for c in test})
    print(f"run: {trained.run_dir} ({trained.display_name}, {trained.weights_source}, {trained.image_size} px)")
    if made_by := bench_accuracy_origin(trained.run_dir):
        print(f"  made by: {made_by}")
    print(
        f"  data: {trained.config.get('data')}; split {trained.split.hash}, subject-level {trained.split.subject_level}"
    )
    print(f"  segment mode: {clf.preprocessing.segment}; operating point: {clf.operating_point.origin()}")
    counts = {label: sum(c.label == label for c in cells) for label in clf.classes}
    print(
        f"  test split: {len(test)} cells of {len(subjects)} subjects never trained or validated on "
        f"({', '.join(subjects)}); sample: {len(cells)} cells ({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )


def bench_accuracy_origin(run_dir: Path) -> str | None:
    """The command and fold of ``bench_accuracy.py`` that trained ``run_dir``, from its ``results.json``."""
    results = run_dir.resolve().parent.parent / "results.json"
    if not results.is_file():
        return None
    record = json.loads(results.read_text())
    for fold in record.get("folds", []):
        if Path(fold.get("run_dir", "")).resolve() == run_dir.resolve():
            return f"`{record.get('command')}`, fold {fold['fold']} of {len(record['folds'])}"
    return None


def classify_cells(
    clf: Classifier, cells: list[Cell], fields: list[tuple[Path, list]], rng: np.random.Generator
) -> tuple[list[CellResult], list[str]]:
    """Each cell on black and as a composite through ``clf`` (prepared one by one, so that a composite whose cell is
    not found is skipped, not classified); cells whose original cannot be read are listed and left out."""
    black_inputs, composite_inputs, rows, unreadable = [], [], [], []
    positive = clf.operating_point.positive_class
    for cell in cells:
        try:
            black = clf.prepare(cell.path)
        except ImageError as error:
            unreadable.append(str(error))
            continue
        composite = make_composite(rng, cell.path, fields)
        begun = time.perf_counter()
        try:
            prepared, reason = clf.prepare(Image.fromarray(composite.image)), ""
        except ImageError as error:
            prepared, reason = None, error.reason
        seconds = time.perf_counter() - begun
        segmented = segment_cell(composite.image)  # the door's own call, again, for the mask it found
        predicted = segmented.input_mask(composite.truth.shape) if segmented.found else np.zeros_like(composite.truth)
        truth = composite.truth
        density = -np.log((composite.image[truth].astype(np.float64) + 1) / (BCCD_LIGHT + 1)).mean()
        black_inputs.append(black)
        composite_inputs.append(prepared)
        rows.append(
            CellResult(
                cell, composite.field, "", 0.0, prepared is not None, reason or segmented.reason, "", float("nan"),
                mask_iou(segmented, truth), int(truth.sum()), float(density),
                float((predicted & ~truth).sum() / truth.sum()), float((truth & ~predicted).sum() / truth.sum()),
                seconds,
            )
        )  # fmt: skip
    for row, prediction in zip(rows, clf.predict(black_inputs), strict=True):
        row.label_black, row.p_black = prediction.label, prediction.probabilities[positive]
    found = [row for row in rows if row.found]
    for row, prediction in zip(found, clf.predict([i for i in composite_inputs if i is not None]), strict=True):
        row.label_composite, row.p_composite = prediction.label, prediction.probabilities[positive]
    return rows, unreadable


def paired_metrics(rows: list[CellResult], classes: tuple[str, ...]) -> tuple[dict[str, MetricFn], np.ndarray]:
    """Metrics of both versions of the cells, for :func:`bootstrap_ci`, and the ``y_prob`` to pass it: each cell's row
    number, so that every metric of a resample sees the two versions of the very cells it drew."""
    truth = np.array([classes.index(r.cell.label) for r in rows])
    black = np.array([classes.index(r.label_black) for r in rows])
    found = np.array([r.found for r in rows])
    composite = np.array([classes.index(r.label_composite) if r.found else -1 for r in rows])
    as_error = np.where(found, composite, (truth + 1) % len(classes))  # a cell not found counts as a wrong call
    shape = np.zeros((0, len(classes)))

    def f1(index: np.ndarray, decided: np.ndarray) -> float:
        return weighted_f1(truth[index], shape, decided[index])

    def metric(fn: Callable[[np.ndarray], float | None]) -> MetricFn:
        return lambda y_true, y_prob, y_pred, positive: fn(y_prob[:, 0].astype(int))

    def on_found(fn: Callable[[np.ndarray], float]) -> MetricFn:
        return metric(lambda index: fn(index[found[index]]) if found[index].any() else None)

    metrics = {
        "black": metric(lambda i: f1(i, black)),
        "black_found": on_found(lambda i: f1(i, black)),
        "composite_found": on_found(lambda i: f1(i, composite)),
        "gap_found": on_found(lambda i: f1(i, composite) - f1(i, black)),
        "composite_as_error": metric(lambda i: f1(i, as_error)),
        "gap_as_error": metric(lambda i: f1(i, as_error) - f1(i, black)),
        "agreement": on_found(lambda i: float(np.mean(composite[i] == black[i]))),
    }
    return metrics, np.arange(len(rows), dtype=np.float64)[:, None]


def report(rows: list[CellResult], unreadable: list[str], clf: Classifier, resamples: int, seed: int) -> None:
    classes = clf.classes
    metrics, row_numbers = paired_metrics(rows, classes)
    truth = np.array([classes.index(r.cell.label) for r in rows])
    black = np.array([classes.index(r.label_black) for r in rows])
    boot = bootstrap_ci(truth, row_numbers, black, [r.cell.subject for r in rows], metrics, None, resamples, seed)
    m = boot["metrics"]

    def ci(name: str) -> str:
        return f"{m[name]['estimate']:+.3f} [{m[name]['low']:+.3f}, {m[name]['high']:+.3f}]"

    missing = [r for r in rows if not r.found]
    print(f"\n(c) {len(rows)} test cells, on black and pasted onto BCCD backgrounds, classified by the run")
    print(
        f"  original cells that could not be read (left out): {len(unreadable)}"
        + "".join(f"\n    {u}" for u in unreadable)
    )
    print(f"  composites whose cell was not found (skipped): {len(missing)} of {len(rows)}")
    for r in missing:
        print(f"    {r.cell.path.name} ({r.cell.label}) on {r.field}: {r.reason}")
    if len(missing) == len(rows):
        print("  no composite's cell was found: nothing to compare")
        return
    print(f"  weighted F1 on black: {m['black']['estimate']:.3f} (all {len(rows)} cells)")
    print(
        f"  weighted F1 of the composites found: {m['composite_found']['estimate']:.3f}, the same cells on black "
        f"{m['black_found']['estimate']:.3f}; difference {ci('gap_found')} "
        f"(target within {GAP_TARGET}: {_verdict(abs(m['gap_found']['estimate']) <= GAP_TARGET)})"
    )
    print(
        f"  not-found composites counted as errors: weighted F1 {m['composite_as_error']['estimate']:.3f}; difference "
        f"{ci('gap_as_error')} "
        f"(target within {GAP_TARGET}: {_verdict(abs(m['gap_as_error']['estimate']) <= GAP_TARGET)})"
    )
    print(
        f"  label agreement (composites found): {m['agreement']['estimate']:.3f} "
        f"[{m['agreement']['low']:.3f}, {m['agreement']['high']:.3f}]; 95% intervals from {resamples} paired "
        f"resamples of {boot['n_units']} {boot['unit']}s ({' + '.join(map(str, boot['units_per_class']))} per class)"
    )
    ious = np.array([r.iou for r in rows])
    print(
        f"  mask IoU of the composites' cells: median {np.median(ious):.3f}, 5th percentile "
        f"{np.percentile(ious, 5):.3f}, lowest {ious.min():.3f}"
    )
    report_flips([r for r in rows if r.found], clf.operating_point.threshold)
    seconds = np.array([r.seconds for r in rows])
    print(f"  time to segment and prepare a composite, one thread: median {np.median(seconds) * 1000:.0f} ms")


def report_flips(rows: list[CellResult], threshold: float | None) -> None:
    """Which cells change their label: by class and direction, and against IoU, size, stain density and how near the
    threshold the cell was on black."""
    flipped = np.array([r.label_black != r.label_composite for r in rows])
    shift = np.array([r.p_composite - r.p_black for r in rows])
    print(f"  cells whose label changed: {flipped.sum()} of {len(rows)}")
    for label in sorted({r.cell.label for r in rows}):
        own = np.array([r.cell.label == label for r in rows])
        print(
            f"    true {label}: {flipped[own].sum()} of {own.sum()} changed "
            f"({', '.join(f'{a}->{b} {n}' for (a, b), n in _directions(rows, own).items()) or 'none'}); "
            f"p(positive) composite minus black: mean {shift[own].mean():+.3f}, "
            f"median |.| {np.median(np.abs(shift[own])):.3f}"
        )
    features = {
        "mask IoU": np.array([r.iou for r in rows]),
        "background taken in (share of cell area)": np.array([r.extra for r in rows]),
        "cell left out (share of cell area)": np.array([r.missing for r in rows]),
        "cell area, px": np.array([r.area for r in rows], dtype=float),
        "stain density (mean OD)": np.array([r.density for r in rows]),
    }
    if threshold is not None:
        features["|p on black - threshold|"] = np.abs(np.array([r.p_black for r in rows]) - threshold)
    print("    medians, changed vs unchanged cells; |p shift| by tercile of each (low / mid / high):")
    for name, values in features.items():
        tercile = np.argsort(np.argsort(values, kind="stable")) * 3 // len(values)  # by rank: ties split evenly
        by_tercile = " / ".join(
            f"{np.median(np.abs(shift[tercile == t])):.3f}" for t in range(3) if (tercile == t).any()
        )
        changed = _number(np.median(values[flipped])) if flipped.any() else "-"
        print(f"      {name:<42} {changed:>7} vs {_number(np.median(values[~flipped])):>7}   |shift| {by_tercile}")


def _directions(rows: list[CellResult], own: np.ndarray) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r, keep in zip(rows, own, strict=True):
        if keep and r.label_black != r.label_composite:
            counts[(r.label_black, r.label_composite)] += 1
    return dict(counts)


def write_cells(rows: list[CellResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", "subject", "label", "field", "label_black", "p_black", "found", "label_composite", "p_composite",
             "iou", "area", "density", "extra", "missing", "seconds", "reason"]
        )  # fmt: skip
        for r in rows:
            writer.writerow(
                [r.cell.path, r.cell.subject, r.cell.label, r.field, r.label_black, f"{r.p_black:.4f}", r.found,
                 r.label_composite, f"{r.p_composite:.4f}", f"{r.iou:.4f}", r.area, f"{r.density:.4f}",
                 f"{r.extra:.4f}", f"{r.missing:.4f}", f"{r.seconds:.4f}", r.reason]
            )  # fmt: skip


def _number(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"


def _verdict(passed: bool) -> str:
    return "met" if passed else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
