"""``blastscope cache info`` and ``clean`` report on the cache that $BLASTSCOPE_CACHE points at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.cli import cache as cache_cli
from blastscope.cli import main
from blastscope.data import cache as cache_module
from blastscope.data.cache import DecodedCache


def test_info_then_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLASTSCOPE_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "cell.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    DecodedCache().load(image, "ab" * 16, 32, "bilinear")

    assert main(["cache", "info"]) == 0
    info = capsys.readouterr().out
    assert f"location: {tmp_path / 'cache' / 'decoded'}" in info
    assert "entries:  1" in info and "KiB" in info

    assert main(["cache", "clean"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert main(["cache", "info"]) == 0
    assert "entries:  0" in capsys.readouterr().out


def test_help_names_the_cache_variable_without_importing_the_cache() -> None:
    assert cache_cli.CACHE_ENV == cache_module.CACHE_ENV
