"""The runs a comparison needs: the data, the shared split, and one trained (or reused, or resumed) run per job.

A job is one model on one fold. :func:`trained_run` reuses a finished run of exactly the job's recipe and split, by
file names and by contents (:func:`find_run`), else resumes an interrupted one, else trains a new one;
:func:`evaluate_job` scores it on its test part (a :class:`FoldEvaluation`). Training is looked up on
:mod:`blastscope.training` and synthesis on :mod:`blastscope.data.synth` at call time, so a test can replace either
there.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from blastscope import training
from blastscope.data import synth
from blastscope.data.augment import augment_config
from blastscope.data.split import Split, kfold_splits, make_split, read_split_csv, write_split_csv
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError
from blastscope.evaluation.evaluate import evaluate_run
from blastscope.evaluation.referral import ReferralChoice
from blastscope.models import get_spec
from blastscope.runs.folder import finished
from blastscope.training.config import SplitConfig, TrainConfig
from blastscope.workflows.compare.config import Budget, CompareConfig

IGNORED_WHEN_REUSING = ("progress", "out")
"""Recipe fields that change how a run looks or where it is, not what it learns. The split's ``csv`` path is not
compared either: the split is, by its hashes, so a ``compare --out`` folder moved elsewhere keeps its runs."""

EVALUATION_FILE = "compare-evaluation.json"
"""Where each run keeps the evaluation ``compare`` made of it (``EvaluationResult.to_dict()``)."""


@dataclass(frozen=True, slots=True)
class FoldEvaluation:
    """One job's run scored on its test part: what the report is built from."""

    run_dir: Path
    evaluation: dict[str, Any]
    """``EvaluationResult.to_dict()``, as written to the run's :data:`EVALUATION_FILE`."""
    predictions: list[dict[str, Any]]
    """One row per test cell (``EvaluationResult.predictions``: ``label``, ``p_<class>``, ``decided_label``,
    ``threshold``, ``referred``, ...), kept in memory only, so that cross-validation can pool every fold's cells."""


@dataclass(frozen=True, slots=True)
class Job:
    """One model trained on one fold of the shared split."""

    model: str
    fold: int
    split_csv: Path
    split: Split


def dataset_root(config: CompareConfig, out: Path) -> Path:
    """The user's data, or the built-in synthetic cells, drawn once per seed into ``OUT/data``.

    Parameters
    ----------
    config : CompareConfig
        ``data`` (``None``: synthetic cells) and ``seed``.
    out : path
        The comparison's output folder.

    Returns
    -------
    Path
        The absolute dataset folder (or manifest) to scan.
    """
    if config.data is not None:
        return Path(config.data).resolve()
    target = (out / "data" / f"synthetic-seed{config.seed}").resolve()
    if not target.is_dir():
        print(f"no --data given: drawing synthetic cells (seed {config.seed}) into {target}", flush=True)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        synth.synthesize(staging, seed=config.seed)
        staging.rename(target)  # all or nothing: a killed run never leaves half a dataset to reuse
    return target


def shared_splits(table: CellTable, config: CompareConfig, directory: Path) -> list[tuple[Split, Path]]:
    """One split (or ``config.cv`` folds) for all models, saved as the split CSV files every run reads.

    Parameters
    ----------
    table : CellTable
        The scanned dataset.
    config : CompareConfig
        ``cv`` and ``seed``.
    directory : path
        Where the CSV files go (``OUT/splits``): ``split.csv``, or ``fold-I-of-K.csv`` per fold.

    Returns
    -------
    list of (Split, Path)
        Every split with its CSV file, fold order.
    """
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


def train_config(job: Job, config: CompareConfig, budget: Budget, data_root: Path, runs: Path) -> TrainConfig:
    """The recipe of one job: the shared budget, seed and split, and the job's model.

    Parameters
    ----------
    job : Job
    config : CompareConfig
        ``pretrained``, ``seed``, ``progress`` and ``train_overrides``.
    budget : Budget
    data_root : path
        The dataset every model reads.
    runs : path
        Where runs are written (``OUT/runs``).

    Returns
    -------
    TrainConfig
    """
    return TrainConfig(
        data=str(data_root),
        model=job.model,
        pretrained=config.pretrained,
        image_size=image_size_for(job.model, budget.image_size),
        epochs_frozen=budget.epochs_frozen,
        epochs_finetune=budget.epochs_finetune,
        batch_size=budget.batch_size,
        seed=config.seed,
        positive_class=config.positive_class,
        split=SplitConfig(csv=str(job.split_csv.resolve())),
        out=str(runs.resolve()),
        progress=config.progress,
        **config.train_overrides,
    )


def image_size_for(model: str, wanted: int | None) -> int | None:
    """The shared input size, raised to the architecture's minimum (inception_v3 needs 75 px).

    Parameters
    ----------
    model : str
        A registered model name.
    wanted : int or None
        The budget's size; ``None`` keeps the model's own.

    Returns
    -------
    int or None
    """
    if wanted is None:
        return None
    return max(wanted, int(get_spec(model).min_input_size))


def trained_run(recipe: TrainConfig, split: Split) -> Path:
    """A finished run of exactly this recipe on exactly this split; else an interrupted one resumed; else a new one.

    Parameters
    ----------
    recipe : TrainConfig
        The job's recipe (:func:`train_config`); the model's defaults fill what it leaves unset.
    split : Split
        The split the run must have used, by file names and by contents (:func:`find_run`).

    Returns
    -------
    Path
        The run folder.
    """
    resolved = recipe.with_defaults(get_spec(recipe.model).defaults.to_dict())
    found = find_run(Path(recipe.out), resolved.to_dict(), split)
    if found is None:
        return Path(training.train(recipe, announce=False))  # compare said it once
    run_dir, finished = found
    if finished:
        tqdm.write(f"reusing finished run {run_dir}")
        return run_dir
    tqdm.write(f"resuming interrupted run {run_dir}")
    return Path(training.resume(run_dir, announce=False))


def find_run(runs: Path, recipe: dict[str, Any], split: Split) -> tuple[Path, bool] | None:
    """The newest run under ``runs`` with this recipe and split, and whether it finished.

    The split must match by file names (``split_hash``) and by contents (``split_content_hash``): a dataset redrawn
    or re-exported under the same names is other data, and a run trained on the old images is not reused. A run
    recorded before ``split_content_hash`` existed is judged by the digests in its own split.csv, which it has
    always kept: it is reused when they agree, as before, and retrained when they do not (or split.csv is gone).

    Parameters
    ----------
    runs : path
        A folder of runs (``OUT/runs``).
    recipe : dict
        ``TrainConfig.to_dict()`` with the model's defaults filled in. ``image_size=None`` (the model's own size)
        matches whatever size the run resolved it to; :data:`IGNORED_WHEN_REUSING` fields are not compared.
    split : Split
        The split the run must have used.

    Returns
    -------
    (Path, bool) or None
        The run and whether it finished (``metrics.json`` and the best checkpoint exist); a finished run is preferred
        to an interrupted one. ``None`` when no run matches; foreign or damaged runs never do.
    """
    wanted = comparable_recipe(recipe)
    matches = []
    for config_path in sorted(runs.glob("*/config.yaml"), reverse=True):
        try:
            saved = yaml.safe_load(config_path.read_text())
            if saved.get("split_hash") != split.hash:
                continue
            candidate = comparable_recipe(TrainConfig.from_dict(saved).to_dict())
            if wanted["image_size"] is None:
                candidate["image_size"] = None
            if candidate != wanted or _content_hash(config_path.parent, saved) != split.content_hash:
                continue
        except (BlastscopeError, yaml.YAMLError, AttributeError, TypeError):
            continue  # a foreign or damaged run is simply not reused
        run_dir = config_path.parent
        matches.append((run_dir, finished(run_dir)))
    done = [match for match in matches if match[1]]
    return (done or matches or [None])[0]


def _content_hash(run_dir: Path, saved: dict[str, Any]) -> str:
    """The run's recorded ``split_content_hash``, or for a run recorded before it, that of its split.csv's digests.

    Raises ``DataError`` when that split.csv is missing or damaged.
    """
    recorded = saved.get("split_content_hash")
    return str(recorded) if recorded is not None else read_split_csv(run_dir / "split.csv").content_hash


def comparable_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe as a run saves it, so two recipes compare equal exactly when they train the same model.

    Parameters
    ----------
    recipe : dict
        ``TrainConfig.to_dict()``.

    Returns
    -------
    dict
        Augmentation with every switch spelled out, tuples as lists, without :data:`IGNORED_WHEN_REUSING` nor the
        split's ``csv`` path.
    """
    split = {key: value for key, value in (recipe.get("split") or {}).items() if key != "csv"}
    resolved = {**recipe, "augmentation": augment_config(recipe.get("augmentation") or {}).to_dict(), "split": split}
    plain = json.loads(json.dumps(resolved, default=str))
    return {key: value for key, value in plain.items() if key not in IGNORED_WHEN_REUSING}


def evaluate_job(run_dir: Path, config: CompareConfig, budget: Budget) -> FoldEvaluation:
    """Score a run's test part at its stored operating point, or at one chosen now and stored in it.

    Parameters
    ----------
    run_dir : path
        A finished run.
    config : CompareConfig
        ``threshold`` (``None``: the stored point; ``val`` or a number: choose and store one, by ``compare``),
        ``refer_error`` (choose and store a refer band), ``tta`` (also score the 8 views, at the same point) and
        ``seed``.
    budget : Budget
        ``bootstrap`` resamples.

    Returns
    -------
    FoldEvaluation
        ``EvaluationResult.to_dict()`` (also written to the run's :data:`EVALUATION_FILE`) and its per-cell rows.
    """
    result = evaluate_run(
        run_dir,
        threshold=config.threshold,
        tta=config.tta,
        bootstrap=budget.bootstrap,
        seed=config.seed,
        chosen_by="compare",
        refer_error=config.refer_error,
    )
    if result.stored_to:
        tqdm.write(f"stored the operating point in {result.stored_to}: {result.point.describe()}")
    if result.referral_choice is not None:
        tqdm.write(f"{run_dir.name}: {ReferralChoice.from_dict(result.referral_choice).describe()}")
    evaluation = result.to_dict()
    (run_dir / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2, default=str))
    return FoldEvaluation(run_dir, evaluation, result.predictions)
