"""What one request to ``blastscope serve`` may carry; kept free of web imports so the CLI can show the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from blastscope.data.images import DEFAULT_MAX_PIXELS


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
