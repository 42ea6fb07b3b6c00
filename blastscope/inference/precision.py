"""The precision policy of inference, named without importing PyTorch (the command line lists the choices)."""

from __future__ import annotations

from typing import Literal

InferencePrecision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")
"""``fp32`` (default everywhere, so every door gives the same numbers), ``bf16`` autocast, or ``auto``: bf16 where the
hardware has native bf16 matrix units (CPUs with AMX or AVX512-BF16, CUDA GPUs that support it), else fp32."""
