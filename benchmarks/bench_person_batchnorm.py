"""Per-person BatchNorm re-estimation (AdaBN) on finished cross-validation folds: does it undo whole-person shifts?

AdaBN (Li et al. 2016, "Revisiting Batch Normalization For Practical Domain Adaptation", arXiv:1603.04779) replaces
every BatchNorm layer's running mean and variance by those of the target domain's images, here one person's cells,
and is the usual cheap answer to a shift that affects a whole domain. For each test person of each fold of a
``bench_accuracy.py`` folder this script predicts their cells twice, with the fold's trained network as it is and with
its BatchNorm statistics re-estimated on that person's cells alone (no labels used), and prints per fold the ROC-AUC of
both and each person's mean p(ALL) before and after. Thresholds are left out on purpose: ROC-AUC needs none.

    OMP_NUM_THREADS=1 python benchmarks/bench_person_batchnorm.py /tmp/bench-accuracy/lr-ft-3e-4-160 --folds 5 1

Every C-NMC person is all-ALL or all-HEM, so statistics pooled over one person also remove whatever separates ALL
people from normal people on average; this measures which of the two effects wins.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from blastscope.data.cache import DecodedCache
from blastscope.data.table import Cell
from blastscope.inference.predict import batches, by_person, predict_logits, probabilities
from blastscope.inference.runners import TorchRunner
from blastscope.runs.trained import TrainedRun, load_run

BATCH = 64


def person_adapted(run: TrainedRun, cells: list[Cell], cache: DecodedCache) -> nn.Module:
    """A copy of the run's network whose BatchNorm statistics are those of ``cells`` (cumulative over one pass), fed
    as the run's predictions feed them (colours normalised over the person first for ``--colour-norm subject``)."""
    model = copy.deepcopy(run.model)
    norms = [layer for layer in model.modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # a plain average over every batch, not an exponential one
        layer.train()
    pre = run.preprocessing
    inputs = by_person(cells, pre, cache) if pre.colour_norm == "subject" else cells
    with torch.no_grad():
        for batch in batches(inputs, pre, run.transform, BATCH, cache):
            model(batch)
    return model.eval()


def p_all(model: nn.Module, run: TrainedRun, cells: list[Cell], cache: DecodedCache) -> np.ndarray:
    """p(ALL) of every cell, shape (N,), predicted as blastscope predicts, at the run's stored temperature."""
    logits = predict_logits(TorchRunner(model), cells, run.preprocessing, run.transform, batch_size=BATCH, cache=cache)
    point = run.operating_point
    return probabilities(logits, point.temperature)[:, run.classes.index(point.positive_class)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", type=Path, help="a bench_accuracy.py --out folder")
    parser.add_argument("--folds", type=int, nargs="+", help="fold numbers (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = DecodedCache()
    folds = args.folds or sorted(int(p.name.split("-")[1]) for p in (args.bench / "runs").glob("fold-*"))
    missing = [fold for fold in folds if not (args.bench / "runs" / f"fold-{fold}" / "config.yaml").is_file()]
    if not folds or missing:
        which = f"fold {', '.join(map(str, missing))}" if missing else "fold"
        sys.exit(f"error: {args.bench / 'runs'} has no finished {which}: give a folder that bench_accuracy.py trained")
    for fold in folds:
        run = load_run(args.bench / "runs" / f"fold-{fold}")
        people: dict[str, list[Cell]] = defaultdict(list)
        for cell in run.split.parts["test"]:
            people[cell.subject].append(cell)
        truth, plain, adapted, lines = [], [], [], []
        for person, cells in sorted(people.items()):
            before = p_all(run.model, run, cells, cache)
            after = p_all(person_adapted(run, cells, cache), run, cells, cache)
            truth += [cell.label == run.operating_point.positive_class for cell in cells]
            plain.append(before)
            adapted.append(after)
            lines.append(f"{person} ({cells[0].label}) {before.mean():.2f} -> {after.mean():.2f}")
        y = np.array(truth)
        print(
            f"fold {fold}: ROC-AUC {roc_auc_score(y, np.concatenate(plain)):.3f} as trained, "
            f"{roc_auc_score(y, np.concatenate(adapted)):.3f} with per-person BatchNorm statistics",
            flush=True,
        )
        print("  mean p(ALL) per person: " + "; ".join(lines), flush=True)


if __name__ == "__main__":
    main()
