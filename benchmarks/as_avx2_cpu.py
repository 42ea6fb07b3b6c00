"""Run a ``blastscope`` command as on a CPU without bf16 units, on a CPU that has them (AMX or AVX512-BF16).

    python benchmarks/as_avx2_cpu.py train --data ../shared/data/cnmc-dev --no-progress

It holds PyTorch's own kernels and oneDNN's convolutions to AVX2 code (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``, set before PyTorch loads) and turns off blastscope's bf16 detection, so training and
inference take the fp32 paths an AVX2-only CPU takes. It times those paths on one machine beside its native ones
(benchmarks/RESULTS.md, "The default `train` recipe"); the clock and memory of a real AVX2-only CPU still differ.
"""

from __future__ import annotations

import os
import sys

import blastscope.hardware

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
blastscope.hardware.cpu_has_native_bf16 = lambda: False  # before anything imports it by name

from blastscope.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
