"""The variant builders on their own: int8 really is quantised, bf16 really stores bfloat16 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from blastscope.export.onnx import onnx_model_path
from blastscope.export.quantize import quantize_int8
from blastscope.inference.runners import ONNX_INPUT, OnnxRunner


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
