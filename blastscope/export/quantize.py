"""Smaller and faster variants of an exported fp32 ONNX model.

* int8: ONNX Runtime static quantisation in QDQ format, weights int8 per channel, activations uint8 with ranges
  calibrated on training cells (U8S8, the combination ONNX Runtime recommends for x86 CPUs).
* bf16: every float weight stored as bfloat16 and cast back to float32 inside the graph. The file is half the size and
  the logits carry bf16 weight rounding, but ONNX Runtime's CPU provider has no bfloat16 convolution kernels, so the
  arithmetic stays fp32 and it runs no faster than fp32. (PyTorch bf16 compute is measured by the benchmark.)
"""

from __future__ import annotations

import ast
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


NAME_SCOPES = "pkg.torch.onnx.name_scopes"
"""The node metadata in which torch's ONNX exporter records the module path a node was traced in."""


def nodes_within(model: onnx.ModelProto, modules: Iterable[str]) -> set[str]:
    """Names of the nodes of ``model`` traced inside any of ``modules`` (module paths such as ``measure``, read from
    the name scopes torch's dynamo exporter records) and of every node computed from their outputs."""
    modules = tuple(modules)
    found, reached = set(), set()
    for node in model.graph.node:  # in topological order, as ONNX requires
        scopes = next((ast.literal_eval(entry.value) for entry in node.metadata_props if entry.key == NAME_SCOPES), [])
        inside = any(scope == module or scope.startswith(module + ".") for scope in scopes for module in modules)
        if inside or reached.intersection(node.input):
            found.add(node.name)
            reached.update(node.output)
    return found


def quantize_int8(
    source: Path,
    target: Path,
    input_name: str,
    calibration: Iterable[np.ndarray],
    keep_float: Iterable[str] = (),
) -> Path:
    """Static QDQ int8 quantisation of ``source``, with activation ranges from the ``calibration`` batches.

    Parameters
    ----------
    source, target : Path
        The fp32 ONNX file and the int8 file to write (``source``'s metadata is not carried over).
    input_name : str
        The graph input the batches feed (``inference.runners.ONNX_INPUT`` for blastscope's exports).
    calibration : iterable of array
        Normalised float32 batches of shape (B, 3, S, S), as the model takes them.
    keep_float : iterable of str
        Module paths whose nodes, and every node computed from them, stay float32
        (:attr:`~blastscope.models.base.CellClassifier.float_modules`).

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
    excluded = sorted(nodes_within(onnx.load(str(source)), keep_float))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX's own shape inference: ONNX Runtime's symbolic one, meant for transformers, fails on a sort's TopK
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
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
                nodes_to_exclude=excluded,
            )
        finally:
            root.removeFilter(_not_a_per_tensor_fallback)
    if excluded:
        _read_unquantised(target, set(excluded))
    return target


def _read_unquantised(path: Path, nodes: set[str]) -> None:
    """Rewire ``nodes`` of the QDQ model at ``path`` to read the float tensors their quantised copies were made of:
    ONNX Runtime quantises a tensor (the graph input, say) once for all its consumers, excluded ones too."""
    model = onnx.load(str(path))
    made_by = {output: node for node in model.graph.node for output in node.output}
    original = {
        node.output[0]: made_by[node.input[0]].input[0]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and getattr(made_by.get(node.input[0]), "op_type", "") == "QuantizeLinear"
    }
    for node in model.graph.node:
        if node.name in nodes:
            node.input[:] = [original.get(name, name) for name in node.input]
    onnx.save(model, str(path))


def bf16_weights(source: Path, target: Path, keep_float: Iterable[str] = ()) -> Path:
    """A copy of ``source`` whose float weights are stored as bfloat16, each cast back to float32 where it is used.

    Parameters
    ----------
    source, target : Path
        The fp32 ONNX file and the file to write (about half the size; logits carry bf16 weight rounding).
    keep_float : iterable of str
        Module paths whose weights stay float32: any weight read by one of their nodes, or by a node computed from
        them, is left as it is.

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
    within = nodes_within(model, keep_float)
    exact = {name for node in graph.node if node.name in within for name in node.input}
    kept, stored, casts = [], [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name in exact:
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
