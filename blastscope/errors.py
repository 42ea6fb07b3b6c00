"""Errors a user can act on.

Every problem caused by the user's input is raised as a :class:`BlastscopeError` whose message is one line that names
the file and the fix; the CLI prints that line instead of a traceback.
"""

from __future__ import annotations


class BlastscopeError(Exception):
    """A problem with the user's input or environment, explained in one actionable line."""


class DataError(BlastscopeError):
    """The dataset cannot be used as given (missing, empty, one class, unsplittable, leaking)."""


class ImageError(BlastscopeError):
    """One image file cannot be read; callers usually count and skip it."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ImageTooLargeError(ImageError):
    """An image over the pixel limit, refused from its header before any pixel is decoded (a guard against
    decompression bombs): too large to decode, not broken, so a server answers it 413 rather than 415."""


class LeakageError(DataError):
    """A subject group or an identical file sits in more than one part of a split."""


class WeightsError(BlastscopeError):
    """Pretrained weights that were asked for cannot be had."""
