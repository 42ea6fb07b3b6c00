"""Fixtures shared by the serving tests that start `blastscope serve` in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()`` is a loopback port nothing listens on now, for a server started by the test; a callable, so
    module-scoped server fixtures can use it."""

    def pick() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    return pick


@dataclass(frozen=True)
class Server:
    """A `blastscope serve` subprocess that answered /health."""

    url: str
    port: int
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def start_server(free_port: Callable[[], int]) -> Callable[..., AbstractContextManager[Server]]:
    """``with start_server(run, *options, timeout_s=90) as server:`` runs `blastscope serve run *options` on a free
    loopback port until /health answers 200, and stops it when the block ends, however it ends; a callable, so
    module-scoped fixtures can share one server.

    Its output goes to a file, not a pipe nobody reads (a pipe fills with uvicorn's access log and blocks the server);
    the test fails with the file's last lines (tracebacks and errors are on stderr) if the server exits or does not
    answer within ``timeout_s``. ``OMP_NUM_THREADS=1`` as for the test process (see ``_one_thread``), unbuffered so a
    killed server's last words are in the file.
    """

    @contextmanager
    def start(run: Path, *options: str, timeout_s: float = 90) -> Iterator[Server]:
        port = free_port()
        command = [sys.executable, "-m", "blastscope", "serve", str(run), "--port", str(port), *options]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
            try:
                deadline = time.monotonic() + timeout_s
                while process.poll() is None:
                    try:
                        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        process.kill()
                        process.wait(timeout=15)
                        pytest.fail(
                            f"`{' '.join(command[2:])}` did not answer /health within {timeout_s:g} s; "
                            f"its output:\n{_tail(output)}"
                        )
                    time.sleep(0.2)
                else:
                    pytest.fail(
                        f"`{' '.join(command[2:])}` exited with status {process.returncode} before answering "
                        f"/health; its output:\n{_tail(output)}"
                    )
                yield Server(url, port, process)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)

    return start


def _tail(output: IO[bytes], limit: int = 4000) -> str:
    """The last ``limit`` characters a server wrote to ``output``."""
    output.seek(0)
    return output.read().decode(errors="replace")[-limit:]
