"""Facts about the machine that choose fast paths, read without importing PyTorch."""

from __future__ import annotations

from pathlib import Path


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 matrix instructions (Intel AMX-BF16 or AVX512-BF16, as on AMD EPYC Genoa).

    Without them bf16 arithmetic is emulated and slower than fp32. Reads ``/proc/cpuinfo``; ``False`` where it is
    missing (not Linux).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
