"""The ``start_server`` fixture (tests/serving/conftest.py) fails a test with the server's own error when it exits or
does not answer /health in time, and stops the server however the test ends. A stand-in for `python -m blastscope`
plays the server, so these take a second rather than a torch import."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

STAND_IN = """\
import http.server, sys, time

run, port = sys.argv[4], int(sys.argv[sys.argv.index("--port") + 1])  # -m blastscope serve RUN --port PORT
if run == "exits":
    sys.exit("blastscope: error: exits: no config.yaml, so not a training run")
if run == "hangs":
    time.sleep(60)


class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", port), Healthy).serve_forever()
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sys.executable`` becomes a script that acts by its run's name: ``exits``, ``hangs``, or answers every GET."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))


def test_a_server_that_exits_fails_the_test_with_its_error(
    stand_in: None, start_server: Callable[..., AbstractContextManager[Any]]
) -> None:
    with pytest.raises(pytest.fail.Exception) as failure, start_server(Path("exits")):
        pass
    assert "`blastscope serve exits --port " in str(failure.value)
    assert "exited with status 1 before answering /health" in str(failure.value)
    assert "blastscope: error: exits: no config.yaml" in str(failure.value)


def test_a_server_that_never_answers_is_killed_at_the_timeout(
    stand_in: None, start_server: Callable[..., AbstractContextManager[Any]]
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(pytest.fail.Exception, match=r"did not answer /health within 1 s"),
        start_server(Path("hangs"), timeout_s=1),
    ):
        pass
    assert time.monotonic() - started < 10


def test_the_server_is_stopped_when_the_test_fails(
    stand_in: None, start_server: Callable[..., AbstractContextManager[Any]]
) -> None:
    with pytest.raises(AssertionError), start_server(Path("answers")) as server:
        process = server.process
        assert process.poll() is None
        raise AssertionError("the test's own failure")
    assert process.poll() is not None
