"""Inference throughput (images/s) of every backend blastscope can predict with, side by side in one run.

    python benchmarks/bench_inference.py                     # 224 px, efficientnet_lite0 + efficientnet_b0
    python benchmarks/bench_inference.py --image-size 128 --seconds 2

Backends: PyTorch eager fp32, PyTorch bf16 autocast + channels_last, ONNX Runtime fp32, ONNX Runtime int8 (static
QDQ). `blastscope predict`/`serve` default to ONNX Runtime once a run is exported, int8 only where `blastscope export`'s
rule on the validation split allows it (blastscope.export.choice; else fp32). Weights are random (no downloads): speed
does not depend on their values. The int8 calibration here uses random inputs, which sets scales but not the speed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from blastscope.export.onnx import export_onnx
from blastscope.export.quantize import quantize_int8
from blastscope.inference.runners import ONNX_INPUT
from blastscope.models import create_model


def throughput(run: Callable[[np.ndarray], object], batch: np.ndarray, seconds: float) -> float:
    """Images per second over at least ``seconds`` (and 3 calls), after 2 warm-up calls."""
    for _ in range(2):
        run(batch)
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        run(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def torch_runner(model: torch.nn.Module, bf16: bool) -> Callable[[np.ndarray], object]:
    if bf16:
        model = model.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> object:
        images = torch.from_numpy(batch)
        if bf16:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(images)

    return run


def onnx_runner(path: Path, threads: int) -> Callable[[np.ndarray], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {ONNX_INPUT: batch})


def runners(name: str, image_size: int, workdir: Path, threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    bundle = create_model(name, pretrained="none", image_size=image_size)
    model, pre = bundle.model.eval(), bundle.preprocessing
    fp32 = export_onnx(model, pre, workdir / f"{name}.onnx")
    rng = np.random.default_rng(0)
    calibration = [rng.normal(size=(8, 3, pre.input_size, pre.input_size)).astype(np.float32) for _ in range(4)]
    int8 = quantize_int8(fp32, workdir / f"{name}_int8.onnx", ONNX_INPUT, calibration)
    return {
        "torch fp32": torch_runner(model, bf16=False),
        "torch bf16+channels_last": torch_runner(model, bf16=True),
        "onnxruntime fp32": onnx_runner(fp32, threads),
        "onnxruntime int8": onnx_runner(int8, threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "efficientnet_b0"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell of the table")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads of both runtimes (default: all cores; on a CPU shared with other jobs, fewer threads "
        "avoid PyTorch's OpenMP threads spinning against each other)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"CPU threads: {torch.get_num_threads()}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"image size {args.image_size} px; images/s (higher is better)\n")
    header = f"{'model':20s} {'backend':26s}" + "".join(f"{f'batch {b}':>12s}" for b in args.batch_sizes)
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for backend, run in runners(name, args.image_size, Path(tmp), args.threads).items():
                rates = []
                for size in args.batch_sizes:
                    batch = np.random.default_rng(1).normal(size=(size, 3, args.image_size, args.image_size))
                    rates.append(throughput(run, batch.astype(np.float32), args.seconds))
                print(f"{name:20s} {backend:26s}" + "".join(f"{rate:12.1f}" for rate in rates), flush=True)


if __name__ == "__main__":
    main()
