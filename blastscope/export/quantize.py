"""Smaller and faster variants of an exported fp32 ONNX model.

* int8: ONNX Runtime static quantisation in QDQ format, weights int8 per channel, activations uint8 with ranges
  calibrated on training cells (U8S8, the combination ONNX Runtime recommends for x86 CPUs).
* bf16: every float weight stored as bfloat16 and cast back to float32 inside the graph. The file is half the size and
  the logits carry bf16 weight rounding, but ONNX Runtime's CPU provider has no bfloat16 convolution kernels, so the
  arithmetic stays fp32 and it runs no faster than fp32. (PyTorch bf16 compute is measured by the benchmark.)
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

PER_TENSOR_FALLBACK = re.compile(r"Axis -?\d+ is out-of-range for weight '.+' with rank \d+")
"""ONNX Runtime's root-logger warning when a weight (a batch norm's rank-1 constant, say) cannot be quantised per
channel: it is then quantised per tensor, as it should be, so the line tells a user of ``export`` nothing."""


def _not_a_per_tensor_fallback(record: logging.LogRecord) -> bool:
    return not PER_TENSOR_FALLBACK.fullmatch(record.getMessage())


class _Batches(CalibrationDataReader):
    """Feeds calibration batches to ONNX Runtime's quantiser under the model's input name."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_int8(source: Path, target: Path, input_name: str, calibration: Iterable[np.ndarray]) -> Path:
    """Static QDQ int8 quantisation of ``source``, with activation ranges from the ``calibration`` batches.

    Parameters
    ----------
    source, target : Path
        The fp32 ONNX file and the int8 file to write (``source``'s metadata is not carried over).
    input_name : str
        The graph input the batches feed (``inference.runners.ONNX_INPUT`` for blastscope's exports).
    calibration : iterable of array
        Normalised float32 batches of shape (B, 3, S, S), as the model takes them.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    ValueError
        If ``calibration`` yields no batch.
    """
    calibration = list(calibration)
    if not calibration:
        raise ValueError("int8 quantisation needs at least one calibration batch")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        root = logging.getLogger()
        root.addFilter(_not_a_per_tensor_fallback)
        try:
            quantize_static(
                str(prepared),
                str(target),
                _Batches(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.removeFilter(_not_a_per_tensor_fallback)
    return target


def bf16_weights(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose float weights are stored as bfloat16, each cast back to float32 where it is used.

    Parameters
    ----------
    source, target : Path
        The fp32 ONNX file and the file to write (about half the size; logits carry bf16 weight rounding).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    onnx.checker.ValidationError
        If the rewritten graph is not valid ONNX.
    """
    model = onnx.load(str(source))
    graph = model.graph
    kept, stored, casts = [], [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            kept.append(tensor)
            continue
        weights = numpy_helper.to_array(tensor).astype(ml_dtypes.bfloat16)
        stored.append(numpy_helper.from_array(weights, name=f"{tensor.name}__bf16"))
        casts.append(helper.make_node("Cast", [f"{tensor.name}__bf16"], [tensor.name], to=TensorProto.FLOAT))
    graph.ClearField("initializer")
    graph.initializer.extend(kept + stored)
    nodes = casts + list(graph.node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target
