"""Facts about the machine that choose fast paths, and the C library's memory settings, without importing PyTorch."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LARGEST_MALLOPT_VALUE = 2**31 - 1  # mallopt takes a C int


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep large freed blocks for reuse instead of handing them back to the system at once.

    PyTorch's CPU tensors come from malloc. glibc serves each block above its mmap threshold (32 MiB at most by
    default; a batch of 32 EfficientNet activations at 448 px is 200 MB) with fresh pages from the system and returns
    them when the tensor is freed, so every batch page-faults its activations in again: a third of a CPU training
    run's time went to the kernel. Raising both thresholds to their largest values keeps the pages in the heap, at
    the cost of the process holding on to its peak memory (``malloc_trim`` still releases it on request; ``serve``
    does so after each request and is not switched). This is the glibc counterpart of the jemalloc/tcmalloc preload
    that PyTorch's CPU performance guide recommends.

    Returns
    -------
    bool
        Whether both settings took; False where the C library is not glibc.
    """
    mallopt = c_library_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    if mallopt is None:
        return False
    return all(mallopt(parameter, LARGEST_MALLOPT_VALUE) == 1 for parameter in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD))


def c_library_function(name: str, argtypes: list[type], restype: type) -> Callable[..., int] | None:
    """The process's C library function ``name`` (glibc's ``mallopt``, ``malloc_trim``) with its C signature, or
    ``None`` where the library has no such function. ctypes releases the GIL while it runs."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, restype
    return function
