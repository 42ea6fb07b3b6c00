"""The Python API: ``clf = blastscope.load("runs/...")``, then ``clf.predict(images)``, ``clf.explain(image)`` and
``clf.scan(photograph)``."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

from blastscope.api.classifier import Classifier, Prediction
from blastscope.data.preprocessing import (
    check_red_cell_diameter,
    check_segment_mode,
    scale_override_line,
    segment_override_line,
)
from blastscope.errors import BlastscopeError
from blastscope.export.onnx import onnx_model_path
from blastscope.inference.precision import InferencePrecision
from blastscope.inference.runners import OnnxRunner
from blastscope.runs import load_run
from blastscope.runs.trained import temperature_warnings, unfinished_warnings
from blastscope.workflows.scan import ImageScan

__all__ = ["Classifier", "ImageScan", "Prediction", "load"]

Backend = Literal["auto", "torch", "onnx"]
log = logging.getLogger(__name__)


def load(
    run_dir: str | Path,
    *,
    backend: Backend = "auto",
    variant: str | None = None,
    checkpoint: str = "best",
    threshold: float | None = None,
    precision: InferencePrecision = "fp32",
    segment: str | None = None,
    red_cell_diameter: float | None = None,
    threshold_by: str = "load(threshold=...)",
) -> Classifier:
    """A Classifier for a training run directory, deciding at the run's stored operating point.

    Parameters
    ----------
    run_dir : path
        A folder made by ``blastscope train``.
    backend : {"auto", "torch", "onnx"}
        ``auto`` predicts with ONNX Runtime when the run has been exported (``blastscope export``), using the variant
        export.json chose as default (or ``variant``), else with PyTorch. Grad-CAM always uses PyTorch.
    checkpoint : str
        ``best``, ``last`` or a path to a checkpoint file.
    threshold : float, optional
        Replaces the run's stored threshold for this classifier (``source: given``); a number in [0, 1] (a bool is
        refused, not read as 0 or 1); refused for a multi-class run, which decides by the most probable class.
    precision : {"fp32", "bf16", "auto"}
        The PyTorch backend's precision; fp32 (the default) matches ``blastscope evaluate`` and the ONNX export.
    segment : {"auto", "always", "never"}, optional
        Replaces the run's recorded ``--segment`` mode for this classifier, with a warning when it differs; default:
        the run's own, so images are prepared as its training cells were.
    red_cell_diameter : float, optional
        Replaces the run's recorded red-cell diameter (px of the input images; the run's None measures it on each
        image) that cells are cut out at, with a warning when it differs.
    threshold_by : str
        Who gave ``threshold``, as every prediction's ``decided_by`` credits it and a refusal names it: a command
        passes its own option (``predict --threshold``).

    Raises
    ------
    BlastscopeError
        For an unknown backend or segment mode, a ``variant`` with ``backend="torch"``, an unusable red-cell
        diameter, a threshold that is not a number in [0, 1] or is given for a multi-class run, a run without an
        export when ``backend="onnx"``, or an export made for other classes or preprocessing.
    TypeError
        When ``run_dir`` is not a path.
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be the path of a run folder (runs/...), got {type(run_dir).__name__}")
    if backend not in ("auto", "torch", "onnx"):
        raise BlastscopeError(f"unknown backend {backend!r}; use auto, torch or onnx")
    if backend == "torch" and variant is not None:  # else the PyTorch network would answer for the variant asked
        raise BlastscopeError(
            f"variant {variant!r} names an ONNX export, which backend 'torch' does not run; drop the variant, or use "
            "backend 'onnx' or 'auto'"
        )
    if segment is not None:
        check_segment_mode(segment)
    check_red_cell_diameter(red_cell_diameter)
    trained = load_run(Path(run_dir), checkpoint=checkpoint)
    point = trained.operating_point
    if threshold is not None:
        point = point.with_threshold(threshold, threshold_by, trained.run_dir)
    runner = trained.runner(precision)
    path = None if backend == "torch" else onnx_model_path(trained.run_dir, variant)
    if path is not None:
        runner = OnnxRunner(path)
        if runner.classes != trained.classes or runner.preprocessing != trained.preprocessing:
            raise BlastscopeError(
                f"{path}: exported for other classes or preprocessing than the run; "
                f"re-run `blastscope export {run_dir}`"
            )
        if runner.operating_point is not None and runner.operating_point != trained.operating_point:
            log.warning(
                "%s: the file's metadata holds an older operating point; deciding at the run's current one (%s). "
                "Re-run `blastscope export` to update the file.",
                path,
                trained.operating_point.describe(),
            )
    elif backend == "onnx":
        raise BlastscopeError(f"{run_dir}: no ONNX export; run `blastscope export {run_dir} --format onnx` first")
    preprocessing = trained.preprocessing
    if segment is not None:
        if line := segment_override_line(preprocessing.segment, segment):
            log.warning("%s", line)
        preprocessing = replace(preprocessing, segment=segment)
    if red_cell_diameter is not None:
        if line := scale_override_line(preprocessing.red_cell_diameter, red_cell_diameter):
            log.warning("%s", line)
        preprocessing = replace(preprocessing, red_cell_diameter=red_cell_diameter)
    return Classifier(
        runner,
        trained.model,
        preprocessing,
        point,
        transform=trained.transform,
        name=trained.display_name,
        attribution=trained.attribution,
        warnings=unfinished_warnings(trained.run_dir, trained.config) + temperature_warnings(trained.config, point),
    )
