"""``run_compare``: every model on every fold, trained (or reused), evaluated alike, and one report written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from blastscope.data.classes import positive_class, positive_class_line
from blastscope.data.discover import scan_dataset
from blastscope.errors import BlastscopeError
from blastscope.evaluation.threshold import parse_threshold
from blastscope.inference.decision import OperatingPoint
from blastscope.metrics import class_display_name, one_class_warning
from blastscope.workflows.compare.cards import dataset_card
from blastscope.workflows.compare.config import CompareConfig, check_request, threshold_text
from blastscope.workflows.compare.jobs import Job, dataset_root, evaluate_job, shared_splits, train_config, trained_run
from blastscope.workflows.compare.results import (
    Evaluations,
    bootstrap_unit,
    budget_table,
    model_result,
    runs_positive_class,
)
from blastscope.workflows.report import TTA_LABEL, Comparison, ReportFiles, metric_label, summary_text, write_report


def run_compare(config: CompareConfig) -> ReportFiles:
    """Train (or reuse) every model on every fold, evaluate each on its test part, and write the report to ``out``.

    Parameters
    ----------
    config : CompareConfig
        The request; it is checked (:func:`~blastscope.workflows.compare.config.check_request`) before any work.

    Returns
    -------
    ReportFiles
        ``report.html``, ``report.md``, ``results.csv`` and ``results.json`` under ``config.out``; the ranking
        (:func:`~blastscope.workflows.report.summary_text`) is printed before they are written.

    Raises
    ------
    BlastscopeError
        For a bad request, data that cannot be split or trained on, or runs that decide about another positive class
        than the one announced (or than each other).
    """
    budget = config.resolved_budget()
    check_request(config)
    out = Path(config.out)
    data_root = dataset_root(config, out)
    table = scan_dataset(data_root)
    positive = positive_class(table.classes, config.positive_class)
    how = "given" if config.positive_class else "name"
    print(positive_class_line(positive, table.classes, how, class_display_name), flush=True)
    if isinstance(parse_threshold(config.threshold), float):  # refused now, not after the first model has trained
        OperatingPoint.default(table.classes, positive).check_threshold_applies(
            f"--threshold {config.threshold}", data_root
        )
    splits = shared_splits(table, config, out / "splits")
    print(f"{budget.describe()}; decision threshold: {threshold_text(config.threshold)}", flush=True)
    layout = f"{config.cv} subject-grouped folds" if config.cv else "one shared split"
    print(f"{len(config.models)} model(s), {layout} of {data_root}; runs under {out / 'runs'}", flush=True)
    tta = f"; every model also scored {TTA_LABEL} at the same threshold" if config.tta else ""
    print(f"ranking by {metric_label(config.rank_by)}{tta}", flush=True)
    jobs = [Job(model, fold, path, split) for model in config.models for fold, (split, path) in enumerate(splits)]
    evaluations: Evaluations = {}
    for job in tqdm(jobs, desc="compare", unit="run", disable=not config.progress):
        run_dir = trained_run(train_config(job, config, budget, data_root, out / "runs"), job.split)
        evaluations[job.model, job.fold] = evaluate_job(run_dir, config, budget)
        if single := evaluations[job.model, job.fold].evaluation["plain"]["metrics"].get("single_predicted_class"):
            fold = f" (fold {job.fold + 1})" if config.cv else ""
            print(f"warning: {job.model}{fold}: {one_class_warning(single, 'test cell')}", flush=True)
    decided = runs_positive_class(evaluations)
    if decided != positive:
        raise BlastscopeError(
            f"the runs under {out / 'runs'} decide about positive class {decided}, not the {positive} announced "
            "above (runs reused from an older blastscope?); compare into a new --out to retrain them"
        )
    results = [model_result(model, evaluations, len(splits)) for model in config.models]
    comparison = Comparison(
        dataset=dataset_card(table, splits[0][0], decided),
        models=results,
        budget=budget_table(config, budget, results),
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cv_folds=config.cv,
        bootstrap_unit=bootstrap_unit(evaluations),
        rank_by=config.rank_by,
        tta=config.tta,
    )
    print(summary_text(comparison), flush=True)
    return write_report(comparison, out)
