"""What measuring cells costs beside the frozen backbone's pass, side by side in one run (one thread by default).

    python benchmarks/bench_measurements.py --data ../shared/data/cnmc-dev --cells 96

Times, per cell at the training input size (448 px, the default recipe's), on the same cells in the same process:
the frozen EfficientNet-Lite0 pass that phase 1 runs over every training and validation cell (its stages as folded
inference copies in bf16 where the CPU has bf16 units, as ``train`` runs them), ``CellMeasurements`` as it is (colour
read on a grid of about 160 px, :data:`blastscope.models.measurements.COLOUR_GRID_PX`), and the same with colour
read on every pixel (session 22's module). Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from blastscope.data.images import read_rgb
from blastscope.hardware import cpu_has_native_bf16, reuse_freed_memory
from blastscope.models import create_model
from blastscope.models import measurements as measurements_module
from blastscope.models.measurements import CellMeasurements
from blastscope.training.frozen import DTYPES, FrozenStages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of cells, e.g. ../shared/data/cnmc-dev")
    parser.add_argument("--cells", type=int, default=96)
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    paths = sorted(path for path in args.data.rglob("*") if path.suffix.lower() in (".webp", ".png", ".bmp"))
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, args.cells).astype(int)]
    rgb = torch.from_numpy(np.stack([np.asarray(read_rgb(path)) for path in paths])).permute(0, 3, 1, 2) / 255
    rgb = torch.nn.functional.interpolate(rgb, size=args.image_size, mode="bicubic", antialias=True).clamp(0, 1)
    model = create_model("efficientnet_lite0", pretrained="none", image_size=args.image_size).model.eval()
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"  # as train's frozen_stage_dtype on a CPU
    frozen = FrozenStages(DTYPES[dtype])
    frozen.follow(model.stages())
    measure = CellMeasurements()
    every_pixel = mock.patch.object(measurements_module, "colour_step", lambda height, width: 1)
    timed = {
        f"frozen Lite0 pass ({dtype})": lambda batch: model.forward_features((batch - 0.5) / 0.5),
        "CellMeasurements, colour on the ~160 px grid": measure,
        "CellMeasurements, colour on every pixel": lambda batch: _within(every_pixel, measure, batch),
    }
    seconds = {name: _per_cell(run, rgb, args.batch) for name, run in timed.items()}
    base = next(iter(seconds.values()))
    cpu = platform.processor() or platform.machine()
    print(f"{args.cells} cells of {args.data} at {args.image_size} px, {args.threads} thread(s), {cpu}")
    for name, value in seconds.items():
        print(f"  {name:46} {value * 1000:7.1f} ms/cell  {value / base:5.2f}x the backbone pass")
    frozen.release()
    return 0


def _within(patch: mock._patch, run: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    with patch:
        return run(batch)


@torch.inference_mode()
def _per_cell(run: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int) -> float:
    """Seconds per cell over every batch of ``images``, after one warm-up batch."""
    run(images[:batch])
    tick = time.perf_counter()
    for start in range(0, len(images), batch):
        run(images[start : start + batch])
    return (time.perf_counter() - tick) / len(images)


if __name__ == "__main__":
    raise SystemExit(main())
