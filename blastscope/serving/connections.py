"""Connections that cannot be held open for ever: uvicorn's h11 protocol with a read deadline on every request.

uvicorn closes a connection idle *between* requests after ``timeout_keep_alive`` seconds, but it sets no timer while a
request is arriving: a client that sends half a request head, or a body one byte at a time, holds its connection (and
a file descriptor, and the body read so far) as long as it likes. Here a request's head and body must arrive within
``request_timeout_s`` seconds of its first byte (of the connection, for its first request); past that the server
answers 408 when no response has started, and closes the connection. The time the app then takes to answer is not
counted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from blastscope.serving.limits import Capacity


class ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for receiving each request (``request_timeout_s``)."""

    request_timeout_s: float = Capacity().request_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()  # a pipelined request already buffered may now be half read

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _receiving(self) -> bool:
        """A request is due or arriving: not complete yet, and not an idle keep-alive wait (uvicorn times those)."""
        if self.transport.is_closing() or self.timeout_keep_alive_task is not None:
            return False
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _follow_request(self) -> None:
        if not self._receiving():
            self._cancel_deadline()
        elif self.read_deadline is None:  # set once per request, from its first byte: trickling bytes do not extend it
            self.read_deadline = self.loop.call_later(self.request_timeout_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _deadline_passed(self) -> None:
        self.read_deadline = None
        if not self._receiving():
            return
        if self.conn.their_state is h11.IDLE:  # the head is arriving: nothing was answered to this request yet
            self.transport.write(_timeout_response(self.request_timeout_s))
        elif not self.cycle.response_complete:  # the body is arriving, and the app waits for the rest of it
            if not self.cycle.response_started:
                self.transport.write(_timeout_response(self.request_timeout_s))
            self.cycle.disconnected = True  # the app sees the client gone, and its answer goes nowhere
            self.cycle.message_event.set()
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.info("%srequest not received within %g s: connection closed", prefix, self.request_timeout_s)
        self.transport.close()


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"detail": f"request not received within {seconds:g} s; connection closed", "file": None})
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode("latin-1")


def protocol_with_deadline(request_timeout_s: float) -> type[ReadDeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``), with this request deadline."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"request_timeout_s": request_timeout_s})


def serve(app: Any, host: str, port: int, capacity: Capacity, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn under ``capacity``'s request deadline and keep-alive timeout (blocks until stopped)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol_with_deadline(capacity.request_timeout_s),
        timeout_keep_alive=capacity.keep_alive_s,  # type: ignore[arg-type]  # a float is as good as an int here
        log_level=log_level,
    )
