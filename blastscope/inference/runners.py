"""Runners: one interface from a normalised image batch to logits, whatever executes the network.

A runner takes a float32 NCHW batch (already resized and normalised by the model's ``Preprocessing``) and returns
float32 logits of shape (N, C) on the CPU. :class:`TorchRunner` runs a PyTorch network under one precision policy;
:class:`OnnxRunner` runs an exported file in ONNX Runtime. Another runtime is one more class with ``name`` and
``__call__``: batching, test-time augmentation, probabilities and the decision stay shared.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.hardware import cpu_has_native_bf16
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.precision import PRECISIONS, InferencePrecision
from blastscope.models.folding import fold_batch_norms

ONNX_INPUT = "image"
ONNX_OUTPUT = "logits"
METADATA_PREFIX = "blastscope."


class Runner(Protocol):
    """Logits (N, C) float32 on the CPU from a normalised float32 NCHW batch."""

    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


def autocast_dtype(precision: InferencePrecision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device``, or ``None`` for plain fp32.

    Raises ``BlastscopeError`` for an unknown precision.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise BlastscopeError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


class TorchRunner:
    """A PyTorch network in eval mode, without autograd, in channels-last memory format (faster convolutions), its
    batch norms folded into the convolutions before them (:func:`~blastscope.models.folding.fold_batch_norms`).

    Folding is exact up to float rounding and runs EfficientNet-Lite0 about 1.3x faster in fp32 on a CPU
    (benchmarks/RESULTS.md, "Inference speed"). The folded copy (a second set of weights in memory) is built on the
    first batch, whose first image checks it; the model passed in is left as it was.

    Parameters
    ----------
    model : nn.Module
        Maps a normalised NCHW batch to logits (N, C).
    precision : {"fp32", "bf16", "auto"}
        The one precision policy of inference: fp32 unless asked otherwise (see ``PRECISIONS``).
    """

    def __init__(self, model: nn.Module, precision: InferencePrecision = "fp32") -> None:
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.device = next(model.parameters()).device
        self.dtype = autocast_dtype(precision, self.device)
        self.name = f"torch ({'bf16' if self.dtype is torch.bfloat16 else 'fp32'}, {self.device.type})"
        self._folded: nn.Module | None = None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        images = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        if self._folded is None:  # in fp32 and outside inference mode: its weights outlive this call
            self._folded = fold_batch_norms(self.model, (images[:1].float(),))
        autocast = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()
        with torch.inference_mode(), autocast:
            return self._folded(images).float().cpu()


class OnnxRunner:
    """An exported model in an ONNX Runtime CPU session, with what its file's metadata says about it.

    Attributes
    ----------
    classes : tuple of str
    preprocessing : Preprocessing
    variant : str
        ``fp32``, ``int8`` or ``bf16``.
    operating_point : OperatingPoint or None
        The run's operating point when the file was written (files exported before it existed carry none).

    Raises
    ------
    BlastscopeError
        If the file is not a loadable ONNX model or lacks blastscope metadata.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own untyped errors for unreadable files
            raise BlastscopeError(
                f"{self.path}: not a loadable ONNX model ({error}); re-run `blastscope export`"
            ) from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if f"{METADATA_PREFIX}classes" not in metadata:
            raise BlastscopeError(f"{self.path}: carries no blastscope metadata; export it with `blastscope export`")
        try:
            self.classes: tuple[str, ...] = tuple(json.loads(metadata[f"{METADATA_PREFIX}classes"]))
            self.preprocessing = Preprocessing.from_dict(json.loads(metadata[f"{METADATA_PREFIX}preprocessing"]))
            point = metadata.get(f"{METADATA_PREFIX}operating_point")
            self.operating_point = OperatingPoint.from_dict(json.loads(point)) if point else None
        except (KeyError, TypeError, ValueError, BlastscopeError) as error:  # JSONDecodeError is a ValueError
            raise BlastscopeError(
                f"{self.path}: incomplete or corrupt blastscope metadata ({type(error).__name__}: {error}); "
                "re-run `blastscope export`"
            ) from None
        self.variant = metadata.get(f"{METADATA_PREFIX}variant", "fp32")
        self.name = f"onnx ({self.variant})"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run([ONNX_OUTPUT], {ONNX_INPUT: array})[0])
