"""Fixtures shared by the whole suite: the real C-NMC cells in ../shared and small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the decoded-image cache of the tests out of the user's cache dir."""
    os.environ["BLASTSCOPE_CACHE"] = str(tmp_path_factory.mktemp("decoded-cache"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        message = f"{path} is missing: integration tests read the C-NMC cells from ../shared/data"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cnmc_dev() -> Path:
    """6,403 files of real C-NMC 2019 cells (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA)."""
    return _shared("cnmc-dev")


@pytest.fixture(scope="session")
def cnmc_sample() -> Path:
    """The 52-cell C-NMC sample: 2 cells from each of 26 subjects."""
    return _shared("cnmc-sample")


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic C-NMC-layout dataset: 6 subjects per class, 8 cells each, 64x64 pixels."""
    from blastscope.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth-small")
    synthesize(out, subjects_per_class=6, cells_per_subject=8, image_size=64, seed=0)
    return out
