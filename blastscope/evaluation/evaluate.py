"""Evaluate a trained run: predictions on a split (or on a dataset it never saw) scored every way that matters.

:func:`evaluate_predictions` is the pure core (arrays in, plain dict out); :func:`evaluate_run` loads a run, predicts
and calls it; :func:`format_summary` is what ``blastscope evaluate`` prints. The decision threshold and the calibration
temperature are fitted on the run's validation split only, and TTA numbers reuse the plain threshold so that the
difference between the two columns is the TTA alone.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import roc_curve

from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError, DataError
from blastscope.evaluation.bootstrap import bootstrap_ci
from blastscope.evaluation.calibration import calibration_report
from blastscope.evaluation.subjects import subject_report
from blastscope.evaluation.threshold import (
    ThresholdChoice,
    check_target_sensitivity,
    parse_threshold,
    resolve_threshold,
)
from blastscope.metrics import classification_metrics, display_name

SPLITS = ("test", "val", "train")
FEW_UNITS = 5
SUMMARY_ROWS = (
    ("weighted_f1", "weighted F1"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro F1"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("loss", "log loss"),
)


def evaluate_predictions(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    subjects: Sequence[str | None] | None,
    classes: Sequence[str],
    threshold: str | float | ThresholdChoice = 0.5,
    target_sensitivity: float | None = None,
    logits: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics, subject-level scores, bootstrap CIs, calibration and ROC points of one set of predictions.

    ``val`` is the validation split's ``(y_true, logits)``: the only data a ``"val"`` threshold or the temperature is
    fitted on. ``logits`` (of the evaluated cells) enable the after-temperature-scaling reliability.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    binary = len(classes) == 2
    choice = _threshold(threshold, target_sensitivity, val, binary)
    has_subjects = subjects is not None and all(subject is not None for subject in subjects)
    subject_ids = [str(s) for s in subjects] if has_subjects else None  # type: ignore[union-attr]
    return {
        "threshold": choice.to_dict(),
        "metrics": classification_metrics(y_true, y_prob, classes, choice.value),
        "subjects": subject_report(y_true, y_prob, subject_ids, classes, choice.value) if subject_ids else None,
        "bootstrap": (
            bootstrap_ci(y_true, y_prob, subject_ids, threshold=choice.value, n_resamples=bootstrap, seed=seed)
            if bootstrap > 0
            else None
        ),
        "calibration": calibration_report(y_true, y_prob, logits, val),
        "roc": _roc_points(y_true, y_prob) if binary else None,
    }


@dataclass(slots=True)
class EvaluationResult:
    """One run scored on one set of cells; ``tta`` holds the same evaluation with test-time augmentation."""

    run_dir: str
    model: str
    display_name: str
    weights_source: str
    pretrained: bool
    classes: list[str]
    data: str
    split: str
    n_cells: int
    subject_level: bool
    precision: str
    plain: dict[str, Any]
    tta: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    attribution: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """Per-cell rows for ``predictions.csv``; left out of :meth:`to_dict` to keep the JSON small."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["predictions"]
        return data


def evaluate_run(
    run_dir: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    threshold: str | float = 0.5,
    tta: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    target_sensitivity: float | None = None,
    checkpoint: str = "best",
    precision: str = "auto",
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = False,
) -> EvaluationResult:
    """Load ``run_dir``, predict ``split`` of its own data (or every cell of ``data``) and evaluate the predictions."""
    from blastscope.runs.folder import load_run

    check_target_sensitivity(target_sensitivity)
    threshold = parse_threshold(threshold)
    if data is None and split == "val" and (threshold == "val" or target_sensitivity is not None):
        raise BlastscopeError(
            "a threshold chosen on validation cannot be scored on --split val (it would be tuned on the cells it "
            "scores); use --split test or give --threshold a number"
        )
    run = load_run(run_dir, checkpoint)
    _move_to(run.model, device)
    classes = list(run.classes)
    notes: list[str] = []
    cells, source, subject_level, attribution = _cells_to_score(run, data, split, notes)
    predict = _predictor(run, precision, batch_size, progress)
    val_cells = run.split.parts.get("val", [])
    if data is None and split == "val":
        val_cells = []  # a temperature fitted on the cells it is scored on would flatter its own calibration
        notes.append("scoring the validation split: no temperature scaling (it is fitted on validation)")
    val = (_labels(val_cells, classes), predict(val_cells, False)[1]) if val_cells else None
    y_true, subjects = _labels(cells, classes), [cell.subject for cell in cells]
    probabilities, logits = predict(cells, False)
    plain = evaluate_predictions(
        y_true, probabilities, subjects, classes, threshold, target_sensitivity, logits, val, bootstrap, seed
    )
    tta_result, tta_probabilities = None, None
    if tta:
        tta_probabilities, _ = predict(cells, True)
        same_threshold = ThresholdChoice(**plain["threshold"])
        tta_result = evaluate_predictions(
            y_true, tta_probabilities, subjects, classes, same_threshold, bootstrap=bootstrap, seed=seed
        )
    return EvaluationResult(
        run_dir=str(run.run_dir),
        model=str(run.config["model"]),
        display_name=run.display_name,
        weights_source=run.weights_source,
        pretrained=run.pretrained,
        classes=classes,
        data=source,
        split=split if data is None else "all",
        n_cells=len(cells),
        subject_level=subject_level,
        precision=precision,
        plain=plain,
        tta=tta_result,
        notes=notes,
        attribution=attribution,
        predictions=prediction_rows(cells, probabilities, classes, tta_probabilities),
    )


def write_evaluation(result: EvaluationResult, out: Path) -> Path:
    """``evaluation.json`` and the per-cell ``predictions.csv`` into ``out``; returns the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "evaluation.json"
    path.write_text(json.dumps(result.to_dict(), indent=2))
    if result.predictions:
        with (out / "predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(result.predictions[0]))
            writer.writeheader()
            writer.writerows(result.predictions)
    return path


def format_summary(result: EvaluationResult) -> str:
    """An aligned, human-readable table: metric, value, 95% CI, and the TTA value when asked for."""
    plain, tta = result.plain, result.tta
    lines = [f"note: {note}" for note in result.notes]
    lines += [
        f"model: {result.display_name}; weights: {result.weights_source}",
        f"data: {result.data}: {result.n_cells} cells"
        + (f" from {plain['subjects']['n_subjects']} subjects" if plain["subjects"] else ""),
        f"decision: {_threshold_text(plain['threshold'], result.classes)}",
    ]
    boot = plain["bootstrap"]
    ci_header = f"95% CI ({boot['n_resamples']} resamples of {boot['unit']}s)" if boot else ""
    header = ["metric", "value", ci_header] + (["with TTA"] if tta else [])
    rows = [header]
    for key, label in SUMMARY_ROWS:
        value = plain["metrics"][key]
        if value is None:
            continue
        rows.append(
            [_metric_label(key, label, result.classes), f"{value:.4f}", _ci_text(boot, key)]
            + ([_number(tta["metrics"][key])] if tta else [])
        )
    lines += ["", *_aligned(rows)]
    if boot and min(boot["units_per_class"]) < FEW_UNITS:
        lines.append(
            f"(only {min(boot['units_per_class'])} {boot['unit']}s in the smallest class: the intervals "
            "understate the uncertainty)"
        )
    lines += ["", _calibration_text(plain["calibration"])]
    if plain["subjects"]:
        level = plain["subjects"]["subject_level"]
        lines.append(
            f"subject level (mean probability per subject): accuracy {level['accuracy']:.4f}, "
            f"weighted F1 {level['weighted_f1']:.4f} over {level['n']} subjects"
        )
    lines += ["", "confusion matrix (rows = true class, columns = predicted):"]
    names = [display_name(c) for c in result.classes]
    matrix = plain["metrics"]["confusion_matrix"]
    lines += _aligned([["", *names]] + [[name, *map(str, row)] for name, row in zip(names, matrix, strict=True)])
    if result.attribution:
        lines += ["", f"credit: {result.attribution}"]
    return "\n".join(lines)


def prediction_rows(
    cells: Sequence[Cell], probabilities: np.ndarray, classes: Sequence[str], tta: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One CSV row per cell: where it is, what it is, and the probability of each class (also with TTA if run)."""
    rows = []
    for i, cell in enumerate(cells):
        row: dict[str, Any] = {"path": str(cell.path), "subject": cell.subject or "", "label": cell.label}
        row.update({f"p_{name}": round(float(p), 6) for name, p in zip(classes, probabilities[i], strict=True)})
        if tta is not None:
            row.update({f"p_{name}_tta": round(float(p), 6) for name, p in zip(classes, tta[i], strict=True)})
        rows.append(row)
    return rows


def _threshold(
    spec: str | float | ThresholdChoice,
    target_sensitivity: float | None,
    val: tuple[np.ndarray, np.ndarray] | None,
    binary: bool,
) -> ThresholdChoice:
    if isinstance(spec, ThresholdChoice):
        return spec
    if not binary:
        return ThresholdChoice(0.5, "argmax (multi-class: no threshold)")
    val_probabilities = (val[0], softmax(np.asarray(val[1], dtype=np.float64), axis=1)) if val is not None else None
    return resolve_threshold(spec, val_probabilities, target_sensitivity)


def _roc_points(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, list[float]] | None:
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y_true, y_prob[:, 1])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _move_to(model: Any, device: str) -> None:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)


def _cells_to_score(
    run: Any, data: Path | str | None, split: str, notes: list[str]
) -> tuple[list[Cell], str, bool, str | None]:
    """The cells to evaluate, where they come from, whether results are subject-level, and whom to credit."""
    if data is None:
        cells, source = _split_cells(run, split), f"{split} split of {run.run_dir}"
        attribution = run.config.get("attribution")
        subject_level = bool(run.split.subject_level) and all(cell.subject for cell in cells)
        if split != "test":
            notes.append(
                f"the {split} split shaped this model (training or checkpoint/threshold/temperature choice), "
                "so its scores here are optimistic; the test split is the honest one"
            )
    else:
        (cells, attribution), source = _external_cells(run, Path(data), notes), str(data)
        subject_level = all(cell.subject for cell in cells) and not _shared_subjects(run, cells, notes)
    if not subject_level:
        notes.insert(
            0,
            "results are image-level: cells of one subject may be in both the training and the evaluated "
            "data, so these numbers can be optimistic and do not say how the model does on new people",
        )
    return cells, source, subject_level, attribution


def _split_cells(run: Any, split: str) -> list[Cell]:
    if split not in SPLITS:
        raise BlastscopeError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    cells = run.split.parts.get(split, [])
    if not cells:
        raise DataError(f"{run.run_dir}: the run's {split} split is empty; evaluate another split or pass --data DIR")
    return list(cells)


def _external_cells(run: Any, data: Path, notes: list[str]) -> tuple[list[Cell], str]:
    """Every cell of a dataset the run was not trained on (cells identical to its training or validation cells go),
    and the dataset's credit line."""
    from blastscope.data.attribution import dataset_attribution
    from blastscope.data.discover import scan_dataset

    table = scan_dataset(data)
    if set(table.classes) != set(run.classes):
        raise DataError(
            f"{data}: classes {', '.join(table.classes)} differ from the run's {', '.join(run.classes)}; "
            "evaluate on a dataset with the same class folders"
        )
    seen = {cell.digest for part in ("train", "val") for cell in run.split.parts.get(part, [])}
    cells = [cell for cell in table.cells if cell.digest not in seen]
    if len(cells) < len(table.cells):
        notes.append(
            f"{len(table.cells) - len(cells)} cells of {data} are identical to cells the run trained or "
            "validated on and were left out"
        )
    if table.skipped:
        notes.append(f"{len(table.skipped)} files of {data} could not be read and were skipped")
    if not cells:
        raise DataError(f"{data}: every cell is one the run trained or validated on; evaluate on unseen cells")
    return cells, dataset_attribution(table)


def _shared_subjects(run: Any, cells: Sequence[Cell], notes: list[str]) -> bool:
    """Whether subjects of the evaluated cells also gave cells to the run's training or validation split."""
    seen = {cell.subject for part in ("train", "val") for cell in run.split.parts.get(part, []) if cell.subject}
    shared = sorted({cell.subject for cell in cells if cell.subject} & seen)
    if shared:
        notes.append(
            f"{len(shared)} subjects of the evaluated data also gave cells to training or validation "
            f"({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''})"
        )
    return bool(shared)


def _labels(cells: Sequence[Cell], classes: Sequence[str]) -> np.ndarray:
    return np.array([classes.index(cell.label) for cell in cells], dtype=np.int64)


def _predictor(run: Any, precision: str, batch_size: int, progress: bool):
    """``predict(cells, tta) -> (probabilities, logits)`` with the run's own preprocessing and one shared cache."""
    from blastscope.data.cache import DecodedCache
    from blastscope.inference.predict import predict_proba

    transform = run.transform
    cache = DecodedCache()

    def predict(cells: Sequence[Cell], tta: bool) -> tuple[np.ndarray, np.ndarray]:
        return predict_proba(
            run.model,
            run.preprocessing,
            cells,
            batch_size=batch_size,
            tta=tta,
            cache=cache,
            precision=precision,
            return_logits=True,
            progress=progress,
            transform=transform,
        )

    return predict


def _threshold_text(threshold: dict[str, Any], classes: Sequence[str]) -> str:
    if len(classes) != 2:
        return "the most probable class (multi-class: no threshold)"
    positive = display_name(classes[-1])
    source, score = threshold["source"], threshold["val_score"]
    if source.startswith("val:"):
        goal = "best weighted F1" if source == "val:weighted_f1" else source.removeprefix("val:")
        how = f"chosen on validation for {goal}, reaching {score:.4f} there"
    else:
        how = source
    return f"{positive} when p({positive}) >= {threshold['value']:.4f} ({how})"


def _metric_label(key: str, label: str, classes: Sequence[str]) -> str:
    if key == "sensitivity":
        return f"{label} ({display_name(classes[-1])})"
    if key == "specificity":
        return f"{label} ({display_name(classes[0])})"
    return label


def _ci_text(boot: dict[str, Any] | None, key: str) -> str:
    interval = boot["metrics"].get(key) if boot else None
    if not interval or interval["low"] is None:
        return ""
    return f"[{interval['low']:.4f}, {interval['high']:.4f}]"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _calibration_text(calibration: dict[str, Any]) -> str:
    text = f"calibration: ECE {calibration['before']['ece']:.4f} ({calibration['before']['n_bins']} bins)"
    if calibration["after"] is not None:
        text += (
            f" -> {calibration['after']['ece']:.4f} after temperature scaling "
            f"(T = {calibration['temperature']:.3f}, fitted on validation)"
        )
    return text


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
