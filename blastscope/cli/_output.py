"""Output checks the commands share: an unwritable output folder stops a command before its work starts, and files
that are read back later are replaced whole or not at all.

Not a sub-command (the leading underscore keeps it out of ``blastscope --help``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from blastscope.errors import BlastscopeError
from blastscope.storage import probe_writable


def check_writable(folder: Path, option: str) -> None:
    """Stop now when no file can be created in ``folder``, or in its nearest existing parent when it is still to be
    made (a read-only file system, no permission), by creating and deleting an empty temporary file there.

    A full disk cannot be seen this way (an empty file takes no space); the writers handle that when it happens.

    Raises
    ------
    BlastscopeError
        Naming the folder, the reason and ``option`` (e.g. ``--out``) to change.
    """
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), Path.cwd())
    if not existing.is_dir():
        raise BlastscopeError(f"{existing} is a file, not a folder; choose another {option}")
    try:
        probe_writable(existing)
    except OSError as error:
        raise BlastscopeError(
            f"{existing}: cannot write there ({error.strerror or error}); choose another {option} or make the folder "
            "writable"
        ) from error


def replace_whole(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file next to ``path`` and rename it to ``path`` only when complete, so a full disk
    or a crash never leaves a truncated ``path`` behind (the previous one, if any, stays)."""
    temporary = path.with_name(f".{path.name}.incomplete")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
