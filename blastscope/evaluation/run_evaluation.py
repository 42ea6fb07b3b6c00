"""Evaluate a trained run: predict cells through the inference core and score them at the run's operating point.

:func:`evaluate_run` loads a run, predicts the cells to score with the run's own runner, transform and one shared
decoded-image cache (``inference.predict.predict_logits``), and scores them with
:func:`~blastscope.evaluation.scoring.evaluate_predictions`. Without a threshold option it decides at the operating
point stored in the run, as ``predict``, ``serve`` and the Python API do. A threshold option chooses a new point
(temperature fitted on validation, threshold chosen there or given:
:func:`~blastscope.evaluation.threshold.choose_point`), which is scored and then stored in the run. TTA numbers use
the same point, so the difference between the two columns is the TTA alone. :func:`write_evaluation` writes
``evaluation.json`` and ``predictions.csv``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blastscope.data.cache import DecodedCache
from blastscope.data.classes import positive_class_line
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError
from blastscope.evaluation.cells import cells_to_score, class_indices
from blastscope.evaluation.scoring import decisions, evaluate_predictions
from blastscope.evaluation.threshold import (
    ThresholdSpec,
    check_target_sensitivity,
    choose_point,
    conflicting_threshold_options,
    parse_threshold,
)
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.predict import predict_logits
from blastscope.metrics import class_display_name
from blastscope.runs import TrainedRun, load_run

Predict = Callable[[Sequence[Cell], bool], np.ndarray]


@dataclass(slots=True)
class EvaluationResult:
    """One run scored on one set of cells at one operating point; ``tta`` holds the same with test-time augmentation.

    Attributes
    ----------
    operating_point : dict
        ``OperatingPoint.to_dict()`` of the point every decision was made at.
    point_source : {"stored", "chosen"}
        ``stored``: the run's own operating point; ``chosen``: chosen by this evaluation (threshold option).
    stored_to : str or None
        Where a chosen point was written (the run's ``operating_point.json``); ``None`` when nothing was stored.
    plain, tta : dict
        ``evaluate_predictions`` without and with test-time augmentation.
    predictions : list of dict
        Per-cell rows for ``predictions.csv``; left out of :meth:`to_dict` to keep the JSON small.
    """

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
    operating_point: dict[str, Any]
    point_source: str
    plain: dict[str, Any]
    tta: dict[str, Any] | None = None
    stored_to: str | None = None
    notes: list[str] = field(default_factory=list)
    attribution: str | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def point(self) -> OperatingPoint:
        """The operating point the decisions were made at."""
        return OperatingPoint.from_dict(self.operating_point)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-cell rows, as plain JSON-able types."""
        data = asdict(self)
        del data["predictions"]
        return data


def evaluate_run(
    run_dir: Path | str,
    data: Path | str | None = None,
    split: str = "test",
    threshold: ThresholdSpec = None,
    tta: bool = False,
    bootstrap: int = 1000,
    seed: int = 0,
    target_sensitivity: float | None = None,
    checkpoint: str = "best",
    precision: str = "fp32",
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = False,
    chosen_by: str = "evaluate",
    store: bool = True,
    announce: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Load ``run_dir``, predict ``split`` of its own data (or every unseen cell of ``data``) and evaluate it.

    Parameters
    ----------
    run_dir : path
        A folder made by ``blastscope train``.
    data : path, optional
        Score every cell of this dataset the run has not trained or validated on, instead of a split.
    split : {"test", "val", "train"}
    threshold : {None, "val"} or float (or its text)
        ``None``: decide at the run's stored operating point. ``"val"`` or a number: choose a new point (temperature
        fitted on validation, threshold chosen there for the best weighted F1, or given), score it and store it.
    tta : bool
        Also score the 8 flips/rotations, at the same point.
    bootstrap, seed : int
        Bootstrap resamples (0: no intervals) and their seed.
    target_sensitivity : float, optional
        Choose a new point whose threshold is the highest reaching this validation sensitivity, in (0, 1].
    checkpoint : str
        ``best``, ``last`` or a path; a point chosen with another checkpoint than ``best`` is not stored.
    precision : {"fp32", "bf16", "auto"}
        Inference precision (``inference.runners.PRECISIONS``); fp32 gives the numbers every other door gives.
    batch_size : int
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...
    progress : bool
        Show progress bars.
    chosen_by : str
        Recorded in a chosen point (``evaluate``, ``compare``).
    store : bool
        Store a chosen point in the run (``TrainedRun.save_operating_point``).
    announce : callable, optional
        Called with one line naming the run's positive class once the run is loaded, before any cell is read.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    BlastscopeError
        For a bad threshold or target, a number together with a target, a threshold chosen on validation scored on
        ``split="val"``, an unknown precision, or a folder that is not a run.
    DataError
        For an empty split or unusable ``data``.
    """
    check_target_sensitivity(target_sensitivity)
    spec = parse_threshold(threshold)
    if target_sensitivity is not None and spec not in (None, "val"):
        raise BlastscopeError(conflicting_threshold_options(threshold))  # type: ignore[arg-type]
    scoring_val = data is None and split == "val"
    if scoring_val and (spec == "val" or target_sensitivity is not None):
        raise BlastscopeError(
            "a threshold chosen on validation cannot be scored on --split val (it would be tuned on the cells it "
            "scores); use --split test or give --threshold a number"
        )
    run = load_run(run_dir, checkpoint)
    if announce is not None:
        announce(positive_class_line(run.operating_point.positive_class, run.classes, "run", class_display_name))
    _move_to(run.model, device)
    notes: list[str] = []
    cells, source, subject_level, attribution = cells_to_score(run, data, split, notes)
    predict = _predictor(run, precision, batch_size, progress)
    choosing = spec is not None or target_sensitivity is not None
    if choosing:
        point = _new_point(run, spec, target_sensitivity, scoring_val, predict, chosen_by, notes)
    else:
        point = run.operating_point
        if scoring_val and point.split == "val":
            notes.append(
                "the run's operating point (threshold and temperature) was chosen on these validation cells, so the "
                "decisions and calibration here are flattered"
            )
    y_true, subjects = class_indices(cells, run.classes), [cell.subject for cell in cells]
    logits = predict(cells, False)
    plain = evaluate_predictions(y_true, logits, subjects, point, bootstrap, seed)
    tta_logits = predict(cells, True) if tta else None
    tta_result = evaluate_predictions(y_true, tta_logits, subjects, point, bootstrap, seed) if tta else None
    stored_to = None
    if choosing and store:
        if checkpoint == "best":
            stored_to = str(run.save_operating_point(point))
        else:
            notes.append(
                f"the operating point was chosen with the {checkpoint} checkpoint, so it is not stored in the run "
                "(whose predictions use the best checkpoint)"
            )
    return EvaluationResult(
        run_dir=str(run.run_dir),
        model=run.model_name,
        display_name=run.display_name,
        weights_source=run.weights_source,
        pretrained=run.pretrained,
        classes=list(run.classes),
        data=source,
        split=split if data is None else "all",
        n_cells=len(cells),
        subject_level=subject_level,
        precision=precision,
        operating_point=point.to_dict(),
        point_source="chosen" if choosing else "stored",
        plain=plain,
        tta=tta_result,
        stored_to=stored_to,
        notes=notes,
        attribution=attribution,
        predictions=prediction_rows(cells, logits, point, tta_logits),
    )


def write_evaluation(result: EvaluationResult, out: Path) -> Path:
    """Write ``evaluation.json`` and the per-cell ``predictions.csv`` into ``out`` (created if missing).

    Returns
    -------
    Path
        The JSON file's path; ``predictions.csv`` lies beside it.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "evaluation.json"
    path.write_text(json.dumps(result.to_dict(), indent=2))
    if result.predictions:
        with (out / "predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(result.predictions[0]))
            writer.writeheader()
            writer.writerows(result.predictions)
    return path


def prediction_rows(
    cells: Sequence[Cell], logits: np.ndarray, point: OperatingPoint, tta_logits: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One CSV row per cell: where it is, what it is, each class's probability and the decision made from them.

    Parameters
    ----------
    cells : sequence of Cell, length N
    logits, tta_logits : arrays of shape (N, V, C) or (N, C)
        Without and (optionally) with test-time augmentation.
    point : OperatingPoint
        Scales the logits and decides.

    Returns
    -------
    list of dict
        ``path``, ``subject``, ``label``, ``p_<class>`` (exact, so ``decide`` on them gives ``decided_label`` again),
        ``decided_label``, ``threshold`` (empty for multi-class), ``decided_by`` (``point.origin()``), and with TTA
        ``p_<class>_tta`` and ``decided_label_tta``.
    """
    y_prob, y_pred = decisions(logits, point)
    tta = decisions(tta_logits, point) if tta_logits is not None else None
    threshold = point.threshold if point.binary else ""
    origin = point.origin()
    rows = []
    for i, cell in enumerate(cells):
        row: dict[str, Any] = {"path": str(cell.path), "subject": cell.subject or "", "label": cell.label}
        row.update({f"p_{name}": float(p) for name, p in zip(point.classes, y_prob[i], strict=True)})
        row.update({"decided_label": point.classes[y_pred[i]], "threshold": threshold, "decided_by": origin})
        if tta is not None:
            row.update({f"p_{name}_tta": float(p) for name, p in zip(point.classes, tta[0][i], strict=True)})
            row["decided_label_tta"] = point.classes[tta[1][i]]
        rows.append(row)
    return rows


def _new_point(
    run: TrainedRun,
    spec: ThresholdSpec,
    target_sensitivity: float | None,
    scoring_val: bool,
    predict: Predict,
    chosen_by: str,
    notes: list[str],
) -> OperatingPoint:
    """The point a threshold option asks for, fitted on the run's validation cells (none when they are scored)."""
    val_cells = [] if scoring_val else list(run.split.parts.get("val", []))
    if scoring_val:
        notes.append(
            "scoring the validation split: the new operating point gets no temperature scaling (the temperature "
            "is fitted on validation, the cells scored here)"
        )
    val = (class_indices(val_cells, run.classes), predict(val_cells, False)) if val_cells else None
    return choose_point(run.operating_point, spec, val, target_sensitivity, chosen_by)


def _move_to(model: Any, device: str) -> None:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)


def _predictor(run: TrainedRun, precision: str, batch_size: int, progress: bool) -> Predict:
    """``predict(cells, tta) -> logits (N, V, C)`` through the run's runner, its transform and one shared cache."""
    runner = run.runner(precision)  # type: ignore[arg-type]
    transform = run.transform
    cache = DecodedCache()

    def predict(cells: Sequence[Cell], tta: bool) -> np.ndarray:
        return predict_logits(
            runner,
            cells,
            run.preprocessing,
            transform,
            tta=tta,
            batch_size=batch_size,
            cache=cache,
            progress=progress,
        )

    return predict
