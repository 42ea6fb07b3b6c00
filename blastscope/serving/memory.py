"""Bounding the server's memory: decoding is the only step whose memory grows with the image, so every upload's peak
decoding memory is estimated from its header and reserved from one budget shared by all requests before a pixel is
decoded; once decoded, the image is shrunk to the model's input size and the reservation released.

Four concurrent uploads of a 95 KB 16-bit 7000x7000 grey PNG took the server from 0.9 GB to 8.3 GB before: each
decoded to a full-size picture that was copied several times on its way to the model. Now each is shrunk as soon as
it is decoded, and at most one such image is decoded at a time under the default budget.
"""

from __future__ import annotations

import ctypes
import io
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from blastscope.data.images import _FORMATS, _WIDE_CHANNELS, _rawmode
from blastscope.hardware import c_library_function
from blastscope.segmentation.modes import segmenting_bytes
from blastscope.workflows.scan import scan_working_bytes

PEAK_BYTES_PER_PIXEL = {
    # blastscope's decoder at its peak, per pixel, by Pillow mode: Pillow's own buffer (RGB, RGBA, LA and I take 4
    # bytes a pixel), the numpy copies that scale 16-bit values, the RGB result and its shrinking, 4 bytes for the
    # copy an EXIF rotation makes, and 1 byte of margin. Measured with Pillow 13 by `benchmarks/bench_serve.py --modes`.
    "1": 10,
    "L": 10,
    "P": 10,
    "I;16": 12,
    "I;16L": 12,
    "I;16B": 12,
    "I;16N": 12,
    "RGB": 13,
    "RGBX": 13,
    "YCbCr": 13,
    "CMYK": 13,
    "LAB": 13,
    "HSV": 13,
    "I": 17,
    "F": 17,
    "LA": 18,
    "La": 18,
    "PA": 18,
    "RGBA": 18,
    "RGBa": 18,
}
"""Pillow mode -> peak bytes a pixel; any other mode counts ``UNKNOWN_MODE_BYTES``."""
UNKNOWN_MODE_BYTES = 18
WIDE_CHANNEL_BYTES = {"RGB": 28, "RGBA": 42}
"""48- and 64-bit RGB(A) PNG and TIFF (16 bits a channel) are decoded a second time at full depth by OpenCV and
checked against Pillow's 8-bit reading: 23 and 37 bytes a pixel at the peak, plus rotation and margin."""
FORMAT_EXTRA_BYTES = {"WEBP": 8}
"""libwebp decodes into a buffer of its own that Pillow then copies."""


def decoding_cost(data: bytes, max_pixels: int) -> int:
    """The peak bytes that decoding ``data`` may take, from its header alone (no pixel is decoded).

    0 for what the decoder refuses at the header (not an image, a format outside the whitelist, over ``max_pixels``):
    that costs nothing and must not wait for memory to be refused.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
                pixels = image.width * image.height
                mode, kind = image.mode, image.format or ""
                wide = kind in ("PNG", "TIFF") and mode in WIDE_CHANNEL_BYTES and _WIDE_CHANNELS.search(_rawmode(image))
    except Exception:  # the decoder names what is wrong with it
        return 0
    if pixels > max_pixels:
        return 0
    per_pixel = WIDE_CHANNEL_BYTES[mode] if wide else PEAK_BYTES_PER_PIXEL.get(mode, UNKNOWN_MODE_BYTES)
    return pixels * (per_pixel + FORMAT_EXTRA_BYTES.get(kind, 0))


def scan_cost(data: bytes, max_pixels: int, red_cell_diameter: float | None = None) -> int:
    """The peak bytes that scanning the smear photograph in ``data`` may take, from its header alone: decoding it
    (:func:`decoding_cost`) plus the scan's working memory at its size and ``red_cell_diameter``
    (:func:`~blastscope.workflows.scan.scan_working_bytes`; the photograph is shrunk to a working copy, by less for
    smaller red cells, before its cells are looked for). 0 for what the decoder refuses at the header, as for
    :func:`decoding_cost`."""
    decoding = decoding_cost(data, max_pixels)
    if not decoding:
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
            width, height = image.size
    return decoding + scan_working_bytes(width, height, red_cell_diameter)


def segmenting_cost(data: bytes, max_pixels: int, segment: str) -> int:
    """The peak bytes that cutting the cell of the image in ``data`` out of its background may take beyond decoding
    it, from its header alone (:func:`~blastscope.segmentation.modes.segmenting_bytes`; 0 for ``segment="never"``
    and for what the decoder refuses at the header)."""
    if segment == "never" or not decoding_cost(data, max_pixels):
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
            width, height = image.size
    return segmenting_bytes(width * height, segment)


TRIM_AFTER_BYTES = 64 * 2**20
"""After decoding an image that reserved this much or more, freed memory is handed back to the system."""


_malloc_trim = c_library_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)  # glibc


def give_back_freed_memory() -> bool:
    """Hand the memory freed inside the C library's heaps back to the system (glibc's ``malloc_trim``); False where
    there is no glibc to ask.

    Pillow decodes into 16 MB blocks, which glibc serves from per-thread heaps once large blocks have been freed, and
    keeps: eight uploads of the memory case, decoded one at a time, still raised the server's peak RSS by 1.27 GB and
    left it 1 GB larger. Trimming after each large image keeps the peak at one image's worth (+0.39 GB) and leaves
    nothing behind. (Making glibc ``mmap`` every allocation of 1 MB or more did as well for memory, but made Grad-CAM
    3-4 times slower.)
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)  # 1 when it released memory, 0 when there was none to release
    return True


class DecodingBusy(Exception):
    """No room in the decoding budget within the time a request may wait (one deadline for all its files, so a later
    file may find it already passed: ``waited`` is this file's own wait)."""

    def __init__(self, needed: int, waited: float) -> None:
        self.needed, self.waited = needed, waited
        super().__init__(
            f"server busy: {needed / 2**20:,.0f} MB of decoding memory was not free before the request's decoding "
            f"deadline (this file waited {waited:g} s of it); retry later"
        )


class DecodingBudget:
    """Bytes of decoding memory in flight across all requests (thread-safe: predictions run in a thread pool).

    ``reserve(n, deadline)`` waits until ``n`` more bytes fit, or raises :class:`DecodingBusy` at ``deadline`` (a
    ``time.monotonic()`` instant). A reservation over the whole budget is granted only when nothing else is reserved,
    and then takes all of it: such an image decodes alone. Waiters are served in arrival order, so a large image is
    never starved by a stream of small ones and a wait is bounded by the images ahead of it (at most
    ``predict_threads`` decode at once). An image that costs nothing (refused at its header) never waits. Releasing
    a reservation of ``TRIM_AFTER_BYTES`` or more first hands freed memory back to the system
    (:func:`give_back_freed_memory`).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the decoding budget must be positive, not {capacity}")
        self.capacity = capacity
        self._reserved = 0
        self._peak = 0
        self._condition = threading.Condition()
        self._waiting: deque[object] = deque()  # one ticket per waiter, oldest first

    @property
    def reserved(self) -> int:
        """Bytes reserved now (a snapshot read without the lock: /health must never wait)."""
        return self._reserved

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    @contextmanager
    def reserve(self, nbytes: int, deadline: float) -> Iterator[None]:
        granted = min(max(nbytes, 0), self.capacity)
        started, ticket = time.monotonic(), object()
        with self._condition:
            if granted:
                self._waiting.append(ticket)
                try:
                    while self._waiting[0] is not ticket or self._reserved + granted > self.capacity:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise DecodingBusy(nbytes, round(time.monotonic() - started, 1))
                        self._condition.wait(remaining)
                finally:
                    self._waiting.remove(ticket)
                    self._condition.notify_all()  # the next in line may fit now
            self._reserved += granted
            self._peak = max(self._peak, self._reserved)
        try:
            yield
        finally:
            if granted >= TRIM_AFTER_BYTES:  # before the next large image may start
                give_back_freed_memory()
            with self._condition:
                self._reserved -= granted
                self._condition.notify_all()
