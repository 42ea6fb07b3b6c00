"""Fixtures shared by the serving tests that start `blastscope serve` in a subprocess."""

from __future__ import annotations

import socket
from collections.abc import Callable

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
