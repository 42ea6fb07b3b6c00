"""What one request to ``blastscope serve`` may carry, and what the server holds at once; kept free of web imports so
the CLI can show the defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from blastscope.data.images import DEFAULT_MAX_PIXELS

DECODING_BYTES_PER_LIMIT_PIXEL = 12
"""The default decoding budget is this many bytes for each pixel of ``--max-pixels``: one image at the pixel limit of
the commonest kinds (8-bit grey or RGB, 16-bit grey, at 7-11 bytes a pixel at the decoder's peak) decodes alone, and
hundreds of microscope cells decode side by side."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may carry; the defaults are those of ``blastscope serve``."""

    max_file_mb: float = 20.0
    max_files: int = 32
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """Every file at its limit plus room for the multipart framing: a larger request is refused with 413.

        A declared Content-Length over the limit is refused before the body is read; a body without one (chunked)
        is counted as it arrives and refused as soon as it passes the limit, so nothing larger is ever buffered.
        """
        return self.max_files * self.max_file_bytes + 1024 * 1024


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the whole server holds and runs at once, and how long it waits; the defaults are those of ``serve``.

    * ``max_decoding_mb``: the budget of decoding memory shared by all requests (None: ``default_decoding_mb``).
      Each image's peak decoding memory is estimated from its header (pixels x bytes a pixel for its mode) and
      reserved before a pixel is decoded, then released once the image is shrunk to the model's input size. An image
      whose estimate is over the whole budget (but within ``--max-pixels``) waits until nothing else is decoding and
      then decodes alone.
    * ``decode_wait_s``: how long one request waits, in all, for room in that budget; past it each waiting file is
      answered 503 and, when no file of the request could be classified, so is the request, with ``Retry-After``.
    * ``predict_threads``: the threads that decode and classify; /health never waits for them.
    * ``request_timeout_s``: a request's head and body must arrive within this many seconds of its first byte (or of
      the connection, for its first request); otherwise it is answered 408 and the connection closed.
    * ``keep_alive_s``: an idle connection between requests is closed after this many seconds.
    """

    max_decoding_mb: float | None = None
    decode_wait_s: float = 10.0
    predict_threads: int = 4
    request_timeout_s: float = 60.0
    keep_alive_s: float = 5.0

    def decoding_mb(self, limits: Limits) -> float:
        """The decoding budget in MB: ``max_decoding_mb``, or by default ``default_decoding_mb(limits.max_pixels)``."""
        return self.max_decoding_mb if self.max_decoding_mb is not None else default_decoding_mb(limits.max_pixels)

    def decoding_bytes(self, limits: Limits) -> int:
        return max(1, int(self.decoding_mb(limits) * 1024 * 1024))

    @property
    def retry_after_s(self) -> int:
        """The ``Retry-After`` of a 503: as long as a request may wait for decoding memory, at least 1 second."""
        return max(1, math.ceil(self.decode_wait_s))


def default_decoding_mb(max_pixels: int) -> float:
    """``DECODING_BYTES_PER_LIMIT_PIXEL`` bytes for each pixel of the pixel limit, in MB (572.2 MB for 50 Mpx)."""
    return max_pixels * DECODING_BYTES_PER_LIMIT_PIXEL / (1024 * 1024)
