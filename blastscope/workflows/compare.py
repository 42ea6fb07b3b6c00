"""Train several models on one shared split with one shared budget, evaluate them alike, and write the report.

Every model sees the same split, seed, epochs per phase and image size (raised only where an architecture needs more,
e.g. inception_v3). Runs live under ``OUT/runs``; a finished run whose recipe and split hash match is reused, so an
interrupted comparison picks up where it stopped. ``cv=K`` repeats all of it on K subject-grouped folds.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from blastscope.data.attribution import dataset_attribution
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError
from blastscope.evaluation import plots
from blastscope.evaluation.evaluate import evaluate_run
from blastscope.inference.decision import OperatingPoint
from blastscope.models import list_models
from blastscope.workflows.report import (
    HEADLINE_METRICS,
    Comparison,
    DatasetCard,
    ModelResult,
    ReportFiles,
    write_report,
)

DEFAULT_MODELS = tuple(list_models())  # every registered model: the seven users ask for, and efficientnet_lite0


@dataclass(frozen=True, slots=True)
class Budget:
    """One training and evaluation budget shared by every compared model; ``image_size=None`` keeps each model's own."""

    name: str
    image_size: int | None
    epochs_frozen: int
    epochs_finetune: int
    batch_size: int
    bootstrap: int
    purpose: str

    def describe(self) -> str:
        size = f"{self.image_size} px" if self.image_size else "each model's own input size"
        return (
            f"budget {self.name} ({self.purpose}): image size {size}, epochs {self.epochs_frozen} frozen + "
            f"{self.epochs_finetune} fine-tuning, batch {self.batch_size}, {self.bootstrap} bootstrap resamples"
        )


BUDGETS = {
    "demo": Budget("demo", 48, 1, 2, 16, 200, "built-in synthetic cells, all 8 models in minutes on 2 CPU cores"),
    "standard": Budget("standard", None, 5, 10, 32, 1000, "a real dataset on a workstation or one GPU"),
    "full": Budget("full", None, 10, 20, 32, 2000, "final numbers for a paper or a decision"),
}


@dataclass(slots=True)
class CompareConfig:
    """What ``blastscope compare`` was asked for; unset budget fields fall back to the budget preset."""

    data: Path | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    out: Path = Path("blastscope-out")
    budget: str | None = None
    cv: int | None = None
    epochs_frozen: int | None = None
    epochs_finetune: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    bootstrap: int | None = None
    seed: int = 0
    pretrained: str = "auto"
    threshold: str | None = "0.5"
    """``val`` or a number: each run's operating point is chosen so (temperature fitted on its validation split) and
    stored in the run, as ``blastscope evaluate --threshold`` does; ``None`` scores each run at its stored point."""
    progress: bool = True
    train_overrides: dict[str, Any] = field(default_factory=dict)
    """Further TrainConfig fields shared by every model (e.g. num_workers), for callers that need them."""

    def resolved_budget(self) -> Budget:
        """The preset (demo without data, standard with) with any explicitly given numbers applied on top."""
        name = self.budget or ("demo" if self.data is None else "standard")
        if name not in BUDGETS:
            raise BlastscopeError(f"budget {name!r} is unknown: use one of {', '.join(BUDGETS)}")
        preset = BUDGETS[name]
        given = {
            "image_size": self.image_size,
            "epochs_frozen": self.epochs_frozen,
            "epochs_finetune": self.epochs_finetune,
            "batch_size": self.batch_size,
            "bootstrap": self.bootstrap,
        }
        return replace(preset, **{key: value for key, value in given.items() if value is not None})


@dataclass(frozen=True, slots=True)
class _Job:
    """One model trained on one fold of the shared split."""

    model: str
    fold: int
    split_csv: Path
    split_hash: str


def run_compare(config: CompareConfig) -> ReportFiles:
    """Train (or reuse) every model on every fold, evaluate each on its test part, and write the report to ``out``."""
    from blastscope.data.discover import scan_dataset

    budget = config.resolved_budget()
    _check_request(config)
    out = Path(config.out)
    data_root = _dataset(config, out)
    table = scan_dataset(data_root)
    splits = _shared_splits(table, config, out / "splits")
    print(budget.describe(), flush=True)
    layout = f"{config.cv} subject-grouped folds" if config.cv else "one shared split"
    print(f"{len(config.models)} model(s), {layout} of {data_root}; runs under {out / 'runs'}", flush=True)
    jobs = [_Job(model, fold, path, split.hash) for model in config.models for fold, (split, path) in enumerate(splits)]
    evaluations: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}
    for job in tqdm(jobs, desc="compare", unit="run", disable=not config.progress):
        run_dir = _trained_run(_train_config(job, config, budget, data_root, out / "runs"), job.split_hash)
        evaluations[job.model, job.fold] = run_dir, _evaluate(run_dir, config, budget)
    results = [_model_result(model, evaluations, len(splits)) for model in config.models]
    comparison = Comparison(
        dataset=_dataset_card(table, splits[0][0]),
        models=results,
        budget=_budget_table(config, budget, results),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cv_folds=config.cv,
        bootstrap_unit=_bootstrap_unit(evaluations),
    )
    return write_report(comparison, out)


def _check_request(config: CompareConfig) -> None:
    known = list_models()
    unknown = [name for name in config.models if name not in known]
    if unknown:
        raise BlastscopeError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    if not config.models:
        raise BlastscopeError("no models to compare: pass --models a,b (see `blastscope models`)")
    if config.cv is not None and config.cv < 3:
        raise BlastscopeError(
            f"--cv {config.cv} is too few folds: use 3 or more (one tests, one validates), or leave --cv out"
        )
    if config.pretrained not in ("auto", "none"):
        raise BlastscopeError(f"--pretrained {config.pretrained!r} is unknown: use auto or none")


def _dataset(config: CompareConfig, out: Path) -> Path:
    """The user's data, or the built-in synthetic cells (drawn once per seed into OUT/data)."""
    if config.data is not None:
        return Path(config.data).resolve()
    from blastscope.data.synth import synthesize

    target = (out / "data" / f"synthetic-seed{config.seed}").resolve()
    if not target.is_dir():
        print(f"no --data given: drawing synthetic cells (seed {config.seed}) into {target}", flush=True)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        synthesize(staging, seed=config.seed)
        staging.rename(target)  # all or nothing: a killed run never leaves half a dataset to reuse
    return target


def _shared_splits(table: CellTable, config: CompareConfig, directory: Path) -> list[tuple[Any, Path]]:
    """One split (or K folds) for all models, saved as split.csv files every run reads."""
    from blastscope.data.split import kfold_splits, make_split, write_split_csv

    directory.mkdir(parents=True, exist_ok=True)
    if config.cv:
        splits = kfold_splits(table, config.cv, seed=config.seed)
        paths = [directory / f"fold-{index + 1}-of-{config.cv}.csv" for index in range(len(splits))]
    else:
        splits = [make_split(table, seed=config.seed)]
        paths = [directory / "split.csv"]
    for split, path in zip(splits, paths, strict=True):
        write_split_csv(split, path)
    return list(zip(splits, paths, strict=True))


def _train_config(job: _Job, config: CompareConfig, budget: Budget, data_root: Path, runs: Path) -> Any:
    from blastscope.training.config import SplitConfig, TrainConfig

    return TrainConfig(
        data=str(data_root),
        model=job.model,
        pretrained=config.pretrained,
        image_size=_image_size(job.model, budget.image_size),
        epochs_frozen=budget.epochs_frozen,
        epochs_finetune=budget.epochs_finetune,
        batch_size=budget.batch_size,
        seed=config.seed,
        split=SplitConfig(csv=str(job.split_csv.resolve())),
        out=str(runs.resolve()),
        progress=config.progress,
        **config.train_overrides,
    )


def _image_size(model: str, wanted: int | None) -> int | None:
    """The shared size, raised to the architecture's minimum (inception_v3 needs 75 px)."""
    if wanted is None:
        return None
    from blastscope.models import get_spec

    return max(wanted, int(get_spec(model).min_input_size))


def _trained_run(train_config: Any, split_hash: str) -> Path:
    """A finished run of exactly this recipe on exactly this split; else an interrupted one resumed; else a new one."""
    from blastscope.models import get_spec
    from blastscope.training import resume, train

    recipe = train_config.with_defaults(get_spec(train_config.model).defaults.to_dict())
    found = find_run(Path(train_config.out), recipe.to_dict(), split_hash)
    if found is None:
        return Path(train(train_config))
    run_dir, finished = found
    if finished:
        tqdm.write(f"reusing finished run {run_dir}")
        return run_dir
    tqdm.write(f"resuming interrupted run {run_dir}")
    return Path(resume(run_dir))


IGNORED_WHEN_REUSING = ("progress",)
"""Recipe fields that change how a run looks, not what it learns."""


def find_run(runs: Path, recipe: dict[str, Any], split_hash: str) -> tuple[Path, bool] | None:
    """The newest run under ``runs`` with this recipe and split, and whether it finished (metrics.json exists).

    A finished run is preferred to an interrupted one. ``image_size=None`` in ``recipe`` (the model's own size)
    matches whatever size the run resolved it to.
    """
    from blastscope.training.config import TrainConfig

    wanted = _comparable(recipe)
    matches = []
    for config_path in sorted(runs.glob("*/config.yaml"), reverse=True):
        try:
            saved = yaml.safe_load(config_path.read_text())
            if saved.get("split_hash") != split_hash:
                continue
            candidate = _comparable(TrainConfig.from_dict(saved).to_dict())
        except (BlastscopeError, yaml.YAMLError, AttributeError, TypeError):
            continue  # a foreign or damaged run is simply not reused
        if wanted["image_size"] is None:
            candidate["image_size"] = None
        if candidate == wanted:
            run_dir = config_path.parent
            matches.append(
                (run_dir, (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file())
            )
    finished = [match for match in matches if match[1]]
    return (finished or matches or [None])[0]


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as a run saves it: augmentation with every switch spelled out, tuples as lists, and without the
    presentation-only fields."""
    from blastscope.data.datamodule import augment_config

    resolved = {**recipe, "augmentation": augment_config(recipe.get("augmentation") or {}).to_dict()}
    plain = json.loads(json.dumps(resolved, default=str))
    return {key: value for key, value in plain.items() if key not in IGNORED_WHEN_REUSING}


def _evaluate(run_dir: Path, config: CompareConfig, budget: Budget) -> dict[str, Any]:
    """Score the run's test split; a ``threshold`` of ``val`` or a number chooses its operating point and stores it."""
    result = evaluate_run(
        run_dir, threshold=config.threshold, bootstrap=budget.bootstrap, seed=config.seed, chosen_by="compare"
    )
    if result.stored_to:
        tqdm.write(f"stored the operating point in {result.stored_to}: {result.point.describe()}")
    evaluation = result.to_dict()
    (run_dir / "compare-evaluation.json").write_text(json.dumps(evaluation, indent=2, default=str))
    return evaluation


def _model_result(
    model: str, evaluations: dict[tuple[str, int], tuple[Path, dict[str, Any]]], folds: int
) -> ModelResult:
    """The report's view of one model: the first fold in detail, every fold's headline metrics under CV."""
    run_dir, evaluation = evaluations[model, 0]
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = model_result_from_evaluation(evaluation, recipe, metrics, run_dir)
    if folds > 1:
        result.fold_metrics = [
            {name: evaluations[model, fold][1]["plain"]["metrics"].get(name) for name in HEADLINE_METRICS}
            for fold in range(folds)
        ]
    return result


def model_result_from_evaluation(
    evaluation: dict[str, Any], recipe: dict[str, Any], metrics: dict[str, Any], run_dir: Path
) -> ModelResult:
    """Join an evaluation (``EvaluationResult.to_dict()``) with the run's recipe, timings and training history.

    The decision fields come from :func:`decision_fields`; those ``ModelResult`` does not declare yet are left out.
    """
    plain = evaluation["plain"]
    decision = decision_fields(evaluation)
    boot = plain.get("bootstrap") or {"metrics": {}}
    calibration = plain.get("calibration") or {}
    training = metrics.get("training") or {}
    roc = plain.get("roc")
    return ModelResult(
        **{key: value for key, value in decision.items() if key in ModelResult.__dataclass_fields__},
        name=evaluation["model"],
        display_name=evaluation["display_name"],
        weights_source=evaluation["weights_source"],
        pretrained=bool(evaluation["pretrained"]),
        classes=tuple(evaluation["classes"]),
        metrics={
            key: value for key, value in plain["metrics"].items() if isinstance(value, (int, float)) or value is None
        },
        intervals={
            name: (interval["low"], interval["high"])
            for name, interval in boot["metrics"].items()
            if interval.get("low") is not None
        },
        confusion=plain["metrics"]["confusion_matrix"],
        roc=(roc["fpr"], roc["tpr"]) if roc else None,
        reliability_before=_reliability(calibration.get("before")),
        reliability_after=_reliability(calibration.get("after")),
        subjects=[
            plots.SubjectAccuracy(str(row["subject"]), row["true_class"], float(row["accuracy"]), int(row["n_cells"]))
            for row in (plain.get("subjects") or {}).get("per_subject", [])
        ],
        history=read_history(run_dir / "history.csv"),
        train_seconds=training.get("train_seconds"),
        images_per_second=training.get("images_per_second"),
        settings=_training_settings(recipe),
        run_dir=str(run_dir),
    )


def decision_fields(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Where a model decided in an evaluation, for its ``ModelResult``.

    Parameters
    ----------
    evaluation : dict
        ``EvaluationResult.to_dict()``.

    Returns
    -------
    dict
        ``threshold`` (float: the threshold on p(positive); 0.5 and unused for multi-class data), ``threshold_origin``
        (``OperatingPoint.origin()``, e.g. "chosen on val (240 cells) for best weighted F1, reaching 0.9120 there, by
        compare; temperature 1.310") and ``operating_point`` (the full ``OperatingPoint.to_dict()``).
    """
    point = OperatingPoint.from_dict(evaluation["operating_point"])
    return {"threshold": point.threshold, "threshold_origin": point.origin(), "operating_point": point.to_dict()}


def _reliability(data: dict[str, Any] | None) -> plots.ReliabilityCurve | None:
    if not data:
        return None
    return plots.ReliabilityCurve(data["confidence"], data["accuracy"], data["counts"], float(data["ece"]))


def _bootstrap_unit(evaluations: dict[tuple[str, int], tuple[Path, dict[str, Any]]]) -> str:
    units = {(evaluation["plain"].get("bootstrap") or {}).get("unit") for _, evaluation in evaluations.values()}
    return "subjects" if units == {"subject"} else "cells"


def read_history(path: Path) -> list[plots.HistoryRow]:
    """history.csv as plot rows; a missing file (a run from elsewhere) gives no curves rather than an error."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            plots.HistoryRow(
                epoch=int(float(row["epoch"])),
                phase=row.get("phase") or "",
                train_loss=_float(row.get("train_loss")),
                val_loss=_float(row.get("val_loss")),
                val_weighted_f1=_float(row.get("val_weighted_f1")),
            )
            for row in csv.DictReader(handle)
        ]


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


TRAINING_SETTINGS = (
    "image_size",
    "epochs_frozen",
    "epochs_finetune",
    "lr_head",
    "lr_finetune",
    "unfreeze_stages",
    "batch_size",
    "weight_decay",
    "seed",
    "resolved_precision",
    "cached_features",
    "split_hash",
)


def _training_settings(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a reader of a model card needs, with the input size the model really used."""
    settings = {key: recipe.get(key) for key in TRAINING_SETTINGS}
    settings["image_size"] = (recipe.get("preprocessing") or {}).get("input_size", recipe.get("image_size"))
    switched_on = sorted(key for key, value in (recipe.get("augmentation") or {}).items() if value is True)
    settings["augmentation"] = ", ".join(switched_on) if switched_on else "defaults"
    return settings


def _dataset_card(table: CellTable, split: Any) -> DatasetCard:
    from blastscope.data.discover import natural_key

    cells_per_part = {part: dict(Counter(cell.label for cell in cells)) for part, cells in split.parts.items()}
    per_subject = Counter(
        (cell.subject, cell.label, part) for part, cells in split.parts.items() for cell in cells if cell.subject
    )
    parts = list(split.parts)
    order = sorted(per_subject, key=lambda key: (parts.index(key[2]), natural_key(key[0])))
    subjects = [(subject, label, part, per_subject[subject, label, part]) for subject, label, part in order]
    return DatasetCard(
        root=str(table.root),
        kind=table.kind,
        classes=tuple(table.classes),
        cells_per_part=cells_per_part,
        subjects=subjects,
        subject_level=bool(split.subject_level),
        attribution=dataset_attribution(table),
        duplicates=len(table.duplicates),
        skipped=len(table.skipped),
        notes=list(table.notes),
    )


def _threshold_text(threshold: str | None) -> str:
    if threshold is None:
        return "each run's stored operating point"
    chosen = "chosen on each run's validation split (best weighted F1)" if threshold == "val" else threshold
    return f"{chosen}, with a temperature fitted on the validation split; stored in each run"


def _budget_table(config: CompareConfig, budget: Budget, results: Sequence[ModelResult]) -> dict[str, Any]:
    sizes = {result.name: result.settings.get("image_size") for result in results}
    return {
        "budget": f"{budget.name} ({budget.purpose})",
        "models": ", ".join(config.models),
        "split": f"{config.cv}-fold subject-grouped cross-validation"
        if config.cv
        else "one shared train/val/test split",
        "seed": config.seed,
        "epochs (frozen backbone + fine-tuning)": f"{budget.epochs_frozen} + {budget.epochs_finetune}",
        "image size": ", ".join(f"{name} {size} px" for name, size in sizes.items()),
        "batch size": budget.batch_size,
        "pretrained": config.pretrained,
        "decision threshold": _threshold_text(config.threshold),
        "bootstrap resamples": budget.bootstrap,
    }
