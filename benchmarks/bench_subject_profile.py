"""Who is called wrong, and why: each person's cell size against the model's mean p(ALL), from a CV benchmark.

Reads the pooled out-of-fold ``predictions.csv`` of a ``bench_accuracy.py`` folder, measures every cell's area on its
black C-NMC canvas (the largest bright component, holes filled: ``cell_on_black_mask``, px² at the stored 450-px
scale) and prints, per person, the number of cells, the median cell area, the mean p(ALL) and whether the person's
call (mean p(ALL) against their fold's threshold, from the benchmark's ``results.json``) is right, plus the Spearman
rank correlation of median area and mean p(ALL) over the people of each class, the cell-level ROC-AUC of cell area
alone beside the model's, and the model's ROC-AUC among cells of similar size (area quintiles).
``subject_profile.png`` in the folder plots the same: one point per person.

    OMP_NUM_THREADS=1 python benchmarks/bench_subject_profile.py /tmp/bench-accuracy/lr-ft-3e-4-160 [--every 3]

Blasts are larger than normal lymphocytes, and a network learns that; a normal person whose cells are large in these
images (a different magnification, smear or cell population) is then called ALL whatever the colour handling.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from blastscope.data.images import read_rgb  # noqa: E402
from blastscope.evaluation.plots import class_colors, to_png  # noqa: E402
from blastscope.segmentation.background import cell_on_black_mask  # noqa: E402


def profile(cells: list[dict[str, str]], subjects: list[dict[str, Any]], every: int) -> dict[str, dict]:
    """Per person: their row of the benchmark's subject table (class, fold, cells, mean p(ALL), their call) with the
    areas measured (px², every ``every``-th cell of ``predictions.csv``), those cells' p(ALL) and the median area."""
    measured: dict[str, dict[str, list]] = defaultdict(lambda: {"areas": [], "p_all": []})
    for index, row in enumerate(cells):
        person = measured[row["subject"]]
        if index % every == 0 or not person["areas"]:
            person["areas"].append(int(cell_on_black_mask(np.asarray(read_rgb(row["path"]))).sum()))
            person["p_all"].append(float(row["p_all"]))
    return {
        row["subject"]: {
            "label": row["true_class"],
            "fold": row["fold"],
            "cells": row["n_cells"],
            "areas": measured[row["subject"]]["areas"],
            "measured_p_all": measured[row["subject"]]["p_all"],
            "median_area": float(np.median(measured[row["subject"]]["areas"])),
            "mean_p_all": row["mean_probability"]["all"],
            "right": row["predicted_class"] == row["true_class"],
        }
        for row in subjects
    }


def plot(people: dict[str, dict], path: Path) -> None:
    """Median cell area against mean p(ALL), one point per person sized by cells, wrong calls ringed and named."""
    colors = class_colors(["hem", "all"])
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for label, shown in (("hem", "normal (HEM) person"), ("all", "ALL person")):
        group = [p for p in people.values() if p["label"] == label]
        axis.scatter(
            [p["median_area"] / 1000 for p in group],
            [p["mean_p_all"] for p in group],
            s=[20 + p["cells"] / 2 for p in group],
            color=colors[label],
            alpha=0.75,
            label=shown,
        )
    for name, p in people.items():
        if not p["right"]:
            axis.scatter(
                p["median_area"] / 1000,
                p["mean_p_all"],
                s=90 + p["cells"] / 2,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
            )
            axis.annotate(
                name, (p["median_area"] / 1000, p["mean_p_all"]), xytext=(6, -3), textcoords="offset points", fontsize=8
            )
    axis.set_xlabel("median cell area, thousand px² on the 450-px C-NMC canvas")
    axis.set_ylabel("mean p(ALL) of the person's cells (out of fold)")
    axis.set_ylim(0, 1)
    axis.set_title("Each person's cell size against the model's mean p(ALL); wrong calls ringed")
    axis.legend(loc="lower right", title="marker area ~ cells", fontsize=8)
    axis.grid(alpha=0.3)
    figure.text(
        0.01,
        -0.02,
        "C-NMC 2019 (SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA, doi:10.7937/tcia.2019.dc64i46r, CC BY 3.0)",
        fontsize=7,
        color="grey",
    )
    to_png(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", type=Path, help="a bench_accuracy.py --out folder")
    parser.add_argument("--every", type=int, default=1, help="measure the area of every k-th cell (default: all)")
    args = parser.parse_args()
    predictions, results = args.bench / "predictions.csv", args.bench / "results.json"
    for path in (predictions, results):
        if not path.is_file():
            sys.exit(f"error: {path} is missing: give a folder that bench_accuracy.py finished")
    if args.every < 1:
        sys.exit(f"error: --every {args.every}: give 1 (every cell) or more")
    with predictions.open(newline="") as handle:
        cells = list(csv.DictReader(handle))
    subjects = json.loads(results.read_text())["pooled"]["subjects"]["rows"]
    people = profile(cells, subjects, args.every)
    print(f"{'person':>7} {'class':>5} {'fold':>4} {'cells':>5} {'median area':>11} {'mean p(ALL)':>11}  call")
    for name, p in sorted(people.items(), key=lambda item: (item[1]["label"], item[1]["mean_p_all"])):
        verdict = "right" if p["right"] else "WRONG"
        print(
            f"{name:>7} {p['label']:>5} {p['fold']:>4} {p['cells']:>5} {p['median_area']:>11,.0f} "
            f"{p['mean_p_all']:>11.3f}  {verdict}"
        )
    for label in ("hem", "all"):
        group = [p for p in people.values() if p["label"] == label]
        rho, pvalue = spearmanr([p["median_area"] for p in group], [p["mean_p_all"] for p in group])
        print(f"{label}: Spearman rho(median area, mean p(ALL)) = {rho:.2f} (p = {pvalue:.3f}, {len(group)} people)")
    truth = np.concatenate([[p["label"] == "all"] * len(p["areas"]) for p in people.values()])
    areas = np.concatenate([p["areas"] for p in people.values()])
    model = np.concatenate([p["measured_p_all"] for p in people.values()])
    print(
        f"cell-level ROC-AUC over {len(truth):,} measured cells: cell area alone (larger = ALL) "
        f"{roc_auc_score(truth, areas):.3f}, the model's p(ALL) {roc_auc_score(truth, model):.3f}"
    )
    edges = np.quantile(areas, np.linspace(0, 1, 6))
    print("within cell-area quintiles (does the model know more than size?):")
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (areas >= low) & (areas <= high)
        model_auc = roc_auc_score(truth[inside], model[inside]) if len(set(truth[inside])) == 2 else float("nan")
        print(
            f"  area {low:7,.0f}-{high:7,.0f} px²: {inside.sum():5,} cells, {truth[inside].mean():.0%} ALL, "
            f"ROC-AUC of p(ALL) within them {model_auc:.3f}"
        )
    plot(people, args.bench / "subject_profile.png")
    print(f"plot: {args.bench / 'subject_profile.png'}")


if __name__ == "__main__":
    main()
