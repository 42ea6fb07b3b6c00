"""The gain of one cross-validated recipe over another on the same cells: paired subject-bootstrap intervals.

Reads the ``predictions.csv`` of two ``bench_accuracy.py`` folders made on the same folds (every cell in both, in the
same fold) and prints, for weighted F1 (at each fold's chosen threshold), ROC-AUC and balanced accuracy, the
difference ``OTHER - BASE`` with a 95% percentile interval from resampling subjects within each class: both recipes
are scored on the same resampled cells every time, so the interval is that of the difference, far narrower than the
two recipes' own intervals would suggest.

    python benchmarks/bench_accuracy_delta.py /tmp/bench-accuracy/base /tmp/bench-accuracy/size-160 [--variant _tta]

``--variant _tta`` (or ``_transductive``) scores OTHER's columns of that variant, e.g. TTA against no TTA when BASE
and OTHER are the same folder.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from blastscope.errors import BlastscopeError
from blastscope.metrics import roc_auc, weighted_f1

METRICS = ("weighted_f1", "roc_auc", "balanced_accuracy")


def read_predictions(folder: Path, variant: str = "") -> dict[str, dict[str, str]]:
    """``path -> row`` of a benchmark folder's pooled out-of-fold predictions, with ``variant``'s columns as the
    plain ones; paths are taken within the dataset (relative to the folder holding all its cells), so a benchmark of
    a copy of the dataset (``subject_colour_copy.py``) pairs with the original's."""
    path = folder / "predictions.csv"
    if not path.is_file():
        raise BlastscopeError(f"{path} is missing: give a folder that bench_accuracy.py finished")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if variant and f"decided_label{variant}" not in rows[0]:
        raise BlastscopeError(f"{path} has no {variant} columns: re-run its benchmark with that option")
    root = os.path.commonpath([row["path"] for row in rows])
    return {
        os.path.relpath(row["path"], root): {
            **row,
            "p_all": row[f"p_all{variant}"],
            "decided_label": row[f"decided_label{variant}"],
        }
        for row in rows
    }


def scores(y_true: np.ndarray, p_all: np.ndarray, called_all: np.ndarray) -> dict[str, float]:
    """Weighted F1 of the calls, ROC-AUC of p(ALL) and balanced accuracy, ALL being class 1."""
    y_pred = called_all.astype(int)
    sensitivity = float(np.mean(y_pred[y_true == 1] == 1))
    specificity = float(np.mean(y_pred[y_true == 0] == 0))
    probabilities = np.stack([1 - p_all, p_all], axis=1)
    return {
        "weighted_f1": weighted_f1(y_true, probabilities, y_pred, 1),
        "roc_auc": roc_auc(y_true, probabilities, y_pred, 1),
        "balanced_accuracy": (sensitivity + specificity) / 2,
    }


def paired_delta(base: Path, other: Path, variant: str, resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """Estimate and 95% interval of ``other - base`` per metric, resampling subjects within each class."""
    before, after = read_predictions(base), read_predictions(other, variant)
    if before.keys() != after.keys() or any(before[p]["fold"] != after[p]["fold"] for p in before):
        raise BlastscopeError(f"{base} and {other} hold other cells or folds: compare benchmarks of the same folds")
    paths = sorted(before)
    y_true = np.array([before[p]["label"] == "all" for p in paths], dtype=int)
    subjects = np.array([before[p]["subject"] for p in paths])
    columns = {
        name: (
            np.array([float(rows[p]["p_all"]) for p in paths]),
            np.array([rows[p]["decided_label"] == "all" for p in paths]),
        )
        for name, rows in (("base", before), ("other", after))
    }
    cells_of = {s: np.flatnonzero(subjects == s) for s in np.unique(subjects)}
    by_class = [[s for s in cells_of if y_true[cells_of[s][0]] == c] for c in (0, 1)]
    rng = np.random.default_rng(seed)

    def delta(index: np.ndarray) -> dict[str, float]:
        one, two = (scores(y_true[index], p[index], called[index]) for p, called in columns.values())
        return {metric: two[metric] - one[metric] for metric in METRICS}

    estimate = delta(np.arange(len(paths)))
    draws = []
    for _ in range(resamples):
        chosen = [s for group in by_class for s in rng.choice(group, size=len(group), replace=True)]
        draws.append(delta(np.concatenate([cells_of[s] for s in chosen])))
    return {
        metric: {
            "estimate": estimate[metric],
            "low": float(np.percentile([d[metric] for d in draws], 2.5)),
            "high": float(np.percentile([d[metric] for d in draws], 97.5)),
        }
        for metric in METRICS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="bench_accuracy.py --out folder of the baseline")
    parser.add_argument("other", type=Path, help="bench_accuracy.py --out folder of the recipe compared with it")
    parser.add_argument("--variant", default="", help="score OTHER's _tta or _transductive columns")
    parser.add_argument("--bootstrap", type=int, default=1000, help="subject resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        result = paired_delta(args.base, args.other, args.variant, args.bootstrap, args.seed)
    except BlastscopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.other.name}{args.variant} - {args.base.name}, paired subject bootstrap ({args.bootstrap} resamples)")
    for metric, entry in result.items():
        print(f"  delta {metric:<18} {entry['estimate']:+.3f} [95% CI {entry['low']:+.3f}, {entry['high']:+.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
