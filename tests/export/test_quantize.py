"""The variant builders on their own: int8 really is quantised, bf16 really stores bfloat16 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from blastscope.export.onnx import export_onnx, onnx_model_path
from blastscope.export.quantize import bf16_weights, nodes_within, quantize_int8
from blastscope.inference.runners import ONNX_INPUT, OnnxRunner
from blastscope.models import create_model


def test_int8_model_is_qdq_quantised(exported_run: Path) -> None:
    model = onnx.load(str(onnx_model_path(exported_run, "int8")))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == TensorProto.INT8 for t in model.graph.initializer)


def test_bf16_model_stores_bfloat16_and_stays_close(exported_run: Path) -> None:
    model = onnx.load(str(onnx_model_path(exported_run, "bf16")))
    kinds = {t.data_type for t in model.graph.initializer}
    assert TensorProto.BFLOAT16 in kinds and TensorProto.FLOAT not in kinds
    fp32, bf16 = OnnxRunner(onnx_model_path(exported_run, "fp32")), OnnxRunner(onnx_model_path(exported_run, "bf16"))
    size = fp32.preprocessing.input_size
    batch = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 3, size, size)).astype(np.float32))
    reference, rounded = fp32(batch), bf16(batch)
    assert not torch.equal(reference, rounded)  # the weights really were rounded
    torch.testing.assert_close(rounded, reference, atol=0.05 * float(reference.abs().max()) + 1e-3, rtol=0)


def test_int8_needs_calibration_batches(exported_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_int8(onnx_model_path(exported_run, "fp32"), tmp_path / "int8.onnx", ONNX_INPUT, iter(()))


@pytest.fixture(scope="module")
def measured_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, ...]]:
    """efficientnet_lite0_measured (random weights, 64 px) exported to ONNX, with the modules it keeps in float."""
    bundle = create_model("efficientnet_lite0_measured", pretrained="none", image_size=64)
    path = export_onnx(bundle.model, bundle.preprocessing, tmp_path_factory.mktemp("measured") / "model.onnx")
    return path, bundle.model.float_modules


def test_the_measurements_stay_float_in_int8_and_bf16_exports(
    measured_onnx: tuple[Path, tuple[str, ...]], tmp_path: Path
) -> None:
    """A cell's area (10^5 px) in 8 bits, or the colour matrices in bf16, would shift every measurement."""
    source, keep = measured_onnx
    exported = onnx.load(str(source))
    graph, within = exported.graph, nodes_within(exported, keep)
    assert {"TopK", "Conv", "MatMul"} <= {node.op_type for node in graph.node if node.name in within}
    assert not nodes_within(exported, ("no.such.module",))
    images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 64, 64)).astype(np.float32)
    int8 = onnx.load(str(quantize_int8(source, tmp_path / "int8.onnx", ONNX_INPUT, [images], keep)))
    quantised_inputs = {name for node in int8.graph.node if node.op_type == "DequantizeLinear" for name in node.output}
    measuring = [node for node in int8.graph.node if node.name in within]
    assert measuring and not any(set(node.input) & quantised_inputs for node in measuring)
    bf16 = onnx.load(str(bf16_weights(source, tmp_path / "bf16.onnx", keep)))
    read_by_measurements = {name for node in graph.node if node.name in within for name in node.input}
    stored = {tensor.name: tensor.data_type for tensor in bf16.graph.initializer}
    assert any(stored.get(name) == TensorProto.FLOAT for name in read_by_measurements)
    assert not any(stored.get(name) == TensorProto.BFLOAT16 for name in read_by_measurements)
