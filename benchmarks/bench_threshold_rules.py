"""Which decision threshold transfers to new people? Rules compared on a finished ``bench_accuracy.py`` output.

``bench_accuracy.py`` chooses each fold's threshold once on that fold's 5-6 validation people, for the best weighted
F1 (``val``). This scores, on the same pooled out-of-fold test cells, three other rules: a fixed 0.5 (``half``), the
median of the thresholds chosen (as ``evaluate --threshold val`` chooses) on 100 bootstrap resamples of the validation
people within each class (``bagged``), and one threshold chosen on every fold's validation cells together
(``pooled``: only a cross-validated ensemble of the K fold runs has those). The pooled threshold for fold i's test
cells leaves out every validation cell of fold i's test people: other folds validate on them (each fold validates on
a share of the other folds' people), and a threshold chosen on the people it is scored on is tuned on the test set.
Each fold's validation cells are scored
once (``runs/fold-i/evaluation-val``) and scaled with the temperature its test cells were. Prints pooled weighted F1
per rule and its paired subject-bootstrap difference to ``val``:

    python benchmarks/bench_threshold_rules.py results/frozen-448 results/measured-tempered-448
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.special import expit, logit
from sklearn.metrics import f1_score

from blastscope.evaluation.bootstrap import resample_indices
from blastscope.evaluation.evaluate import evaluate_run, write_evaluation
from blastscope.evaluation.threshold import threshold_for_weighted_f1
from blastscope.inference.decision import OperatingPoint

BAGS = 100
RESAMPLES = 1000


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Subjects, labels (1 = ALL) and p(ALL) of a ``predictions.csv``, and the threshold it was decided at."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    subjects = np.array([row["subject"] for row in rows])
    labels = np.array([row["label"] == row["positive_class"] for row in rows], dtype=int)
    return (
        subjects,
        labels,
        np.array([float(row[f"p_{rows[0]['positive_class']}"]) for row in rows]),
        float(rows[0]["threshold"]),
    )


def best_threshold(labels: np.ndarray, p: np.ndarray) -> float:
    """The threshold ``evaluate --threshold val`` would choose on these cells (labels 1 = positive, p = p(positive))."""
    point = OperatingPoint(classes=("negative", "positive"), positive_class="positive")
    return threshold_for_weighted_f1(labels, np.stack([1 - p, p], axis=1), point).threshold


def subject_resampler(subjects: np.ndarray, labels: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``resample_indices``' units (each subject's cell indices) and strata (the subjects of each class)."""
    people = np.unique(subjects)
    members = [np.flatnonzero(subjects == person) for person in people]
    classes = np.array([labels[cells[0]] for cells in members])
    return members, [np.flatnonzero(classes == label) for label in np.unique(classes)]


def validation_cells(bench: Path, fold: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fold's validation cells, p(ALL) scaled with the temperature bench_accuracy fitted on them."""
    out = fold / "evaluation-val"
    if not (out / "predictions.csv").exists():
        # store=False: scoring the validation cells at 0.5 must not replace the run's own operating point
        result = evaluate_run(fold, split="val", threshold=0.5, bootstrap=0, chosen_by="threshold rules", store=False)
        write_evaluation(result, out)
    subjects, labels, p, _ = read_predictions(out / "predictions.csv")
    temperature = json.loads((bench / "scored" / f"{fold.name}.json").read_text())["fold"]["temperature"]
    return subjects, labels, expit(logit(np.clip(p, 1e-12, 1 - 1e-12)) / temperature)


def compare(bench: Path, rng: np.random.Generator) -> None:
    tests, thresholds, validation = [], {"val": [], "half": [], "bagged": [], "pooled": []}, []
    for fold in sorted((bench / "runs").glob("fold-*")):
        v_subjects, v_labels, v_p = validation_cells(bench, fold)
        subjects, labels, p, chosen = read_predictions(fold / "evaluation-test" / "predictions.csv")
        units = subject_resampler(v_subjects, v_labels)
        bags = [best_threshold(v_labels[i], v_p[i]) for i in (resample_indices(*units, rng) for _ in range(BAGS))]
        for rule, threshold in (("val", chosen), ("half", 0.5), ("bagged", float(np.median(bags)))):
            thresholds[rule].append(np.full(len(labels), threshold))
        print(f"  {fold.name}: val {chosen:.3f}, bagged {np.median(bags):.3f}")
        tests.append((subjects, labels, p))
        validation.append((v_subjects, v_labels, v_p))
    v_subjects, v_labels, v_p = (np.concatenate(part) for part in zip(*validation, strict=True))
    pooled = []
    for test_subjects, test_labels, _ in tests:
        kept = ~np.isin(v_subjects, test_subjects)  # never the test people's own cells, from any fold
        pooled.append(best_threshold(v_labels[kept], v_p[kept]))
        thresholds["pooled"].append(np.full(len(test_labels), pooled[-1]))
    subjects, labels, p = (np.concatenate(part) for part in zip(*tests, strict=True))
    rules = {rule: np.concatenate(values) for rule, values in thresholds.items()}
    calls = {rule: (p >= threshold).astype(int) for rule, threshold in rules.items()}
    shown = ", ".join(f"{threshold:.3f}" for threshold in pooled)
    print(f"{bench}: {len(labels):,} out-of-fold cells; pooled validation thresholds (test people left out) {shown}")
    differences: dict[str, list[float]] = {rule: [] for rule in rules if rule != "val"}
    units = subject_resampler(subjects, labels)
    for _ in range(RESAMPLES):
        i = resample_indices(*units, rng)
        base = f1_score(labels[i], calls["val"][i], average="weighted")
        for rule, found in differences.items():
            found.append(f1_score(labels[i], calls[rule][i], average="weighted") - base)
    for rule, call in calls.items():
        shown = f"{rule:<7} weighted F1 {f1_score(labels, call, average='weighted'):.3f}"
        if rule in differences:
            low, high = np.percentile(differences[rule], [2.5, 97.5])
            shown += f"  vs val {np.mean(differences[rule]):+.3f} [95% CI {low:+.3f}, {high:+.3f}]"
        print(f"  {shown}")


def benchmark_arguments(description: str) -> tuple[list[Path], np.random.Generator]:
    """The finished ``bench_accuracy.py`` folders named on the command line, and a generator seeded by ``--seed``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", type=Path, nargs="+", help="bench_accuracy.py --out folders, all folds made")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    return args.benchmarks, np.random.default_rng(args.seed)


def main() -> None:
    benchmarks, rng = benchmark_arguments(__doc__)
    for bench in benchmarks:
        compare(bench, rng)


if __name__ == "__main__":
    main()
