"""Inference throughput (images/s) of every backend blastscope can predict with, side by side in one run.

    python benchmarks/bench_inference.py                     # 224 px, efficientnet_lite0 + efficientnet_b0
    python benchmarks/bench_inference.py --image-size 128 --seconds 2

Backends: PyTorch eager fp32 as built (the baseline) and in channels-last, blastscope's PyTorch runner
(``TorchRunner``: channels-last, batch norms folded into the convolutions) in fp32 and in bf16 autocast, ONNX Runtime
fp32, ONNX Runtime int8 (static QDQ). `blastscope predict`/`serve` default to ONNX Runtime once a run is exported,
int8 only where `blastscope export`'s rule on the validation split allows it (blastscope.export.choice; else fp32).
Weights are random (no downloads): speed does not depend on their values. The int8 calibration here uses random
inputs, which sets scales but not the speed. Like blastscope's commands other than ``serve``, it keeps freed memory
for reuse (``blastscope.hardware.reuse_freed_memory``) unless ``--malloc-defaults``.
"""

from __future__ import annotations

import argparse
import copy
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
from blastscope.hardware import reuse_freed_memory
from blastscope.inference.precision import InferencePrecision
from blastscope.inference.runners import ONNX_INPUT, TorchRunner
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


def eager(model: torch.nn.Module, channels_last: bool = False) -> Callable[[np.ndarray], object]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).to(memory_format=layout)

    def run(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).contiguous(memory_format=layout))

    return run


def blastscope_runner(model: torch.nn.Module, precision: InferencePrecision) -> Callable[[np.ndarray], object]:
    runner = TorchRunner(copy.deepcopy(model), precision)  # it moves its model to channels-last
    return lambda batch: runner(torch.from_numpy(batch))


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
        "torch fp32 eager": eager(model),
        "torch fp32 channels-last": eager(model, channels_last=True),
        "torch fp32 TorchRunner": blastscope_runner(model, "fp32"),
        "torch bf16 TorchRunner": blastscope_runner(model, "bf16"),
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
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (blastscope's commands other than serve raise them)",
    )
    args = parser.parse_args()

    reused = not args.malloc_defaults and reuse_freed_memory()
    torch.set_num_threads(args.threads)
    print(f"CPU threads: {torch.get_num_threads()}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, freed memory reused: {'yes' if reused else 'no'}")
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
