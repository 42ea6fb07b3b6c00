"""Reading a file's bytes without trusting the path: regular files only, and no more than a byte limit.

A dataset folder can hold things that are not image files whatever their names say: a named pipe (opening it blocks
until something writes to it, so a scan would hang forever), a link to ``/dev/zero`` (reading never ends and fills
memory) or a huge or sparse file behind a valid image header. Such files are refused from their metadata
(:func:`os.stat`, after following links) before they are opened, with a reason a person can act on.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from blastscope.errors import BlastscopeError, ImageError

MAX_FILE_BYTES = 512 * 2**20
"""Largest file read as an image, in bytes (512 MiB): a picture at the default pixel limit of 50 megapixels stored
uncompressed at 8 bytes a pixel (64-bit RGBA TIFF) is 400 MB; cell images are kilobytes. ``BLASTSCOPE_MAX_FILE_BYTES``
overrides it."""
MAX_FILE_BYTES_ENV = "BLASTSCOPE_MAX_FILE_BYTES"

_SPECIAL_FILES = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def max_file_bytes() -> int:
    """The byte limit in force: ``BLASTSCOPE_MAX_FILE_BYTES`` when set, else :data:`MAX_FILE_BYTES`.

    Raises
    ------
    BlastscopeError
        When the variable is set to anything but a positive whole number of bytes.
    """
    text = os.environ.get(MAX_FILE_BYTES_ENV, "").strip()
    if not text:
        return MAX_FILE_BYTES
    if not text.isdigit() or int(text) < 1:
        raise BlastscopeError(f"{MAX_FILE_BYTES_ENV}={text!r}: expected a positive number of bytes, e.g. 1073741824")
    return int(text)


def file_problem(path: Path) -> str | None:
    """Why ``path`` must not be read as an image, judged from its metadata alone (nothing is opened), or None.

    A path that cannot even be looked at (a broken link, no permission) gives None: reading it reports that error.
    """
    try:
        status = os.stat(path)
    except OSError:
        return None
    return _status_problem(path, status, max_file_bytes())


def read_image_file(path: Path) -> bytes:
    """The bytes of ``path``, a regular file (after following links) of at most :func:`max_file_bytes` bytes.

    The type and size are checked before the file is opened, and again on the open file, which is opened
    non-blocking so that a pipe put in its place meanwhile cannot block; at most the limit plus one byte is read, so
    a file that grows meanwhile cannot fill memory either.

    Raises
    ------
    ImageError
        For a named pipe, device, socket or folder, a file over the byte limit, or one that cannot be read.
    """
    limit = max_file_bytes()
    data = b""
    try:
        problem = _status_problem(path, os.stat(path), limit)
        if problem is None:
            with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
                problem = _status_problem(path, os.fstat(handle.fileno()), limit)
                if problem is None:
                    data = handle.read(limit + 1)
    except OSError as error:
        raise ImageError(path, f"cannot be read ({error.strerror or error})") from error
    if problem is None and len(data) > limit:
        problem = _too_large(len(data), limit)
    if problem is not None:
        raise ImageError(path, problem)
    return data


def _status_problem(path: Path, status: os.stat_result, limit: int) -> str | None:
    """Why a file with this :func:`os.stat` result must not be read (not a regular file, over ``limit``), or None."""
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(status.st_mode)), "unknown kind of file")
        link = f", reached by a link to {os.path.realpath(path)}" if os.path.islink(path) else ""
        return f"not a regular file ({kind}{link}); remove it or put the image file itself there"
    return _too_large(status.st_size, limit) if status.st_size > limit else None


def _too_large(size: int, limit: int) -> str:
    mib = f" ({limit / 2**20:,.0f} MiB)" if limit >= 2**20 else ""
    return f"{size:,} bytes, over the limit of {limit:,} bytes{mib}; set {MAX_FILE_BYTES_ENV} to read larger files"
