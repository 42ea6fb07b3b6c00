"""The Python API: ``clf = blastscope.load("runs/...")``, then ``clf.predict(images)`` and ``clf.explain(image)``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from blastscope.api.classifier import Classifier
from blastscope.errors import BlastscopeError

Backend = Literal["auto", "torch", "onnx"]


def load(
    run_dir: str | Path, *, backend: Backend = "auto", variant: str | None = None, checkpoint: str = "best"
) -> Classifier:
    """A Classifier for a training run directory.

    ``backend="auto"`` predicts with ONNX Runtime when the run has been exported (``blastscope export``), using the
    variant export.json chose as default (or ``variant``), else with PyTorch. Grad-CAM always uses PyTorch.
    """
    from blastscope.export.onnx import OnnxModel, onnx_model_path
    from blastscope.runs.folder import load_run

    if backend not in ("auto", "torch", "onnx"):
        raise BlastscopeError(f"unknown backend {backend!r}; use auto, torch or onnx")
    trained = load_run(Path(run_dir), checkpoint=checkpoint)
    network = dict(
        model=trained.model,
        preprocessing=trained.preprocessing,
        classes=trained.classes,
        name=trained.display_name,
        transform=trained.transform,
        attribution=trained.config.get("attribution") or "",
    )
    path = None if backend == "torch" else onnx_model_path(trained.run_dir, variant)
    if path is None:
        if backend == "onnx":
            raise BlastscopeError(f"{run_dir}: no ONNX export; run `blastscope export {run_dir} --format onnx` first")
        return Classifier(**network)
    exported = OnnxModel(path)
    if exported.classes != tuple(trained.classes) or exported.preprocessing != trained.preprocessing:
        raise BlastscopeError(
            f"{path}: exported for other classes or preprocessing than the run; re-run `blastscope export {run_dir}`"
        )
    return Classifier(**network, runner=exported, backend=f"onnx ({exported.variant})")
