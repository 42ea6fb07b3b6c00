"""The C library's memory settings: large freed blocks are reused instead of faulted in again from the system."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from blastscope.hardware import reuse_freed_memory

BLOCK = 64 * 2**20  # bytes: above glibc's largest default mmap threshold (32 MiB)
PAGE = resource.getpagesize()


def _page_faults_of_three_blocks() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        np.ones(BLOCK, dtype=np.uint8)  # allocated, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_blocks_are_reused_without_faulting_their_pages_in_again() -> None:
    assert reuse_freed_memory()
    np.ones(BLOCK, dtype=np.uint8)  # the heap grows to hold one block once
    assert _page_faults_of_three_blocks() < BLOCK // PAGE // 64  # fresh mappings: thousands
