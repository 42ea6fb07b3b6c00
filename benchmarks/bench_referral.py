"""Does the refer band keep its promise on new people? Targets asked for against errors got, on a finished CV benchmark.

``evaluate --refer-error R`` chooses a band around the threshold on the run's validation cells: it refers the cells
inside the band to a person, and among the cells it calls the validation error rate is at most R
(:func:`blastscope.evaluation.referral.choose_refer_band`). Whether that holds on people the run never saw is what a
lab needs to know before trusting "uncertain — refer". For every fold of a ``bench_accuracy.py`` output this chooses
the band for each target R on the fold's validation cells (scored once into ``runs/fold-i/evaluation-val``, as
``bench_threshold_rules.py`` does, and scaled with the fold's temperature), applies it to the fold's test cells at the
fold's own threshold, and pools the out-of-fold cells: the error rate among called cells and the share called
(coverage), each with a 95% interval from 1,000 resamples of people within each class, and the people whose cells
are called wrong most. Writes ``referral.png`` into each benchmark folder: error got against error asked for, and
coverage.

    python benchmarks/bench_referral.py results/frozen-448 results/measured-tempered-448

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from bench_threshold_rules import (  # noqa: E402
    benchmark_arguments,
    read_predictions,
    subject_resampler,
    validation_cells,
)

from blastscope.evaluation.bootstrap import resample_indices  # noqa: E402
from blastscope.evaluation.referral import choose_refer_band  # noqa: E402
from blastscope.inference.decision import OperatingPoint, uncertain  # noqa: E402

TARGETS = (0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20)
RESAMPLES = 1000
CLASSES = ("hem", "all")


def two_columns(p: np.ndarray) -> np.ndarray:
    """p(ALL) as the (N, 2) probabilities of ``CLASSES``."""
    return np.stack([1.0 - p, p], axis=1)


@dataclass(frozen=True)
class Fold:
    """One fold of a benchmark: its operating point, its validation cells (labels 1 = ALL, tempered p(ALL)) and its
    test cells (subjects, labels, p(ALL) at the same temperature)."""

    point: OperatingPoint
    val_labels: np.ndarray
    val_p: np.ndarray
    subjects: np.ndarray
    labels: np.ndarray
    p: np.ndarray


def read_folds(bench: Path) -> list[Fold]:
    """Every fold of ``bench``, read once for all targets."""
    folds = []
    for fold in sorted((bench / "runs").glob("fold-*")):
        recorded = json.loads((bench / "scored" / f"{fold.name}.json").read_text())["fold"]
        point = OperatingPoint(
            classes=CLASSES, positive_class="all", threshold=recorded["threshold"], temperature=recorded["temperature"]
        )
        _, val_labels, val_p = validation_cells(bench, fold)
        subjects, labels, p, threshold = read_predictions(fold / "evaluation-test" / "predictions.csv")
        if abs(threshold - point.threshold) > 1e-9:
            raise SystemExit(f"{fold}: its test predictions were decided at {threshold}, not at its recorded threshold")
        folds.append(Fold(point, val_labels, val_p, subjects, labels, p))
    return folds


def refer_out_of_fold(folds: list[Fold], target: float) -> dict[str, np.ndarray | int]:
    """Every fold's test cells with the band chosen for ``target`` on its validation cells: subjects, labels,
    whether each is called wrong, whether it is called at all, and how many folds found no band (all called)."""
    parts: list[tuple[np.ndarray, ...]] = []
    without_band = 0
    for fold in folds:
        choice = choose_refer_band(fold.val_labels, two_columns(fold.val_p), fold.point, target)
        without_band += choice.band is None
        banded = replace(fold.point, refer_band=choice.band)
        wrong = (fold.p >= fold.point.threshold).astype(int) != fold.labels
        parts.append((fold.subjects, fold.labels, wrong, ~uncertain(two_columns(fold.p), banded)))
    subjects, labels, wrong, called = (np.concatenate(column) for column in zip(*parts, strict=True))
    return {"subjects": subjects, "labels": labels, "wrong": wrong, "called": called, "without_band": without_band}


def interval(values: list[float]) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def measure(bench: Path, rng: np.random.Generator) -> list[dict[str, object]]:
    rows, folds = [], read_folds(bench)
    for target in TARGETS:
        cells = refer_out_of_fold(folds, target)
        wrong, called = cells["wrong"], cells["called"]
        units = subject_resampler(cells["subjects"], cells["labels"])
        errors, coverages = [], []
        for _ in range(RESAMPLES):
            i = resample_indices(*units, rng)
            errors.append(float(wrong[i][called[i]].mean()) if called[i].any() else 0.0)
            coverages.append(float(called[i].mean()))
        worst = Counter(cells["subjects"][wrong & called]).most_common(3)
        rows.append(
            {
                "target": target,
                "error_called": float(wrong[called].mean()),
                "error_ci": interval(errors),
                "coverage": float(called.mean()),
                "coverage_ci": interval(coverages),
                "error_all": float(wrong.mean()),
                "without_band": cells["without_band"],
                "worst": worst,
            }
        )
    return rows


def show(bench: Path, rows: list[dict[str, object]]) -> None:
    print(f"{bench}: out-of-fold test cells, each fold's band chosen on its own validation people")
    print("  asked  got among called [95% CI]   called [95% CI]        folds without a band  most errors called")
    for row in rows:
        low, high = row["error_ci"]
        c_low, c_high = row["coverage_ci"]
        worst = ", ".join(f"{subject} {count}" for subject, count in row["worst"])
        print(
            f"  {100 * row['target']:4.1f}%  {100 * row['error_called']:5.1f}% [{100 * low:4.1f}, {100 * high:4.1f}]"
            f"       {100 * row['coverage']:5.1f}% [{100 * c_low:4.1f}, {100 * c_high:4.1f}]"
            f"     {row['without_band']}                     {worst}"
        )
    print(f"  (no band: {100 * rows[0]['error_all']:.1f}% errors among all cells)")


def plot(bench: Path, rows: list[dict[str, object]]) -> Path:
    asked = np.array([100 * row["target"] for row in rows])
    got = np.array([100 * row["error_called"] for row in rows])
    got_ci = np.array([[100 * v for v in row["error_ci"]] for row in rows])
    called = np.array([100 * row["coverage"] for row in rows])
    called_ci = np.array([[100 * v for v in row["coverage_ci"]] for row in rows])
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    top = max(float(got_ci.max()), float(asked.max())) * 1.1
    left.plot([0, top], [0, top], color="0.6", linestyle="--", label="kept promise (got = asked)")
    left.fill_between(asked, got_ci[:, 0], got_ci[:, 1], color="#c0392b", alpha=0.2, label="95% CI (people resampled)")
    left.plot(asked, got, marker="o", color="#c0392b", label="new people (out-of-fold)")
    left.set(xlabel="error rate asked for among called cells (%)", ylabel="error rate got (%)", xlim=(0, None))
    left.set_ylim(0, top)
    left.set_title("Errors among the cells it calls")
    left.legend(loc="upper left", fontsize=8)
    right.fill_between(asked, called_ci[:, 0], called_ci[:, 1], color="#2c7fb8", alpha=0.2)
    right.plot(asked, called, marker="o", color="#2c7fb8")
    right.set(xlabel="error rate asked for among called cells (%)", ylabel="cells called, not referred (%)")
    right.set_ylim(0, 100)
    right.set_xlim(0, None)
    right.set_title("Cells it calls (the rest: uncertain - refer)")
    figure.suptitle(f"Refer band chosen on each fold's validation people: {bench.name}  (C-NMC 2019, CC BY 3.0)")
    out = bench / "referral.png"
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def main() -> None:
    benchmarks, rng = benchmark_arguments(__doc__)
    for bench in benchmarks:
        rows = measure(bench, rng)
        show(bench, rows)
        print(f"  wrote {plot(bench, rows)}")


if __name__ == "__main__":
    main()
