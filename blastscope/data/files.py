"""What counts as a dataset file: the one finder that the dataset scan, ``predict`` and ``serve`` share.

A folder is searched at any depth with :func:`os.walk`, following symbolic links to folders, so a dataset assembled
from links to storage elsewhere is read. Each folder is read once: a link to a folder already searched (a loop, or a
second link to the same place) and a link to a folder inside the root (a second name for files already read there, which
would give them a second class) are not followed again, and each is listed as a skip.

Operating-system litter is ignored without a word: ``__MACOSX/`` folders and ``._*`` AppleDouble files from zips made
on a Mac, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini`` and the like. Anything else set aside is listed with the reason
(a hidden image file, an image inside a hidden folder, a folder that cannot be listed, an image name that is not a
regular file, such as a named pipe or a link to a device, or a file over the byte limit of
:func:`blastscope.data.reading.max_file_bytes`; these two are judged from metadata, without opening the file); files
whose extension is not an image extension are not dataset files and are passed over, counted by extension
(:attr:`ImageFiles.other`, manifests and notes aside) so that a folder of GIFs or camera formats is not read as an
empty class without a word.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from blastscope.data.images import is_image_file
from blastscope.data.reading import file_problem

Skip = tuple[Path, str]  # a file or folder set aside, and why

COMPANION_EXTENSIONS = frozenset(
    {".csv", ".tsv", ".txt", ".md", ".json", ".yaml", ".yml", ".xml", ".html", ".pdf", ".log"}
)
"""Files that travel with image datasets (manifests, notes, licences): passed over without being counted."""
LITTER_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".localized", "icon\r"})
LITTER_FOLDERS = frozenset(
    {
        "__macosx",
        ".appledouble",
        ".spotlight-v100",
        ".trashes",
        ".fseventsd",
        ".temporaryitems",
        "$recycle.bin",
        "system volume information",
    }
)


@dataclass(slots=True)
class ImageFiles:
    """The image files below a folder (sorted), what was set aside and why, and how much litter was ignored."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    litter: int = 0
    other: Counter[str] = field(default_factory=Counter)
    """Files passed over for their extension, counted by lower-case extension (``""`` for none); not the
    :data:`COMPANION_EXTENSIONS` (a manifest, a README)."""


def is_litter(name: str) -> bool:
    """A file or folder an operating system or zip tool left behind: never a cell, ignored silently."""
    lowered = name.lower()
    return name.startswith("._") or lowered in LITTER_FILES or lowered in LITTER_FOLDERS


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def find_image_files(root: Path | str) -> ImageFiles:
    """Every image file below ``root`` (symlinked folders followed once each), with the skips and the litter count.

    Paths keep the names they were reached by (a file under a followed link is ``root/link/x.png``), so the folder
    names above a file, which may carry its class, are the ones the user sees.
    """
    root = Path(root)
    found = ImageFiles()
    real_root = root.resolve()
    searched: dict[tuple[int, int], Path] = {_identity(root): root}

    def unlisted(error: OSError) -> None:
        found.skipped.append(
            (Path(error.filename or root), f"folder cannot be listed ({error.strerror or error}); fix its permissions")
        )

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unlisted):
        here = Path(folder)
        kept = []
        for name in sorted(subfolders):
            path = here / name
            if is_litter(name):
                found.litter += 1
            elif is_hidden(name):
                found.skipped.extend(_hidden_folder_images(path))
            elif (reason := _already_searched(path, real_root, searched)) is not None:
                found.skipped.append((path, reason))
            else:
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(names):  # skips listed in a stable order
            if is_litter(name):
                found.litter += 1
            elif not is_image_file(Path(name)):
                if not is_hidden(name) and (suffix := Path(name).suffix.lower()) not in COMPANION_EXTENSIONS:
                    found.other[suffix] += 1
            elif is_hidden(name):
                found.skipped.append((here / name, "hidden file (its name starts with '.'); rename it to include it"))
            elif (problem := file_problem(here / name)) is not None:
                found.skipped.append((here / name, problem))
            else:
                found.files.append(here / name)
    found.files.sort()
    return found


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def _already_searched(path: Path, real_root: Path, searched: dict[tuple[int, int], Path]) -> str | None:
    """Why the folder ``path`` must not be searched (again), or None; records it as searched otherwise."""
    try:
        identity = _identity(path)
    except OSError as error:
        return f"folder cannot be opened ({error.strerror or error}); fix it or remove it"
    if path.is_symlink():
        target = path.resolve()
        if target == real_root or real_root in target.parents:
            return (
                f"link to {target}, a folder inside the dataset already searched under its own name; "
                "not read a second time"
            )
    if identity in searched:
        return f"link to {searched[identity]}, already searched (a symlink loop or a second link); not read again"
    searched[identity] = path
    return None


def _hidden_folder_images(folder: Path) -> list[Skip]:
    """The image files inside a hidden folder, each listed as a skip (the folder itself is not searched for cells)."""
    reason = f"inside the hidden folder {folder.name}/ (its name starts with '.'); rename the folder to include it"
    return [
        (Path(inner, name), reason)
        for inner, subfolders, names in os.walk(folder)
        for name in sorted(names)
        if is_image_file(Path(name)) and not is_litter(name)
    ]
