"""Fixtures of the data tests: files that are not what their image names say (pipes, device links, huge files)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from blastscope.data import reading

SMALL_LIMIT = 4096  # bytes: "too large" files cost nothing to make under this limit


@pytest.fixture
def small_file_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """The byte limit lowered to :data:`SMALL_LIMIT` for one test."""
    monkeypatch.setattr(reading, "MAX_FILE_BYTES", SMALL_LIMIT)
    monkeypatch.delenv(reading.MAX_FILE_BYTES_ENV, raising=False)
    return SMALL_LIMIT


@pytest.fixture
def special_files(small_file_limit: int) -> Callable[[Path], dict[Path, str]]:
    """``special_files(folder)`` makes there a named pipe, a link to ``/dev/zero`` and a sparse file one byte over the
    (lowered) byte limit that starts with a valid PNG, all with image names; it returns each path with the start of
    the reason it must be skipped for."""

    def make(folder: Path) -> dict[Path, str]:
        folder.mkdir(parents=True, exist_ok=True)
        os.mkfifo(folder / "pipe.png")
        (folder / "zero.png").symlink_to("/dev/zero")
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, "PNG")
        with (folder / "sparse.png").open("wb") as handle:
            handle.write(buffer.getvalue())
            handle.truncate(small_file_limit + 1)
        return {
            folder / "pipe.png": "not a regular file (named pipe)",
            folder / "zero.png": "not a regular file (character device, reached by a link to /dev/zero)",
            folder / "sparse.png": f"{small_file_limit + 1:,} bytes, over the limit of {small_file_limit:,} bytes",
        }

    return make


@pytest.fixture
def returns_within() -> Callable[..., Any]:
    """``returns_within(seconds, function, *args)``: the call's result, or a test failure (not a hung suite) when it
    has not returned after ``seconds`` (a reader blocked on a named pipe)."""

    def call_within(seconds: float, function: Callable[..., Any], *args: Any) -> Any:
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = function(*args)
            except BaseException as error:  # raised again in the test's own thread
                outcome["error"] = error

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(seconds)
        assert not thread.is_alive(), f"{function.__name__} still running after {seconds} s (blocked on a pipe?)"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return call_within
