"""Subject-grouped K-fold cross-validation of one training recipe over a whole dataset: accuracy on unseen people.

Every subject group is tested exactly once (``kfold_splits(..., val_ratio=...)``: linked subject ids stay together,
and each fold validates on a share of the other folds' subject groups, for early stopping and the threshold). Each
fold trains with ``blastscope.training.train``, as ``blastscope train`` does with the same flags. Each is scored on
its test fold by ``blastscope.evaluation.evaluate_run``, the inference path ``evaluate``, ``predict`` and ``serve``
share, at the threshold chosen on its validation part. The out-of-fold predictions are then pooled. The benchmark
prints weighted F1 (the C-NMC 2019 metric), ROC-AUC, balanced accuracy and subject-level accuracy, each with a 95%
percentile bootstrap interval that resamples subjects within each class. A subject's call is its mean p(positive) at
its fold's threshold; every C-NMC subject is all-ALL or all-HEM. It also prints training time per fold and the
per-subject table.

    python benchmarks/bench_accuracy.py --data ../shared/data/cnmc-dev --setting proxy --out results/cv-proxy
    python benchmarks/bench_accuracy.py --data ../shared/data/cnmc-dev --setting full --out results/cv-full \\
        --image-size 128 --epochs-frozen 3 --epochs-finetune 4

``--setting proxy``: 3 folds; the recipe fields left to the model's defaults become 96 px and 3 + 2 epochs (a quick
ablation). ``--setting full``: 5 folds, the recipe exactly as ``blastscope train`` runs it. Any other
``blastscope train`` flag (``--model``, ``--pretrained``, ``--lr-head``, ``--augment KEY=VALUE``, ``--config FILE``...)
goes to every fold. Re-running the same command reuses finished folds (and their scores, kept in ``scored/``) and
resumes an interrupted one; ``--train-folds 1 2 3`` in one process and ``--train-folds 4 5`` in another share the
folds between two cores, the last to finish pooling them all. The folds are
drawn with the recipe's ``--seed`` unless ``--fold-seed`` fixes them: ``--seed 1 --fold-seed 0`` retrains seed 0's folds
with another training seed, the spread a recipe shows for nothing but its seed.

``--ensemble-of OUT1 OUT2 ...`` trains nothing: for every fold it makes the ensemble of each ``OUTk/runs/fold-<i>``
(``blastscope ensemble``: the mean of their temperature-scaled probabilities; each must have trained on that fold's
split) and scores it as a trained fold, its threshold and temperature chosen on the fold's validation part.

``--kfold-ensemble K`` scores, per fold, what a user gets from ``blastscope ensemble`` of K fold models instead of
one run: K members are trained on the fold's training and validation people only (nested: the fold's test people
never train or validate any of them), member j validating on the j-th of K subject-grouped folds of those people and
training on the rest. ``make_ensemble`` chooses the ensemble's threshold on the members' validation cells pooled (each
scored by the member that validated on it), and the ensemble scores the fold's test cells there (``evaluate --data``:
the cells none of its members saw). Same folds as the plain benchmark, so ``bench_accuracy_delta.py`` pairs them.

Writes into ``--out``: ``results.json`` (every number, the recipe and the machine), ``predictions.csv`` (pooled
out-of-fold cells), ``subject_accuracy.png``, ``splits/fold-<i>.csv``, ``runs/fold-<i>/`` (each a complete run) and
``scored/fold-<i>.json`` (its scores, with what they were scored with).

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blastscope.cli import train as train_cli
from blastscope.data.discover import scan_dataset
from blastscope.data.split import Split, kfold_splits, write_split_csv
from blastscope.data.table import CellTable
from blastscope.data.text_table import text_table
from blastscope.errors import BlastscopeError
from blastscope.evaluation.bootstrap import bootstrap_ci
from blastscope.evaluation.evaluate import evaluate_run, write_evaluation
from blastscope.evaluation.plots import class_colors, to_png
from blastscope.evaluation.threshold import parse_threshold
from blastscope.hardware import reuse_freed_memory
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.metrics import (
    accuracy,
    class_display_name,
    classification_metrics,
    roc_auc,
    sensitivity,
    specificity,
    weighted_f1,
)
from blastscope.models import get_spec
from blastscope.runs.folder import read_config
from blastscope.training import TrainConfig, resume, train
from blastscope.training.config import SplitConfig
from blastscope.training.prepare import complete_recipe
from blastscope.workflows.ensemble import make_ensemble


@dataclass(frozen=True)
class Setting:
    """Folds, and what fills the recipe fields the flags leave to the model's defaults (``None``: the defaults)."""

    folds: int
    image_size: int | None
    epochs_frozen: int | None
    epochs_finetune: int | None


SETTINGS = {"proxy": Setting(3, 96, 3, 2), "full": Setting(5, None, None, None)}
DECIDED_HERE = ("split_ratios", "split_csv", "split_by", "fold", "resume", "run_dir")  # train flags CV sets itself
# What results.json records of the first fold's config.yaml (every fold trains the same recipe).
RECIPE_KEYS = (
    "model", "pretrained", "weights_source", "image_size", "epochs_frozen", "epochs_finetune", "lr_head",
    "lr_finetune", "unfreeze_stages", "batch_size", "weight_decay", "monitor", "patience", "augmentation",
    "resolved_precision", "preprocessing",
)  # fmt: skip


def balanced_accuracy(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float:
    """Mean of sensitivity and specificity (two classes), in the bootstrap's ``fn(y_true, y_prob, y_pred, positive)``
    form; ``None`` when a class is missing from ``y_true``."""
    recalls = (sensitivity(y_true, y_prob, y_pred, positive), specificity(y_true, y_prob, y_pred, positive))
    return None if None in recalls else sum(recalls) / 2  # type: ignore[return-value]


CELL_METRICS = {
    "weighted_f1": weighted_f1,
    "roc_auc": roc_auc,
    "balanced_accuracy": balanced_accuracy,
    "accuracy": accuracy,
    "sensitivity": sensitivity,
    "specificity": specificity,
}
SUBJECT_METRICS = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "roc_auc": roc_auc}
# Scored besides the plain predictions, with the suffix of their prediction columns and how the results name them.
VARIANTS = {
    "tta": ("_tta", "TTA, 8 views"),
    "transductive": ("_transductive", "transductive neighbourhood correction, not a per-cell prediction"),
}
ROW_KEYS = ("rows", *(f"subject_rows{suffix}" for suffix in ("", *(s for s, _ in VARIANTS.values()))))
SHOWN = {"weighted_f1": "weighted F1", "roc_auc": "ROC-AUC", "balanced_accuracy": "balanced accuracy"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Other flags: any of `blastscope train --help`."
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset with subject ids, e.g. ../shared/data/cnmc-dev"
    )
    parser.add_argument("--setting", choices=SETTINGS, default="proxy", help="proxy (default) or full")
    parser.add_argument("--out", type=Path, required=True, help="results folder, e.g. results/cv-proxy")
    parser.add_argument("--folds", type=int, help="k (default: 3 for proxy, 5 for full)")
    parser.add_argument("--val-ratio", type=float, default=0.2, help="share of each fold's training cells validating")
    parser.add_argument(
        "--fold-seed",
        type=int,
        help="seed of the fold assignment (default: the recipe's --seed); keep it to retrain the same folds with "
        "another --seed, which measures what the training seed alone moves",
    )
    parser.add_argument("--threshold", default="val", help="val (default: chosen per fold on validation), X or stored")
    parser.add_argument("--bootstrap", type=int, default=1000, help="subject resamples for the 95%% CIs")
    parser.add_argument(
        "--tta", action="store_true", help="also pool test-time augmentation (8 flips/rotations) at the same thresholds"
    )
    parser.add_argument(
        "--transductive-neighbours",
        type=int,
        metavar="K",
        help="also pool the transductive neighbourhood correction over K most similar test cells (Pan et al. 2019)",
    )
    parser.add_argument(
        "--ensemble-of",
        type=Path,
        nargs="+",
        metavar="OUT",
        help="train nothing: score, per fold, the ensemble of fold i of these benchmarks' --out folders (made on the "
        "same folds) into --out/runs/fold-i",
    )
    parser.add_argument(
        "--kfold-ensemble",
        type=int,
        metavar="K",
        help="score, per fold, the ensemble of K members trained on that fold's training and validation people, each "
        "validating on one of K folds of them (nested cross-validation of `blastscope ensemble` of K fold models)",
    )
    parser.add_argument(
        "--train-folds",
        type=int,
        nargs="+",
        metavar="I",
        help="make and score only these folds (1-based) now, e.g. one process per core, using the others where they "
        "are made already; results are pooled once every fold is: then re-run without it",
    )
    args, recipe_flags = parser.parse_known_args(argv)
    reuse_freed_memory()  # as `blastscope train` does, so fit times are the command's
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fold "GPU available" banners
    try:
        return run(args, recipe_flags)
    except BlastscopeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def recipe_config(flags: list[str], data: Path, setting: Setting) -> TrainConfig:
    """The recipe every fold trains with: ``blastscope train``'s own parser and config builder over ``flags``, with
    the setting's image size and epochs where the flags (or a ``--config`` file) leave the model's defaults."""
    parser = argparse.ArgumentParser(prog="bench_accuracy.py")
    train_cli.register(parser.add_subparsers())
    options = vars(parser.parse_args(["train", *flags]))
    if given := [name for name in DECIDED_HERE if name in options]:
        flag = "--" + given[0].replace("_", "-")
        raise BlastscopeError(f"{flag}: cross-validation makes every fold's split itself; drop it")
    options = {"progress": False, **options, "data": str(data.resolve())}  # folds resume from any directory
    config = train_cli.build_config(options)
    for field in ("image_size", "epochs_frozen", "epochs_finetune"):
        if getattr(config, field) is None:
            setattr(config, field, getattr(setting, field))
    return config


def run(args: argparse.Namespace, recipe_flags: list[str]) -> int:
    started, load_before = time.perf_counter(), os.getloadavg()
    setting = SETTINGS[args.setting]
    k = args.folds or setting.folds
    config = recipe_config(recipe_flags, args.data, setting)
    resolved = complete_recipe(config)  # a bad recipe stops here, before the data is scanned
    threshold = None if args.threshold == "stored" else parse_threshold(args.threshold)  # a typo stops here
    table = scan_dataset(args.data)
    if not table.has_subjects:
        raise BlastscopeError(f"{args.data}: not every cell has a subject id; subject-grouped CV needs them")
    fold_seed = config.seed if args.fold_seed is None else args.fold_seed
    splits = kfold_splits(table, k, seed=fold_seed, val_ratio=args.val_ratio)
    plan = {"setting": args.setting, "folds": k, "val_ratio": args.val_ratio, "threshold": args.threshold}
    if fold_seed != config.seed:  # recorded only when it differs, so earlier results' plans still match
        plan["fold_seed"] = fold_seed
    if args.ensemble_of:
        args.ensemble_of = [member.resolve() for member in args.ensemble_of]
        plan["ensemble_of"] = [str(member) for member in args.ensemble_of]
    if args.kfold_ensemble is not None:
        if args.ensemble_of or args.kfold_ensemble < 3:
            raise BlastscopeError("--kfold-ensemble K takes K >= 3 and excludes --ensemble-of")
        if args.threshold != "val":
            raise BlastscopeError("--kfold-ensemble scores at the threshold the ensemble chose; drop --threshold")
        plan["kfold_ensemble"] = args.kfold_ensemble
    _claim(args.out, {**plan, "recipe": config.to_dict()})
    subjects = len({cell.subject for cell in table.cells})
    print(
        f"{args.data}: {len(table.cells):,} cells, {subjects} subjects; {k}-fold CV by subject group, validation "
        f"{args.val_ratio:.0%} of each fold's training subject groups",
        flush=True,
    )
    if args.train_folds and not set(args.train_folds) <= set(range(1, k + 1)):
        raise BlastscopeError(f"--train-folds {' '.join(map(str, args.train_folds))}: the folds are 1 to {k}")
    folds, missing = [], []
    for index, split in enumerate(splits, start=1):
        scored = _scored(args, index, split)
        if (fold := _read_scored(scored)) is not None:
            print(f"fold {index}/{k}: scored before ({scored['path']})", flush=True)
        elif args.train_folds and index not in args.train_folds:
            missing.append(index)
            continue
        elif args.ensemble_of:
            fold = _ensemble_fold(index, k, split, args.ensemble_of, args.out, threshold, args.tta,
                                  args.transductive_neighbours)  # fmt: skip
        elif args.kfold_ensemble:
            fold = _kfold_ensemble_fold(index, k, split, table, args.kfold_ensemble, config, args.out, args.data)
        else:
            _check_recipe(args.out / "runs" / f"fold-{index}", resolved)
            fold = _run_fold(index, k, split, config, args.out, threshold, args.tta, args.transductive_neighbours)
        _write_scored(scored, fold)
        folds.append(fold)
    if missing:
        print(f"folds {', '.join(map(str, missing))} are not made yet: make them, then re-run without --train-folds")
        return 0
    first_run = args.out / "members" / "fold-1" / "member-1" if args.kfold_ensemble else folds[0]["run_dir"]
    recorded = read_config(first_run)  # a K-fold ensemble's recipe is its members'
    recipe = {key: recorded.get(key) for key in RECIPE_KEYS}
    weights = str(recipe["weights_source"]).split(" (")[0]  # "ImageNet" or "random init"; the recipe line says whence
    tag = (
        f"{recipe['model']} {recipe['image_size']}px {recipe['epochs_frozen']}+{recipe['epochs_finetune']}ep "
        f"{weights}, {k}-fold {args.setting}"
    )
    if args.ensemble_of:
        tag = f"ensemble of {' + '.join(member.name for member in args.ensemble_of)}, {k}-fold {args.setting}"
    if args.kfold_ensemble:
        tag = f"{args.kfold_ensemble}-fold ensemble of {tag}, nested"
    pooled = _pool(folds, args.bootstrap, config.seed)
    for name, (suffix, _) in VARIANTS.items():
        if name in folds[0]:
            pooled[name] = _pool(folds, args.bootstrap, config.seed, variant=suffix)
    results = {
        "benchmark": "bench_accuracy",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "recipe_name": tag,
        "recipe": {**recipe, "flags": recipe_flags, **plan, "seed": config.seed},
        "data": {"path": str(args.data), "cells": len(table.cells), "subjects": pooled["subjects"]["n"]},
        "folds": [{key: value for key, value in fold.items() if key not in ROW_KEYS} for fold in folds],
        "pooled": pooled,
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": _machine(load_before),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    _write_predictions(folds, args.out / "predictions.csv")
    _plot_subjects(pooled["subjects"]["rows"], pooled["classes"], tag, args.out / "subject_accuracy.png")
    _print_results(results, tag)
    return 0


def _claim(out: Path, plan: dict[str, Any]) -> None:
    """Keep one benchmark per folder: a re-run with the same plan reuses its folds, another plan is refused."""
    path = out / "plan.json"
    text = json.dumps(plan, indent=2, sort_keys=True, default=str)
    if path.is_file() and path.read_text() != text:
        before, now = json.loads(path.read_text()), json.loads(text)
        flat = [{**{k: v for k, v in side.items() if k != "recipe"}, **side["recipe"]} for side in (before, now)]
        defaults = TrainConfig().to_dict()  # a recipe field added since the folds ran, left at its default, trained so
        changed = sorted(
            key
            for key in flat[0].keys() | flat[1].keys()
            if flat[0].get(key, defaults.get(key)) != flat[1].get(key, defaults.get(key))
        )
        if not changed:
            return
        raise BlastscopeError(
            f"{out} holds folds of another recipe or plan (differing: {', '.join(changed)}; see {path}); "
            "choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _check_recipe(run_dir: Path, resolved: TrainConfig) -> None:
    """Refuse a fold run whose recipe is not the one the flags resolve to now: ``plan.json`` records the flags, and a
    field left to the model's defaults resolves anew when those defaults change, so finished folds of the old default
    would be pooled with new folds of the new one."""
    if not (run_dir / "config.yaml").is_file():
        return
    recorded = read_config(run_dir)
    defaults = get_spec(resolved.model).defaults.to_dict()
    changed = [f"{key} {recorded.get(key)} -> {getattr(resolved, key)}" for key in defaults
               if recorded.get(key) != getattr(resolved, key)]  # fmt: skip
    if changed:
        raise BlastscopeError(
            f"{run_dir} trained another recipe than these flags now give ({', '.join(changed)}: the model's defaults "
            "changed since); pooling it with new folds would mix recipes: use a fresh --out, or spell the recipe out"
        )


def _recorded_split(run_dir: Path) -> str:
    """The split a run recorded: ``names/contents`` hashes (``Split.hash``, ``Split.content_hash``), or the names' alone
    for a run from before contents were recorded."""
    config = read_config(run_dir)
    contents = config.get("split_content_hash")
    return f"{config.get('split_hash')}/{contents}" if contents else str(config.get("split_hash"))


def _scored(args: argparse.Namespace, index: int, split: Split) -> dict[str, Any]:
    """Where fold ``index``'s scores are kept and what they were scored with: a re-run reuses them only when its
    split, run, threshold and extra variants are the same."""
    key = {
        "split": split.hash,
        "run": _made_at(args.out / "runs" / f"fold-{index}"),
        "threshold": args.threshold,
        "tta": args.tta,
        "transductive_neighbours": args.transductive_neighbours,
    }
    return {"path": args.out / "scored" / f"fold-{index}.json", "key": key}


def _read_scored(scored: dict[str, Any]) -> dict[str, Any] | None:
    path = scored["path"]
    if scored["key"]["run"] is None or not path.is_file():
        return None
    kept = json.loads(path.read_text())
    return kept["fold"] if kept["key"] == scored["key"] else None


def _write_scored(scored: dict[str, Any], fold: dict[str, Any]) -> None:
    key = {**scored["key"], "run": _made_at(Path(fold["run_dir"]))}  # the run this invocation may have just made
    scored["path"].parent.mkdir(parents=True, exist_ok=True)
    scored["path"].write_text(json.dumps({"key": key, "fold": fold}, default=_plain))


def _made_at(run_dir: Path) -> int | None:
    """When ``run_dir`` finished (its metrics.json's mtime, ns), or None while it has not."""
    metrics = run_dir / "metrics.json"
    return metrics.stat().st_mtime_ns if metrics.is_file() else None


def _plain(value: Any) -> Any:
    """JSON for numpy scalars (as numbers) and anything else (as text)."""
    return value.item() if isinstance(value, np.generic) else str(value)


def _run_fold(
    index: int,
    k: int,
    split: Split,
    config: TrainConfig,
    out: Path,
    threshold: str | float | None,
    tta: bool = False,
    transductive_neighbours: int | None = None,
) -> dict[str, Any]:
    """Train (or reuse, or resume) fold ``index`` and score its test fold at the point chosen on its validation."""
    run_dir, sizes = out / "runs" / f"fold-{index}", _part_sizes(split)
    print(
        f"fold {index}/{k}: " + ", ".join(f"{p} {n:,} cells / {s} subjects" for p, (n, s) in sizes.items()), flush=True
    )
    wall = _train_or_resume(config, split, out / "splits" / f"fold-{index}.csv", run_dir)
    training = json.loads((run_dir / "metrics.json").read_text())["training"]
    return _score_fold(index, run_dir, sizes, training, wall, threshold, tta, transductive_neighbours)


def _part_sizes(split: Split) -> dict[str, tuple[int, int]]:
    """Cells and subjects of each part of ``split``."""
    return {part: (len(cells), len({c.subject for c in cells})) for part, cells in split.parts.items()}


def _train_or_resume(config: TrainConfig, split: Split, split_csv: Path, run_dir: Path) -> float | None:
    """Make ``run_dir`` a finished run of ``config`` on ``split`` (written to ``split_csv``): trained, resumed where
    it was interrupted, or reused. Returns the seconds this call spent on it (None: reused).

    Raises ``BlastscopeError`` for a ``run_dir`` begun on another split, before anything is trained.
    """
    if (run_dir / "config.yaml").is_file():
        trained_on = _recorded_split(run_dir)
        if trained_on not in (split.hash, f"{split.hash}/{split.content_hash}"):
            raise BlastscopeError(
                f"{run_dir} was trained on other folds (split {trained_on}, now {split.hash}/{split.content_hash}: "
                "the data or the fold assignment changed); pooling it would test some cells twice and others never: "
                "use a fresh --out"
            )
    write_split_csv(split, split_csv)
    if (run_dir / "metrics.json").is_file():
        return None
    tick = time.perf_counter()
    if (run_dir / "config.yaml").is_file():
        resume(run_dir)
    else:
        train(replace(config, split=SplitConfig(csv=str(split_csv))), run_dir=run_dir)
    return round(time.perf_counter() - tick, 1)


def _score_fold(
    index: int,
    run_dir: Path,
    sizes: dict[str, tuple[int, int]],
    training: dict[str, Any],
    wall: float | None,
    threshold: str | float | None,
    tta: bool = False,
    transductive_neighbours: int | None = None,
    data: Path | None = None,
) -> dict[str, Any]:
    """Score fold ``index``'s run on its test fold at the point chosen on its validation; ``training`` holds its
    ``epochs_run`` and ``train_seconds``, ``wall`` the seconds this invocation spent making it (None: reused).
    ``data``: score the cells of it the run never saw instead (a K-fold ensemble's: the fold's test cells)."""
    result = evaluate_run(
        run_dir,
        data=data,
        split="test",
        threshold=threshold,
        tta=tta,
        transductive_neighbours=transductive_neighbours,
        bootstrap=0,
        chosen_by="bench_accuracy",
    )
    write_evaluation(result, run_dir / "evaluation-test")
    point, metrics = result.point, result.plain["metrics"]
    sections = {"": result.plain, **{suffix: getattr(result, name) for name, (suffix, _) in VARIANTS.items()}}
    subject_rows = {
        f"subject_rows{suffix}": [
            {**row, "fold": index, "threshold": point.threshold} for row in section["subjects"]["per_subject"]
        ]
        for suffix, section in sections.items()
        if section
    }
    fold = {
        "fold": index,
        "run_dir": str(run_dir),
        "cells": {part: n for part, (n, _) in sizes.items()},
        "subjects": {part: s for part, (_, s) in sizes.items()},
        "threshold": point.threshold,
        "temperature": point.temperature,
        "threshold_source": point.source,
        **{name: metrics[name] for name in SHOWN},
        "subject_accuracy": float(
            np.mean([r["predicted_class"] == r["true_class"] for r in subject_rows["subject_rows"]])
        ),
        "epochs_run": training["epochs_run"],
        "train_seconds": training["train_seconds"],
        "wall_seconds": wall,
        "weights_source": result.weights_source,
        "positive_class": point.positive_class,
    }
    timing = f"fit {fold['train_seconds']:.0f} s" + (f", wall {wall:.0f} s" if wall else " (reused)")
    print(
        f"  weighted F1 {fold['weighted_f1']:.3f}, ROC-AUC {fold['roc_auc']:.3f} at threshold {point.threshold:.3f}; "
        + timing,
        flush=True,
    )
    for name in VARIANTS:
        if section := getattr(result, name):
            fold[name] = {metric: section["metrics"][metric] for metric in SHOWN}
    rows = [{**row, "fold": index} for row in result.predictions]
    return {**fold, "classes": point.classes, "rows": rows, **subject_rows}


def _ensemble_fold(
    index: int,
    k: int,
    split: Split,
    members: list[Path],
    out: Path,
    threshold: str | float | None,
    tta: bool = False,
    transductive_neighbours: int | None = None,
) -> dict[str, Any]:
    """Fold ``index`` of a cross-validated ensemble: ``make_ensemble`` of ``runs/fold-<index>`` of every benchmark in
    ``members``, each trained on this fold's split, scored as a trained fold is. Its fit time is the members' sum."""
    runs, run_dir = [member / "runs" / f"fold-{index}" for member in members], out / "runs" / f"fold-{index}"
    made = (run_dir / "config.yaml").is_file()
    for run in [*runs, run_dir] if made else runs:
        if (made_on := _recorded_split(run)) not in (split.hash, f"{split.hash}/{split.content_hash}"):
            raise BlastscopeError(
                f"{run} holds other folds (split {made_on}, fold {index} here is {split.hash}/{split.content_hash}); "
                "ensemble members must share every fold: give the --data, --setting, --folds, --val-ratio and --seed "
                "(or --fold-seed) their benchmarks had"
            )
    sizes = _part_sizes(split)
    print(f"fold {index}/{k}: ensemble of {', '.join(map(str, runs))}", flush=True)
    wall = None
    if not made:
        tick = time.perf_counter()
        make_ensemble(runs, run_dir, log=lambda line: print(f"  {line}", flush=True))
        wall = round(time.perf_counter() - tick, 1)
    fits = [json.loads((run / "metrics.json").read_text())["training"] for run in runs]
    training = {
        "epochs_run": "+".join(str(fit["epochs_run"]) for fit in fits),
        "train_seconds": sum(fit["train_seconds"] for fit in fits),
    }
    return _score_fold(index, run_dir, sizes, training, wall, threshold, tta, transductive_neighbours)


def _kfold_ensemble_fold(
    index: int, k: int, split: Split, table: CellTable, members: int, config: TrainConfig, out: Path, data: Path
) -> dict[str, Any]:
    """Fold ``index`` scored by a ``members``-fold ensemble trained on its training and validation people only.

    Member j validates on the j-th of ``members`` subject-grouped folds of those people (``kfold_splits``, the
    recipe's seed) and trains on the others; the outer test cells are its test part, scored by nobody until the
    ensemble is. Each member's temperature and threshold are chosen on its validation cells (``evaluate
    --threshold val``), then ``make_ensemble`` chooses the ensemble's threshold on all of them pooled.
    """
    tested = {cell.digest for cell in split.parts["test"]}
    inner = replace(table, cells=[cell for cell in table.cells if cell.digest not in tested])
    folds = kfold_splits(inner, members, seed=config.seed)
    sizes = _part_sizes(split)
    print(f"fold {index}/{k}: {members}-fold ensemble of members trained on its {len(inner.cells):,} train + val "
          f"cells; test {sizes['test'][0]:,} cells / {sizes['test'][1]} subjects", flush=True)  # fmt: skip
    runs, train_seconds, tick = [], 0.0, time.perf_counter()
    for j, fold in enumerate(folds, start=1):
        validating = fold.parts["test"]
        held = {cell.digest for cell in validating}
        member_split = replace(
            fold,
            parts={
                "train": [cell for cell in inner.cells if cell.digest not in held],
                "val": validating,
                "test": split.parts["test"],
            },
            ratios=(),
        )
        run_dir = out / "members" / f"fold-{index}" / f"member-{j}"
        _train_or_resume(config, member_split, out / "splits" / f"fold-{index}-member-{j}.csv", run_dir)
        point = json.loads((run_dir / "operating_point.json").read_text())
        if point.get("chosen_by") != "bench_accuracy":
            evaluate_run(run_dir, split="test", threshold="val", bootstrap=0, chosen_by="bench_accuracy")
        train_seconds += json.loads((run_dir / "metrics.json").read_text())["training"]["train_seconds"]
        print(f"  member {j}: {len(member_split.parts['train']):,} train / {len(validating):,} val cells", flush=True)
        runs.append(run_dir)
    run_dir = out / "runs" / f"fold-{index}"
    if not (run_dir / "config.yaml").is_file():
        make_ensemble(runs, run_dir, log=lambda line: print(f"  {line}", flush=True))
    wall = round(time.perf_counter() - tick, 1)
    training = {"epochs_run": "ensemble", "train_seconds": train_seconds}
    return _score_fold(index, run_dir, sizes, training, wall, None, data=data)


def _pool(folds: list[dict[str, Any]], resamples: int, seed: int, variant: str = "") -> dict[str, Any]:
    """Scores of the pooled out-of-fold cells and of one call per subject, with subject-bootstrap intervals.

    ``variant`` picks the prediction columns: ``""`` the plain ones, else a suffix of :data:`VARIANTS`.
    """
    rows = [row for fold in folds for row in fold["rows"]]
    classes = tuple(folds[0]["classes"])
    positive_class = folds[0]["positive_class"]
    if positive_class is None:
        raise BlastscopeError(f"bench_accuracy scores two-class data; this data has classes {', '.join(classes)}")
    positive = classes.index(positive_class)
    y_true = np.array([classes.index(row["label"]) for row in rows])
    y_prob = np.array([[row[f"p_{name}{variant}"] for name in classes] for row in rows])
    y_pred = np.array([classes.index(row[f"decided_label{variant}"]) for row in rows])
    subjects = [row["subject"] for row in rows]
    at_half = decide(y_prob, OperatingPoint(classes=classes, positive_class=positive_class))
    subject_rows = [row for fold in folds for row in fold[f"subject_rows{variant}"]]
    s_true = np.array([classes.index(row["true_class"]) for row in subject_rows])
    s_prob = np.array([[row["mean_probability"][name] for name in classes] for row in subject_rows])
    s_pred = np.array([classes.index(row["predicted_class"]) for row in subject_rows])
    subject_ci = bootstrap_ci(s_true, s_prob, s_pred, None, SUBJECT_METRICS, positive, resamples, seed)
    return {
        "classes": classes,
        "positive_class": positive_class,
        "cells": {
            "n": len(rows),
            "metrics": classification_metrics(y_true, y_prob, y_pred, classes, positive_class),
            "bootstrap": bootstrap_ci(y_true, y_prob, y_pred, subjects, CELL_METRICS, positive, resamples, seed),
            "weighted_f1_at_0.5": weighted_f1(y_true, y_prob, at_half, positive),
        },
        "subjects": {"n": len(subject_rows), "bootstrap": {**subject_ci, "unit": "subject"}, "rows": subject_rows},
    }


def _write_predictions(folds: list[dict[str, Any]], path: Path) -> None:
    rows = [row for fold in folds for row in fold["rows"]]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_subjects(rows: list[dict[str, Any]], classes: tuple[str, ...], tag: str, path: Path) -> None:
    """One dot per subject, sorted by the share of its cells called right, coloured by its class; a cross marks a
    subject whose own call (mean probability at its fold's threshold) is wrong."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    ordered = sorted(rows, key=lambda row: (row["accuracy"], row["subject"]))
    colors = class_colors(classes)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.2 * len(ordered) + 2), 3.8))
    for x, row in enumerate(ordered):
        right = row["predicted_class"] == row["true_class"]
        axes.scatter(x, row["accuracy"], s=36 if right else 64, marker="o" if right else "X",
                     color=colors[row["true_class"]], edgecolors="black", linewidths=0.4, zorder=3)  # fmt: skip
    axes.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xticks(range(len(ordered)), [row["subject"] for row in ordered], rotation=90, fontsize=7)
    axes.set_ylim(-0.03, 1.03)
    axes.set_ylabel("share of the subject's cells right")
    axes.set_title(f"Out-of-fold accuracy per subject: {tag}", fontsize=9)
    handles = [Line2D([], [], marker="o", linestyle="", color=colors[c], label=class_display_name(c)) for c in classes]
    handles.append(Line2D([], [], marker="X", linestyle="", color="grey", label="subject called wrong"))
    axes.legend(handles=handles, fontsize=8, loc="lower right")
    to_png(figure, path)


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Where the times were measured; the load averages say whether other jobs shared the CPU."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15_min_at_start": load_before,
        "load_average_1_5_15_min_at_end": os.getloadavg(),
    }


def _interval(entry: dict[str, Any]) -> str:
    if entry["estimate"] is None:
        return "undefined"
    low, high = entry["low"], entry["high"]
    return f"{entry['estimate']:.3f}" + (f" [95% CI {low:.3f}, {high:.3f}]" if low is not None else "")


def _print_results(results: dict[str, Any], tag: str) -> None:
    pooled, recipe = results["pooled"], results["recipe"]
    cells, subjects = pooled["cells"], pooled["subjects"]
    shown = [key for key in RECIPE_KEYS if key != "preprocessing" and recipe.get(key) is not None]  # ensembles: few
    print(f"\nrecipe [{tag}]: " + ", ".join(f"{key} {recipe[key]}" for key in shown))
    fold_rows = [
        [f["fold"], f["cells"]["test"], f["subjects"]["test"], f"{f['threshold']:.3f}", f"{f['weighted_f1']:.3f}",
         f"{f['roc_auc']:.3f}", f"{f['balanced_accuracy']:.3f}", f"{f['subject_accuracy']:.3f}", f["epochs_run"],
         f"{f['train_seconds']:.0f}", "reused" if f["wall_seconds"] is None else f"{f['wall_seconds']:.0f}"]
        for f in results["folds"]
    ]  # fmt: skip
    header = ["fold", "test cells", "subjects", "threshold", "weighted F1", "ROC-AUC", "bal. acc.", "subject acc.",
              "epochs", "fit s", "wall s"]  # fmt: skip
    print(f"\nper fold [{tag}]\n" + text_table(header, fold_rows))
    boot = cells["bootstrap"]
    print(
        f"\npooled out-of-fold, {cells['n']:,} cells; 95% CIs from {boot['n_resamples']} resamples of "
        f"{boot['n_units']} subjects within each class"
    )
    for name, shown in SHOWN.items():
        print(f"  [{tag}] {shown:<26} {_interval(boot['metrics'][name])}")
    positive = pooled["positive_class"]
    negative = next(name for name in pooled["classes"] if name != positive)
    for name, of in (("sensitivity", positive), ("specificity", negative)):
        print(f"  [{tag}] {f'{name} ({class_display_name(of)})':<26} {_interval(boot['metrics'][name])}")
    wrong = [row for row in subjects["rows"] if row["predicted_class"] != row["true_class"]]
    subject_boot = subjects["bootstrap"]["metrics"]
    named = f"; wrong: {', '.join(row['subject'] for row in wrong)}" if wrong else ""
    right = f"({subjects['n'] - len(wrong)}/{subjects['n']} subjects right{named})"
    print(f"  [{tag}] {'subject-level accuracy':<26} {_interval(subject_boot['accuracy'])} {right}")
    print(f"  [{tag}] {'subject-level bal. acc.':<26} {_interval(subject_boot['balanced_accuracy'])}")
    print(f"  [{tag}] {'weighted F1 at 0.5':<26} {cells['weighted_f1_at_0.5']:.3f} (no threshold choice)")
    for name, (_, label) in VARIANTS.items():
        if variant := pooled.get(name):
            variant_cells, variant_subjects = variant["cells"]["bootstrap"]["metrics"], variant["subjects"]
            for metric, shown in SHOWN.items():
                print(f"  [{tag} + {label}] {shown:<26} {_interval(variant_cells[metric])}")
            wrong_calls = sum(row["predicted_class"] != row["true_class"] for row in variant_subjects["rows"])
            print(
                f"  [{tag} + {label}] {'subject-level accuracy':<26} "
                f"{_interval(variant_subjects['bootstrap']['metrics']['accuracy'])} "
                f"({variant_subjects['n'] - wrong_calls}/{variant_subjects['n']} subjects right)"
            )
    subject_rows = [
        [r["subject"], class_display_name(r["true_class"]), r["fold"], r["n_cells"], f"{r['accuracy']:.3f}",
         f"{r['mean_probability'][positive]:.3f}", f"{r['threshold']:.3f}", class_display_name(r["predicted_class"]),
         "right" if r["predicted_class"] == r["true_class"] else "WRONG"]
        for r in sorted(subjects["rows"], key=lambda row: (row["true_class"], row["accuracy"], row["subject"]))
    ]  # fmt: skip
    header = ["subject", "class", "fold", "cells", "cells right", f"mean p({class_display_name(positive)})",
              "threshold", "call", "verdict"]  # fmt: skip
    print(f"\nper subject [{tag}]\n" + text_table(header, subject_rows))
    fits, machine = [fold["train_seconds"] for fold in results["folds"]], results["machine"]
    load = f"{machine['load_average_1_5_15_min_at_start'][0]:.1f}/{machine['load_average_1_5_15_min_at_end'][0]:.1f}"
    print(
        f"\n[{tag}] fit time per fold {', '.join(f'{s:.0f}' for s in fits)} s (mean {np.mean(fits):.0f} s); "
        f"benchmark wall {results['total_seconds']:.0f} s; load average at start/end {load} on {machine['cpu_count']} "
        "CPUs"
    )


if __name__ == "__main__":
    sys.exit(main())
