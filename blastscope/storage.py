"""Files written whole or not at all, and whether a folder takes files at all.

One place for what every writer of run files, splits, operating points and predictions needs: a full disk, a kill or
a read-only file system must leave the previous file (or none), never a truncated one that a later command would read
back as valid. ``os.replace`` is atomic within one file system, so the temporary file lives beside its target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: the only way to read it, and not safe to repeat beside other threads
FILE_MODE = 0o666 & ~_UMASK
"""The mode of files written here: what ``open()`` would give them, where ``mkstemp`` alone gives 0600 and a colleague
sharing the run folder could not read its files."""


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file beside it, then rename it into place.

    Readers (and a resume after a kill) see the old file or the complete new one, never a partial file. The file
    gets :data:`FILE_MODE`, as a plain ``open()`` would give it.

    Raises
    ------
    OSError
        If the disk is full, read-only or forbids the write (callers turn it into one line, e.g. training's
        ``storage_errors``); the old file is left as it was and the temporary file is removed.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(descriptor, FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    """:func:`write_atomically` for UTF-8 text."""
    write_atomically(path, lambda handle: handle.write(text.encode()))


def nearest_existing(folder: Path) -> Path:
    """``folder`` made absolute, or its nearest parent that exists (the folder a command would create it in)."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def probe_writable(folder: Path) -> None:
    """Create and remove one file in the existing ``folder``, so an unwritable output is known before work starts.

    Raises
    ------
    OSError
        If the file cannot be created or removed (read-only file system, no permission). A full disk cannot be seen
        this way: an empty file takes no space.
    """
    descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".blastscope-probe-")
    os.close(descriptor)
    os.unlink(probe)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot fsync a folder, and then the rename stays pending."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
