"""Evaluate a trained run: predict cells through the inference core and score them at the run's operating point.

:func:`evaluate_run` loads a run, predicts the cells to score with the run's own runner, transform and one shared
decoded-image cache (``inference.predict.predict_logits``), after checking that the files of its own split it reads
still hold the images split.csv recorded (their digests), and scores them with
:func:`~blastscope.evaluation.scoring.evaluate_predictions`. Without a threshold option it decides at the operating
point stored in the run, as ``predict``, ``serve`` and the Python API do. A threshold option chooses a new point
(temperature fitted on validation, threshold chosen there or given:
:func:`~blastscope.evaluation.threshold.choose_point`), which is scored and then stored in the run. TTA numbers use
the same point, so the difference between the two columns is the TTA alone. ``refer_error`` also chooses the point's
refer band on validation (:func:`~blastscope.evaluation.referral.choose_refer_band`), which flags cells for a person to
review without changing their labels. ``transductive_neighbours`` adds a separately labelled, never-default section:
each cell's probability mixed with those of its most similar evaluated cells
(:mod:`~blastscope.evaluation.transductive`). :func:`write_evaluation` writes ``evaluation.json``,
``predictions.csv`` and, for binary data, the risk-coverage plot ``risk_coverage.png``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from blastscope.data.cache import DecodedCache
from blastscope.data.classes import positive_class_line
from blastscope.data.preprocessing import (
    check_red_cell_diameter,
    check_segment_mode,
    scale_override_line,
    segment_override_line,
)
from blastscope.data.split import changed_cells
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError, DataError
from blastscope.evaluation import plots
from blastscope.evaluation.cells import cells_to_score, class_indices, readable_cells
from blastscope.evaluation.referral import ReferralChoice, check_refer_error, choose_refer_band
from blastscope.evaluation.scoring import decisions, evaluate_predictions
from blastscope.evaluation.threshold import (
    ThresholdSpec,
    check_target_sensitivity,
    check_threshold_options,
    choose_point,
    conflicting_threshold_options,
    parse_threshold,
)
from blastscope.evaluation.transductive import SUFFIX, transductive_section
from blastscope.inference.decision import MEMBERS_VALIDATION, OperatingPoint, uncertain
from blastscope.inference.predict import predict_features, predict_logits, probabilities
from blastscope.metrics import class_display_name
from blastscope.runs import TrainedRun, load_run

Predict = Callable[[Sequence[Cell], bool], np.ndarray]
RISK_COVERAGE_FILE = "risk_coverage.png"


@dataclass(slots=True)
class EvaluationResult:
    """One run scored on one set of cells at one operating point; ``tta`` holds the same with test-time augmentation.

    Attributes
    ----------
    checkpoint : str
        The weights scored: ``best``, ``last`` or a checkpoint's path (the stored point belongs to ``best``).
    operating_point : dict
        ``OperatingPoint.to_dict()`` of the point every decision was made at.
    point_source : {"stored", "chosen"}
        ``stored``: the run's own operating point; ``chosen``: chosen by this evaluation (threshold option) and
        differing from the stored one (one that comes out the same, e.g. no refer band found for a run without one, is
        ``stored``, and nothing is written).
    stored_to : str or None
        Where a chosen point was written (the run's ``operating_point.json``); ``None`` when nothing was stored.
    plain, tta : dict
        ``evaluate_predictions`` without and with test-time augmentation.
    transductive : dict or None
        With ``transductive_neighbours``: the plain probabilities corrected by each cell's most similar evaluated
        cells, scored at the same point (:func:`~blastscope.evaluation.transductive.transductive_section`; its
        ``label`` says what it is). Not a per-cell prediction.
    referral_choice : dict or None
        ``ReferralChoice.to_dict()`` when this evaluation chose the refer band (``refer_error``): the target, the band
        (or why there is none) and what it did on validation.
    segmented_cells : int
        How many of the scored cells were cut out of their background (``--segment``).
    colour_people : int
        How many people's cells had their colours normalised together (the run's ``--colour-norm subject``); 0 when
        the run feeds colours as decoded.
    skipped_cells : list of [path, reason]
        Files left out, each with its reason: set aside by the scan of ``data`` (unreadable, outside a class folder,
        not a C-NMC name...), or cells whose image cannot be decoded or in which no cell was found.
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
    checkpoint: str
    operating_point: dict[str, Any]
    point_source: str
    plain: dict[str, Any]
    tta: dict[str, Any] | None = None
    transductive: dict[str, Any] | None = None
    stored_to: str | None = None
    notes: list[str] = field(default_factory=list)
    attribution: str | None = None
    referral_choice: dict[str, Any] | None = None
    segmented_cells: int = 0
    colour_people: int = 0
    skipped_cells: list[tuple[str, str]] = field(default_factory=list)
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
    refer_error: float | None = None,
    segment: str | None = None,
    transductive_neighbours: int | None = None,
    red_cell_diameter: float | None = None,
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
    refer_error : float, optional
        Also choose the point's refer band on validation for this error rate among called cells, in (0, 1); alone,
        it keeps the run's threshold and temperature. The band (or, when none meets it, no band) is stored with the
        point.
    segment : {"auto", "always", "never"}, optional
        Read the cells with this ``--segment`` mode instead of the run's (announced, noted; a point chosen so is not
        stored). Cells that cannot be read or whose cell is not found are skipped and noted either way.
    red_cell_diameter : float, optional
        Cut cells out at this red-cell diameter (px of the images) instead of the run's (announced and noted like
        ``segment``; a point chosen so is not stored).
    transductive_neighbours : int, optional
        Also score each cell's plain probability mixed with those of its K most similar scored cells (Pan et al.
        2019; :mod:`~blastscope.evaluation.transductive`) in the separate ``transductive`` section; K >= 1, fewer
        than the scored cells. Needs the run's PyTorch network; changes neither the point nor the plain numbers.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    BlastscopeError
        For a bad threshold, target or ``refer_error``, a number together with a target, a threshold or band chosen
        on validation scored on ``split="val"``, a band for a multi-class run or one without validation cells, an
        unknown precision, a folder that is not a run, or ``transductive_neighbours`` below 1 or not below the number
        of scored cells.
    DataError
        For an empty split or unusable ``data``, or when files of the run's split that this evaluation reads (the
        scored part; validation when choosing a point) hold other images now than its split.csv recorded.
    """
    check_target_sensitivity(target_sensitivity)
    check_refer_error(refer_error)
    _check_neighbours(transductive_neighbours)
    if segment is not None:
        check_segment_mode(segment)
    check_red_cell_diameter(red_cell_diameter)
    spec = parse_threshold(threshold)
    if target_sensitivity is not None and spec not in (None, "val"):
        raise BlastscopeError(conflicting_threshold_options(threshold))  # type: ignore[arg-type]
    scoring_val = data is None and split == "val"
    if scoring_val and (spec == "val" or target_sensitivity is not None or refer_error is not None):
        raise BlastscopeError(
            "a threshold or refer band chosen on validation cannot be scored on --split val (it would be tuned on the "
            "cells it scores); use --split test or give --threshold a number"
        )
    run = load_run(run_dir, checkpoint)
    notes: list[str] = []
    if announce is not None:
        announce(positive_class_line(run.operating_point.positive_class, run.classes, "run", class_display_name))
    check_threshold_options(run.operating_point, spec, target_sensitivity, run.run_dir)
    if spec == "val" and not run.operating_point.binary:
        notes.append(
            f"{run.run_dir} has {len(run.classes)} classes, decided by the most probable class: --threshold val fits "
            "only the temperature on validation (there is no threshold to choose)"
        )
    if spec == "val" and not run.split.parts.get("val") and run.operating_point.split == MEMBERS_VALIDATION:
        raise BlastscopeError(
            f"{run.run_dir}: this ensemble has no validation cells of its own; its threshold was chosen on its "
            "members' validation cells when it was made: evaluate it without --threshold, or give a number"
        )
    if refer_error is not None and not run.operating_point.binary:
        raise BlastscopeError(
            f"{run.run_dir}: --refer-error needs a binary run (a threshold on p(positive)); this one has "
            f"{len(run.classes)} classes"
        )
    _move_to(run.model, device)
    overridden = []
    if segment is not None and (line := segment_override_line(run.preprocessing.segment, segment)):
        run.preprocessing = replace(run.preprocessing, segment=segment)
        overridden.append(line)
    if red_cell_diameter is not None and (
        line := scale_override_line(run.preprocessing.red_cell_diameter, red_cell_diameter)
    ):
        run.preprocessing = replace(run.preprocessing, red_cell_diameter=red_cell_diameter)
        overridden.append(line)
    for line in overridden:
        notes.append(line)
        if announce is not None:
            announce(line)
    cells, source, subject_level, attribution, scan_skipped = cells_to_score(run, data, split, notes)
    if data is None:
        new_data = f"`blastscope evaluate {run.run_dir} --data {run.config.get('data') or 'DIR'}`"
        _check_unchanged(run, cells, split, f"score the images as they are now as new data with {new_data}")
    cells, segmented, unreadable = readable_cells(run, cells, notes, "scored")
    features = None  # first: a network without features of its own (an ensemble) stops before any other work
    if transductive_neighbours is not None:
        if transductive_neighbours >= len(cells):
            raise BlastscopeError(
                f"{run.run_dir}: --transductive-neighbours {transductive_neighbours} needs more scored cells than "
                f"neighbours; {len(cells)} were scored: give a smaller K"
            )
        features = predict_features(
            run.model,
            cells,
            run.preprocessing,
            run.transform,
            precision=precision,  # type: ignore[arg-type]
            batch_size=batch_size,
            progress=progress,
        )
    predict = _predictor(run, precision, batch_size, progress)
    choosing = spec is not None or target_sensitivity is not None or refer_error is not None
    choice = None
    if choosing:
        point, choice = _new_point(run, spec, target_sensitivity, refer_error, scoring_val, predict, chosen_by, notes)
        if point == run.operating_point:  # --refer-error found no band, and the run had none: nothing to store
            choosing = False
            notes.append("the run's operating point is unchanged by this evaluation, so nothing was stored")
    else:
        point = run.operating_point
        if scoring_val and point.split == "val":
            notes.append(
                "the run's operating point (threshold and temperature) was chosen on these validation cells, so the "
                "decisions and calibration here are flattered"
            )
        if checkpoint != "best" and point.split is not None:
            notes.append(
                f"the run's operating point (threshold and temperature) was chosen with its best checkpoint, not the "
                f"{checkpoint} one scored here, so it may not fit it: --threshold val chooses one for it (not stored)"
            )
    y_true, subjects = class_indices(cells, run.classes), [cell.subject for cell in cells]
    logits = predict(cells, False)
    plain = evaluate_predictions(y_true, logits, subjects, point, bootstrap, seed)
    tta_logits = predict(cells, True) if tta else None
    tta_result = evaluate_predictions(y_true, tta_logits, subjects, point, bootstrap, seed) if tta else None
    transductive, transductive_logits = None, None
    if features is not None and transductive_neighbours is not None:
        transductive, transductive_logits = transductive_section(
            y_true, features, logits, subjects, point, transductive_neighbours, bootstrap, seed
        )
    stored_to = None
    if choosing and store:
        if overridden:
            notes.append(
                "the operating point was chosen with another --segment or --red-cell-diameter than the run's, so it "
                "is not stored"
            )
        elif checkpoint == "best":
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
        checkpoint=str(checkpoint),
        operating_point=point.to_dict(),
        point_source="chosen" if choosing else "stored",
        plain=plain,
        tta=tta_result,
        transductive=transductive,
        stored_to=stored_to,
        notes=notes,
        attribution=attribution,
        referral_choice=choice.to_dict() if choice is not None else None,
        segmented_cells=sum(segmented),
        colour_people=len({cell.subject for cell in cells}) if run.preprocessing.colour_norm == "subject" else 0,
        skipped_cells=[*scan_skipped, *unreadable],
        predictions=prediction_rows(
            cells, logits, point, tta_logits, segmented=segmented, transductive_logits=transductive_logits
        ),
    )


def write_evaluation(result: EvaluationResult, out: Path) -> Path:
    """Write ``evaluation.json``, the per-cell ``predictions.csv`` and (binary data) ``risk_coverage.png`` into
    ``out`` (created if missing).

    Returns
    -------
    Path
        The JSON file's path; the other files lie beside it.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "evaluation.json"
    path.write_text(json.dumps(result.to_dict(), indent=2))
    if result.predictions:
        with (out / "predictions.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(result.predictions[0]))
            writer.writeheader()
            writer.writerows(result.predictions)
    referral = result.plain.get("referral")
    if referral is not None and referral["curve"]["coverage"]:
        # a band stored by an earlier run's --refer-error keeps its target with the point; this run chose none
        target = result.referral_choice["target"] if result.referral_choice else result.point.refer_target
        curve = plots.RiskCoverage.from_report(referral, result.point.positive_class, target)  # type: ignore[arg-type]
        where = f"{result.split} split" if result.split != "all" else Path(result.data).name
        plots.to_png(plots.risk_coverage(curve, result.display_name, where), out / RISK_COVERAGE_FILE)
    return path


def prediction_rows(
    cells: Sequence[Cell],
    logits: np.ndarray,
    point: OperatingPoint,
    tta_logits: np.ndarray | None = None,
    *,
    segmented: Sequence[bool],
    transductive_logits: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One CSV row per cell: where it is, what it is, each class's probability and the decision made from them.

    Parameters
    ----------
    cells : sequence of Cell, length N
    logits, tta_logits : arrays of shape (N, V, C) or (N, C)
        Without and (optionally) with test-time augmentation.
    point : OperatingPoint
        Scales the logits and decides.
    segmented : sequence of bool, length N
        Whether each cell was cut out of its background before it was classified.
    transductive_logits : array of shape (N, C), optional
        Logits of the neighbourhood-corrected probabilities
        (:func:`~blastscope.evaluation.transductive.transductive_section`).

    Returns
    -------
    list of dict
        ``path``, ``subject``, ``label``, ``p_<class>`` (exact, so ``decide`` on them gives ``decided_label`` again),
        ``decided_label``, ``positive_class`` and ``threshold`` (on p(positive); both empty for multi-class),
        ``decided_by`` (``point.origin()``), ``referred``
        (inside the point's refer band: flagged for a person, label unchanged), ``segmented``, and with TTA
        ``p_<class>_tta``, ``decided_label_tta`` and ``referred_tta``; with transductive logits the same three
        ending in ``_transductive``.
    """
    y_prob, y_pred = decisions(logits, point)
    tta = decisions(tta_logits, point) if tta_logits is not None else None
    referred = uncertain(y_prob, point)
    referred_tta = uncertain(tta[0], point) if tta is not None else None
    corrected = decisions(transductive_logits, point) if transductive_logits is not None else None
    referred_corrected = uncertain(corrected[0], point) if corrected is not None else None
    threshold, positive = (point.threshold, point.positive_class) if point.binary else ("", "")
    origin = point.origin()
    rows = []
    for i, cell in enumerate(cells):
        row: dict[str, Any] = {"path": str(cell.path), "subject": cell.subject or "", "label": cell.label}
        row.update({f"p_{name}": float(p) for name, p in zip(point.classes, y_prob[i], strict=True)})
        row.update({"decided_label": point.classes[y_pred[i]], "positive_class": positive, "threshold": threshold})
        row["decided_by"] = origin
        row["referred"] = bool(referred[i])
        row["segmented"] = bool(segmented[i])
        if tta is not None:
            row.update({f"p_{name}_tta": float(p) for name, p in zip(point.classes, tta[0][i], strict=True)})
            row["decided_label_tta"] = point.classes[tta[1][i]]
            row["referred_tta"] = bool(referred_tta[i])  # type: ignore[index]
        if corrected is not None:
            row.update({f"p_{name}{SUFFIX}": float(p) for name, p in zip(point.classes, corrected[0][i], strict=True)})
            row[f"decided_label{SUFFIX}"] = point.classes[corrected[1][i]]
            row[f"referred{SUFFIX}"] = bool(referred_corrected[i])  # type: ignore[index]
        rows.append(row)
    return rows


def _new_point(
    run: TrainedRun,
    spec: ThresholdSpec,
    target_sensitivity: float | None,
    refer_error: float | None,
    scoring_val: bool,
    predict: Predict,
    chosen_by: str,
    notes: list[str],
) -> tuple[OperatingPoint, ReferralChoice | None]:
    """The point the options ask for, fitted on the run's validation cells (none when they are scored), and the
    refer band's choice when ``refer_error`` asks for one.

    A new threshold drops the stored refer band: the band was chosen around the old threshold. ``refer_error``
    alone keeps the stored threshold and temperature and chooses a band for them.
    """
    val_cells = [] if scoring_val else run.split.parts.get("val", [])
    _check_unchanged(run, val_cells, "validation", "restore them to choose the point on them")
    val_cells = readable_cells(run, val_cells, notes, "validation")[0] if val_cells else []
    if scoring_val:
        notes.append(
            "scoring the validation split: the new operating point gets no temperature scaling (the temperature "
            "is fitted on validation, the cells scored here)"
        )
    val = (class_indices(val_cells, run.classes), predict(val_cells, False)) if val_cells else None
    stored = run.operating_point
    if spec is None and target_sensitivity is None:
        point = replace(stored, refer_band=None, refer_target=None)
    else:
        point = choose_point(stored, spec, val, target_sensitivity, chosen_by)
        if stored.refer_band is not None and refer_error is None:
            notes.append(
                f"the run's refer band {stored.refer_band[0]:.4g}..{stored.refer_band[1]:.4g} was chosen around its "
                "old threshold and is dropped; choose a new one with --refer-error"
            )
    if refer_error is None:
        return point, None
    if val is None:
        raise BlastscopeError(
            f"{run.run_dir}: --refer-error chooses the refer band on the run's validation split, which is empty"
        )
    choice = choose_refer_band(val[0], probabilities(val[1], point.temperature), point, refer_error)
    target = refer_error if choice.band is not None else None
    return replace(point, refer_band=choice.band, refer_target=target), choice


def _check_unchanged(run: TrainedRun, cells: Sequence[Cell], part: str, fix: str) -> None:
    """Refuse cells of the run's split whose files hold other images now than split.csv recorded (a dataset redrawn
    or re-exported under the same names): their labels, and whether the run saw them, are the recorded images'.

    Raises ``DataError`` naming the first changed file, the count, and ``fix`` or training a new run.
    """
    changed = changed_cells(cells)
    if changed:
        raise DataError(
            f"{run.run_dir}: {len(changed)} of the {len(cells)} {part} cells its split.csv records hold other images "
            f"now, e.g. {changed[0].path} (redrawn or replaced under the same name); {fix}, or train a new run on them"
        )


def _move_to(model: Any, device: str) -> None:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)


def _check_neighbours(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise BlastscopeError(f"--transductive-neighbours must be a whole number of at least 1, not {k!r}")


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
