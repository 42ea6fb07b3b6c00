"""ONNX export of a trained run: self-describing model files, checked against PyTorch on the run's own test cells.

Every file carries what a consumer needs to feed it (input size, mean/std, interpolation) and to read its output
(class names, positive class last) as ONNX ``metadata_props`` under ``blastscope.*`` keys. ``export/export.json``
records the parity check, each variant's weighted F1 beside fp32 on the validation and test splits, and the variant
``predict`` and ``serve`` use by default: the fastest one whose validation F1 stays within ``F1_TOLERANCE`` of fp32.
The default is chosen on validation so that the test split stays unseen; its test F1 is recorded for information.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stdout
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from blastscope import __version__
from blastscope.api.classifier import Transform, cell_batches, probabilities, torch_runner
from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError, DataError
from blastscope.export.quantize import bf16_weights, quantize_int8
from blastscope.models.base import CellClassifier

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXPORT_DIR = "export"
RECORD_NAME = "export.json"
PARITY_TOLERANCE = 1e-4
F1_TOLERANCE = 0.005
PARITY_CELLS = 32
CALIBRATION_CELLS = 64
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "bf16": "model_bf16.onnx"}
DEFAULT_PREFERENCE = ("int8", "fp32")
"""Fastest first; bf16 is never the default because ONNX Runtime's CPU provider computes it in fp32 anyway."""
VARIANT_NOTES = {
    "fp32": "float32 weights and compute",
    "int8": "static QDQ quantisation: int8 per-channel weights, uint8 activations calibrated on training cells",
    "bf16": "bfloat16-stored weights cast to float32 in the graph; ONNX Runtime CPU computes in fp32",
}


class OnnxModel:
    """An exported model in an ONNX Runtime CPU session, with the preprocessing and classes its file carries."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own untyped errors for unreadable files
            raise BlastscopeError(
                f"{self.path}: not a loadable ONNX model ({error}); re-run `blastscope export`"
            ) from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "blastscope.classes" not in metadata:
            raise BlastscopeError(f"{self.path}: carries no blastscope metadata; export it with `blastscope export`")
        try:
            self.classes: tuple[str, ...] = tuple(json.loads(metadata["blastscope.classes"]))
            self.preprocessing = Preprocessing.from_dict(json.loads(metadata["blastscope.preprocessing"]))
        except (KeyError, TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
            raise BlastscopeError(
                f"{self.path}: incomplete or corrupt blastscope metadata ({type(error).__name__}: {error}); "
                "re-run `blastscope export`"
            ) from None
        self.variant = metadata.get("blastscope.variant", "fp32")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])


def model_metadata(pre: Preprocessing, classes: Sequence[str], model_name: str, variant: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: everything needed to preprocess its input and name its output."""
    return {
        "blastscope.classes": json.dumps(list(classes)),
        "blastscope.positive_class": classes[-1],
        "blastscope.preprocessing": json.dumps(pre.to_dict()),
        "blastscope.input": (
            f"float32 NCHW RGB, {pre.input_size}x{pre.input_size} ({pre.interpolation} resize), "
            "scaled to [0, 1], then (x - mean) / std per channel"
        ),
        "blastscope.output": "logits (N, C) in blastscope.classes order; softmax gives probabilities",
        "blastscope.model": model_name,
        "blastscope.variant": variant,
        "blastscope.version": __version__,
    }


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def export_onnx(model: CellClassifier, pre: Preprocessing, path: Path) -> Path:
    """Traces ``model`` to ONNX with torch.export (dynamo), batch axis dynamic, weights inline."""
    example = torch.zeros(2, 3, pre.input_size, pre.input_size)
    batch = torch.export.Dim("batch", min=1)
    # The exporter prints progress lines and warns about internals; neither helps the user of `blastscope export`.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            optimize=True,
            external_data=False,
            verbose=False,
        )
    return path


def max_logit_difference(model: CellClassifier, exported: OnnxModel, batches: Iterator[torch.Tensor]) -> float:
    """The largest absolute difference between PyTorch's and ONNX Runtime's logits over the given batches."""
    run_torch = torch_runner(model)
    return max(float((run_torch(batch) - exported(batch)).abs().max()) for batch in batches)


def weighted_f1(
    runner: Callable[[torch.Tensor], torch.Tensor],
    cells: Sequence[Any],
    pre: Preprocessing,
    transform: Transform,
    classes: Sequence[str],
) -> float:
    """The C-NMC challenge metric of ``runner`` on ``cells`` (``metrics.weighted_f1``)."""
    from blastscope.metrics import weighted_f1 as score

    y_prob = np.concatenate([probabilities(runner, batch) for batch in cell_batches(cells, pre, transform)])
    y_true = np.array([classes.index(cell.label) for cell in cells])
    return score(y_true, y_prob)


def export_run(
    trained: Any, *, int8: bool = False, bf16: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Exports a loaded run (``load_run``) to RUN_DIR/export: fp32, optional int8/bf16, parity check, export.json."""
    test_cells = list(trained.split.parts.get("test", []))
    if not test_cells:
        raise DataError(f"{trained.run_dir}: the run's split has no test cells to check the export against")
    calibration = list(trained.split.parts.get("train", []))[:CALIBRATION_CELLS]
    if int8 and not calibration:
        raise DataError(f"{trained.run_dir}: the run's split has no training cells to calibrate int8 on")
    out = Path(trained.run_dir) / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for stale in (*out.glob("model*.onnx"), out / RECORD_NAME):
        stale.unlink(missing_ok=True)  # export.json goes with the models: it must never point at deleted files
    try:
        record = _build(trained, out, test_cells, calibration, int8=int8, bf16=bf16, log=log)
    except BaseException:
        for built in out.glob("model*.onnx"):
            built.unlink(missing_ok=True)  # nor may a half-built or unfaithful model be left for `predict` to find
        raise
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")  # last: it exists only for a whole export
    return record


def _build(
    trained: Any,
    out: Path,
    test_cells: list[Any],
    calibration: list[Any],
    *,
    int8: bool,
    bf16: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every variant's file in ``out``, checked and scored; the record that export.json will hold."""
    pre, transform = trained.preprocessing, trained.transform
    metadata = partial(model_metadata, pre, trained.classes, _model_name(trained))
    built = {"fp32": export_onnx(trained.model, pre, out / VARIANT_FILES["fp32"])}
    set_metadata(built["fp32"], metadata("fp32"))
    parity_cells = test_cells[:PARITY_CELLS]
    batches = cell_batches(parity_cells, pre, transform)
    difference = max_logit_difference(trained.model, OnnxModel(built["fp32"]), batches)
    log(f"parity: max |logit(PyTorch) - logit(ONNX)| = {difference:.2e} on {len(parity_cells)} test cells")
    if not difference < PARITY_TOLERANCE:
        raise BlastscopeError(
            f"{built['fp32']}: ONNX logits differ from PyTorch by {difference:.2e} (> {PARITY_TOLERANCE:g}); "
            "the export is not faithful, keep using --backend torch"
        )
    if int8:
        batches = (batch.numpy() for batch in cell_batches(calibration, pre, transform, batch_size=16))
        built["int8"] = quantize_int8(built["fp32"], out / VARIANT_FILES["int8"], INPUT_NAME, batches)
    if bf16:
        built["bf16"] = bf16_weights(built["fp32"], out / VARIANT_FILES["bf16"])
    for variant, path in built.items():
        if variant != "fp32":
            set_metadata(path, metadata(variant))

    val_cells = list(trained.split.parts.get("val", []))
    chosen_on = "val" if val_cells else "test"  # a run without validation cells can only be judged on test
    sessions = {variant: OnnxModel(path) for variant, path in built.items()}
    scores = {
        split: {
            variant: weighted_f1(session, cells, pre, transform, trained.classes)
            for variant, session in sessions.items()
        }
        for split, cells in (("val", val_cells), ("test", test_cells))
        if cells
    }
    record = {
        "model": _model_name(trained),
        "display_name": trained.display_name,
        "classes": list(trained.classes),
        "preprocessing": pre.to_dict(),
        "parity": {"cells": len(parity_cells), "max_abs_logit_difference": difference, "tolerance": PARITY_TOLERANCE},
        "val_cells": len(val_cells),
        "test_cells": len(test_cells),
        "calibration_cells": len(calibration) if int8 else 0,
        "f1_tolerance": F1_TOLERANCE,
        "default_chosen_on": chosen_on,
        "variants": {variant: _variant_record(variant, path, scores, chosen_on) for variant, path in built.items()},
    }
    record["default"] = next(
        variant for variant in DEFAULT_PREFERENCE if record["variants"].get(variant, {}).get("within_tolerance")
    )
    return record


def _variant_record(variant: str, path: Path, scores: dict[str, dict[str, float]], chosen_on: str) -> dict[str, Any]:
    record: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
    for split in ("val", "test"):
        if split in scores:
            record[f"{split}_weighted_f1"] = scores[split][variant]
            record[f"{split}_f1_minus_fp32"] = scores[split][variant] - scores[split]["fp32"]
    record["within_tolerance"] = abs(record[f"{chosen_on}_f1_minus_fp32"]) <= F1_TOLERANCE
    record["notes"] = VARIANT_NOTES[variant]
    return record


def onnx_model_path(run_dir: Path, variant: str | None = None) -> Path | None:
    """The exported file to predict with: ``variant``, else export.json's default; ``None`` when nothing is exported."""
    out = Path(run_dir) / EXPORT_DIR
    record_path = out / RECORD_NAME
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            chosen = variant or record["default"]
            variants = record["variants"]
            if chosen not in variants:
                raise BlastscopeError(
                    f"{record_path}: no {chosen!r} variant (exported: {', '.join(variants)}); "
                    f"run `blastscope export {run_dir} --format onnx` with the matching option"
                )
            return out / variants[chosen]["file"]
        except (OSError, KeyError, TypeError, ValueError) as error:  # JSONDecodeError and UnicodeError included
            raise BlastscopeError(
                f"{record_path}: unreadable or corrupt ({type(error).__name__}: {error}); "
                f"re-run `blastscope export {run_dir} --format onnx`"
            ) from None
    if variant not in (None, "fp32"):
        raise BlastscopeError(
            f"{out}: no export.json listing variants; run `blastscope export {run_dir} --format onnx`"
        )
    fp32 = out / VARIANT_FILES["fp32"]
    return fp32 if fp32.is_file() else None


def _model_name(trained: Any) -> str:
    return str(trained.config.get("model", "unknown"))
