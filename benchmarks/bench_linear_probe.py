"""A linear probe on frozen ImageNet features, cross-validated on the folds of a ``bench_accuracy.py`` run.

Does fine-tuning help on people the network has never seen? This fits no network: it runs a model's ImageNet
backbone once over every cell (frozen, eval mode, through blastscope's own decoding, cache and preprocessing at
``--image-size``), average-pools its output map (``--features final``) or also the maps of its last three feature
stages (``--features multiscale``, timm's ``forward_intermediates``), and on each fold of BENCH fits an L2-regularised
logistic regression (scikit-learn, balanced class weights, standardised features) on the fold's training cells.
The regularisation strength is chosen on the fold's validation people by log-loss and the threshold there for the
best weighted F1 (blastscope's own chooser), as ``bench_accuracy.py`` chooses its runs' thresholds. Test cells are
then pooled exactly as there, and the paired difference from BENCH's own out-of-fold predictions printed
(``bench_accuracy_delta.py``'s subject bootstrap).

    python benchmarks/bench_linear_probe.py results/lr-ft-3e-4-160 --image-size 320 --out results/probe-320

Writes into ``--out``: ``features-<model>-<size>.npz`` (reused by later runs), ``predictions.csv`` (pairs with
``bench_accuracy_delta.py``) and ``results.json``.

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_accuracy import CELL_METRICS, SUBJECT_METRICS, _write_predictions
from bench_accuracy_delta import paired_delta
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from blastscope.data.cache import DecodedCache
from blastscope.data.dataset import CellDataset
from blastscope.data.split import Split
from blastscope.data.split.csv_file import read_split_csv
from blastscope.data.transforms import eval_transform
from blastscope.evaluation.bootstrap import bootstrap_ci
from blastscope.evaluation.threshold import threshold_for_weighted_f1
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.metrics import classification_metrics
from blastscope.models.factory import ModelBundle, create_model

CLASSES = ("hem", "all")
REGULARISATION = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # inverse L2 strengths C tried on each fold's validation
TREES_STEP = 25  # a boosted model is judged on validation after every 25th tree
STAGES = [2, 3, 4]  # of timm's feature_info: reductions 8, 16 and 32 (the last three stages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a finished bench_accuracy.py --out folder: its folds and baseline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--features", choices=("final", "multiscale"), default="multiscale")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    splits = read_folds(args.bench)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = create_model(args.model, pretrained="auto", image_size=args.image_size)
    print(f"{args.model} at {args.image_size} px from {bundle.weights_source}", flush=True)
    names, features = _features(bundle, splits[0], args)
    keep = slice(None) if args.features == "multiscale" else slice(-bundle.model.backbone.num_features, None)
    index = {name: i for i, name in enumerate(names)}
    tick = time.perf_counter()
    folds = [
        _fold(k, split, features[:, keep], index, logistic_candidates()) for k, split in enumerate(splits, start=1)
    ]
    fit_seconds = time.perf_counter() - tick
    pooled = _pool(folds, args.resamples)
    _write_predictions(folds, args.out / "predictions.csv")
    delta = paired_delta(args.bench, args.out, "", args.resamples, 0)
    results = {
        "recipe": {
            "model": args.model,
            "weights_source": bundle.weights_source,
            "image_size": args.image_size,
            "features": args.features,
            "head": "L2 logistic regression (scikit-learn), balanced class weights, standardised features",
            "regularisation_grid": REGULARISATION,
        },
        "folds_of": str(args.bench),
        "per_fold": [{key: value for key, value in fold.items() if key != "rows"} for fold in folds],
        "pooled": pooled,
        "delta_against_folds_of": delta,
        "fit_seconds_all_folds": round(fit_seconds, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _print(results)
    return 0


def read_folds(bench: Path) -> list[Split]:
    """The fold splits a ``bench_accuracy.py`` folder wrote, in fold order; exits in one line when it holds none."""
    splits = [read_split_csv(path) for path in sorted((bench / "splits").glob("fold-*.csv"))]
    if not splits:
        sys.exit(f"{bench}/splits holds no fold-<i>.csv: give a folder bench_accuracy.py wrote")
    return splits


def _features(bundle: ModelBundle, split: Split, args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    """Pooled frozen features ``(n_cells, n_features)`` of every cell of ``split``, computed once per model and size:
    the stages' maps (when asked for) then the final map, each averaged over its positions."""
    path = args.out / f"features-{args.model}-{args.image_size}.npz"
    if path.is_file():
        stored = np.load(path)
        return [str(name) for name in stored["paths"]], stored["features"]
    cells = [cell for part in split.parts.values() for cell in part]
    pre = bundle.preprocessing
    dataset = CellDataset(cells, CLASSES, pre, eval_transform(pre), DecodedCache())
    if dataset.skipped:
        sys.exit(f"{len(dataset.skipped)} cells could not be read, e.g. {dataset.skipped[0]}: fix or remove them")
    backbone, pooled = bundle.model.backbone, []
    tick = time.perf_counter()
    with torch.inference_mode():
        for images, _ in DataLoader(dataset, batch_size=args.batch_size):
            final, stages = backbone.forward_intermediates(images, indices=STAGES)
            pooled.append(torch.cat([m.mean(dim=(2, 3)) for m in [*stages, final]], dim=1).numpy())
    print(f"features of {len(cells)} cells in {time.perf_counter() - tick:.0f} s", flush=True)
    names, features = [str(cell.path) for cell in dataset.cells], np.concatenate(pooled)
    np.savez(path, paths=np.array(names), features=features)
    return names, features


def logistic_candidates() -> list[Pipeline]:
    """The probe's models, one per L2 strength C: standardised features, balanced class weights."""
    return [
        make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))
        for c in REGULARISATION
    ]


def _fold(
    k: int,
    split: Split,
    features: np.ndarray,
    index: dict[str, int],
    candidates: list[Any],
    blend: dict[str, float] | None = None,
) -> dict:
    """Fit every candidate (an unfitted scikit-learn classifier) on fold ``k``'s training cells, keep the one with
    the lowest validation log-loss, choose the threshold on validation and score the test cells.

    ``blend`` maps each validation and test cell's path to another model's p(ALL): the candidates' p(ALL) is then
    averaged with it (an equal-weight ensemble) before choosing and scoring."""
    parts = {
        name: (
            features[[index[str(cell.path)] for cell in cells]],
            np.array([CLASSES.index(cell.label) for cell in cells]),
            cells,
        )
        for name, cells in split.parts.items()
    }
    (x_train, y_train, _), (x_val, y_val, _) = parts["train"], parts["val"]
    x_test, y_test, test_cells = parts["test"]
    mix_val, mix_test = _mixer(blend, parts["val"][2]), _mixer(blend, test_cells)
    views = [view for candidate in candidates for view in _views(candidate.fit(x_train, y_train), x_val)]
    fitted, on_val = [model for model, _ in views], [mix_val(probabilities) for _, probabilities in views]
    best = int(np.argmin([log_loss(y_val, probabilities) for probabilities in on_val]))
    model, chosen = fitted[best], _describe(fitted[best])
    point = threshold_for_weighted_f1(y_val, on_val[best], OperatingPoint(classes=CLASSES, positive_class="all"))
    probabilities = mix_test(model.predict_proba(x_test))
    decided = decide(probabilities, point)
    metrics = classification_metrics(y_test, probabilities, decided, CLASSES, "all")
    print(
        f"fold {k}: {chosen}, threshold {point.threshold:.3f}, weighted F1 {metrics['weighted_f1']:.3f}, "
        f"ROC-AUC {metrics['roc_auc']:.3f}",
        flush=True,
    )
    rows = [
        {
            "path": str(cell.path),
            "subject": cell.subject,
            "label": cell.label,
            "p_hem": float(p[0]),
            "p_all": float(p[1]),
            "decided_label": CLASSES[d],
            "threshold": point.threshold,
            "fold": k,
        }
        for cell, p, d in zip(test_cells, probabilities, decided, strict=True)
    ]
    return {
        "fold": k,
        "chosen": chosen,
        "threshold": point.threshold,
        "weighted_f1": metrics["weighted_f1"],
        "roc_auc": metrics["roc_auc"],
        "rows": rows,
    }


def _mixer(blend: dict[str, float] | None, cells: list[Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``(n_cells, 2)`` probabilities -> their mean with ``blend``'s p(ALL) of the same ``cells`` (identity if None)."""
    if blend is None:
        return lambda probabilities: probabilities
    other = np.array([blend[str(cell.path)] for cell in cells])
    return lambda probabilities: np.stack([1 - other, other], axis=1) / 2 + probabilities / 2


@dataclass(frozen=True)
class FirstTrees:
    """A fitted boosted model read after its first ``trees`` trees: the model ``max_iter=trees`` would have fitted
    (no early stopping, no subsampling), without fitting it again."""

    model: Any
    trees: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(n_cells, n_classes)`` probabilities after ``trees`` boosting iterations."""
        return next(islice(self.model.staged_predict_proba(x), self.trees - 1, None))


def _views(model: Any, x_val: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """The models one fit yields for the validation to choose among, each with its ``(n_val, n_classes)``
    probabilities: a boosted model at every ``TREES_STEP``-th tree (one staged pass), anything else as itself."""
    if not hasattr(model, "staged_predict_proba"):
        return [(model, model.predict_proba(x_val))]
    staged = enumerate(model.staged_predict_proba(x_val), start=1)
    return [(FirstTrees(model, trees), probabilities) for trees, probabilities in staged if trees % TREES_STEP == 0]


def _describe(model: Any) -> str:
    """The hyperparameters that differ between candidates, e.g. ``C 0.01`` or ``learning_rate 0.1, 300 trees``."""
    if isinstance(model, FirstTrees):
        boosted = model.model
        return f"learning_rate {boosted.learning_rate:g}, max_leaf_nodes {boosted.max_leaf_nodes}, {model.trees} trees"
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if hasattr(final, "hidden_layer_sizes"):
        return f"hidden {final.hidden_layer_sizes}, alpha {final.alpha:g}"
    return f"C {final.C:g}"


def _pool(folds: list[dict], resamples: int) -> dict:
    """Pooled out-of-fold scores with subject-bootstrap intervals; a subject's call is its mean p(ALL) at its fold's
    threshold, as in ``bench_accuracy.py``."""
    rows = [row for fold in folds for row in fold["rows"]]
    y_true = np.array([CLASSES.index(row["label"]) for row in rows])
    y_prob = np.array([[row["p_hem"], row["p_all"]] for row in rows])
    y_pred = np.array([CLASSES.index(row["decided_label"]) for row in rows])
    subjects = [row["subject"] for row in rows]
    cells = bootstrap_ci(y_true, y_prob, y_pred, subjects, CELL_METRICS, 1, resamples, 0)
    cells_of: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        cells_of.setdefault((row["fold"], row["subject"]), []).append(row)
    people = sorted(cells_of)
    mean_p = np.array([np.mean([row["p_all"] for row in cells_of[who]]) for who in people])
    thresholds = {fold["fold"]: fold["threshold"] for fold in folds}
    s_true = np.array([CLASSES.index(cells_of[who][0]["label"]) for who in people])  # a person is all-ALL or all-HEM
    s_pred = (mean_p >= np.array([thresholds[k] for k, _ in people])).astype(int)
    s_prob = np.stack([1 - mean_p, mean_p], axis=1)
    return {
        "cells": {"n": len(rows), "bootstrap": cells},
        "subjects": {
            "n": len(people),
            "right": int((s_pred == s_true).sum()),
            "bootstrap": bootstrap_ci(s_true, s_prob, s_pred, None, SUBJECT_METRICS, 1, resamples, 0),
            "wrong": [s for (_, s), t, p in zip(people, s_true, s_pred, strict=True) if t != p],
        },
    }


def _print(results: dict) -> None:
    cells, subjects = results["pooled"]["cells"]["bootstrap"]["metrics"], results["pooled"]["subjects"]
    for name in ("weighted_f1", "roc_auc", "balanced_accuracy", "sensitivity", "specificity"):
        entry = cells[name]
        print(f"{name:18} {entry['estimate']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]")
    print(f"subjects right     {subjects['right']} of {subjects['n']} (wrong: {', '.join(subjects['wrong'])})")
    for name, entry in results["delta_against_folds_of"].items():
        print(
            f"delta {name:12} {entry['estimate']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}] "
            f"against {results['folds_of']}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
