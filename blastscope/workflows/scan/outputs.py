"""The files of a scan of many photographs: an overlay PNG per photograph, a row per cell and per photograph (CSV and
JSON), and a summary per photograph and overall.

Overlays are written as each photograph is scanned, so a folder of any size is held in memory one photograph at a
time; the tables and the summary are written by :meth:`ScanWriter.close`, also for a scan interrupted part-way
(:meth:`ScanWriter.interrupted`), so the photographs finished are kept and the files say how many of all they are.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blastscope.metrics import class_display_name
from blastscope.workflows.scan.result import VERDICTS, ImageScan, verdict_text

IMAGE_COLUMNS = (
    "image",
    "width",
    "height",
    "n_cells",
    "n_positive",
    "n_referred",
    "n_cut_by_border",
    "n_not_classified",
    "verdict",
    "verdict_text",
    "summary",
    "overlay",
    "error",
)
DECISION_COLUMNS = ("positive_class", "threshold", "decided_by")
"""The operating point each cell was decided at, in ``cells.csv`` as in ``predict``'s CSV: the threshold is on
p(``positive_class``); both are empty for a multi-class run (the most probable class wins)."""
CELL_FILE, IMAGE_FILE, JSON_FILE, SUMMARY_FILE, OVERLAY_DIR = (
    "cells.csv",
    "images.csv",
    "scan.json",
    "summary.txt",
    "overlays",
)


class ScanWriter:
    """Collects the scans of a folder and writes their files under ``out``.

    Parameters
    ----------
    out : Path
        Folder to write into (created): ``cells.csv``, ``images.csv``, ``scan.json``, ``summary.txt`` and
        ``overlays/<stem>_scan.png``. An earlier scan's overlays there are removed first, as its tables are replaced:
        an overlay left from it (another threshold, a photograph now not scanned) would contradict the new tables.
    classes : sequence of str
        The run's classes (one ``p_<class>`` column each).
    positive_class : str or None
        The run's positive class (None for multi-class runs).
    about : dict
        What scanned (model, backend, decision rule...), written at the top of ``scan.json``.
    """

    def __init__(self, out: Path, classes: Sequence[str], positive_class: str | None, about: dict[str, Any]) -> None:
        self.out, self.classes, self.positive_class, self.about = out, tuple(classes), positive_class, about
        (out / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
        for earlier in (out / OVERLAY_DIR).glob("*_scan.png"):
            if not earlier.is_dir():  # a folder of that name is no overlay
                earlier.unlink()
        self.images: list[dict[str, Any]] = []
        self._used: set[str] = set()
        self.overlays = 0
        self.tables: list[Path] = []
        self.total: int | None = None

    def interrupted(self, total: int) -> None:
        """Mark the scan as stopped (Ctrl-C) after the photographs added so far, of the ``total`` it was given: the
        overall summary and scan.json's ``interrupted`` say so."""
        self.total = total

    def add(self, scan: ImageScan, path: Path) -> str:
        """Write ``scan``'s overlay, keep its rows; return its line ``file: n of m white cells called ALL; verdict``."""
        overlay = self.out / OVERLAY_DIR / self._overlay_name(path)
        _write_whole(overlay, scan.overlay.save)
        self.overlays += 1
        self.images.append({**scan.to_dict(), "overlay": str(overlay), "error": None})
        return _image_line(self.images[-1])

    def add_error(self, file: str, reason: str) -> None:
        """A photograph that could not be read or scanned (a grey field): listed in the tables with the reason."""
        self.images.append({"file": file, "verdict": None, "cells": [], "not_classified": [], "error": reason})

    def overall(self) -> dict[str, Any]:
        """Counts over every photograph scanned, and the line that says them."""
        scanned = [image for image in self.images if image["error"] is None]
        verdicts = Counter(image["verdict"] for image in scanned)
        totals = {
            key: sum(image[key] or 0 for image in scanned)
            for key in ("n_cells", "n_positive", "n_referred", "n_cut_by_border", "n_not_classified")
        }
        failed = len(self.images) - len(scanned)
        interrupted = None if self.total is None else {"after": len(self.images), "of": self.total}
        text = "" if interrupted is None else f"interrupted after {len(self.images)} of {self.total} photographs: "
        text += f"{len(scanned)} photograph{'s' * (len(scanned) != 1)} scanned" + (
            f", {failed} not scanned" if failed else ""
        )
        if scanned:
            said = {code: verdict_text(code, self.positive_class) for code in VERDICTS}
            text += " (" + ", ".join(f"{said[code]}: {verdicts[code]}" for code in VERDICTS if verdicts[code]) + ")"
            cells = f"white cell{'s' * (totals['n_cells'] != 1)}"
            if totals["n_cells"] == 0:
                text += "; no whole white cell found" if totals["n_not_classified"] else "; no white cells found"
            elif self.positive_class is not None:
                name = class_display_name(self.positive_class)
                text += f"; {totals['n_positive']} of {totals['n_cells']} {cells} called {name}"
            else:
                text += f"; {totals['n_cells']} {cells} classified"
            text += f" ({totals['n_referred']} uncertain)" if totals["n_referred"] else ""
            text += f", {totals['n_cut_by_border']} cut by the border" if totals["n_cut_by_border"] else ""
        return {
            "photographs": len(scanned),
            "failed": failed,
            "interrupted": interrupted,
            "verdicts": dict(verdicts),
            **totals,
            "summary": text,
        }

    def close(self) -> list[Path]:
        """Write the tables, the JSON and the summary; return their paths.

        Raises
        ------
        OSError
            With the file's name, when one cannot be written (a full disk); that file is removed, not left truncated.
        """
        overall = self.overall()
        paths = [self.out / name for name in (CELL_FILE, IMAGE_FILE, JSON_FILE, SUMMARY_FILE)]
        document = {**self.about, "overall": overall, "images": self.images}
        lines = [_image_line(image) for image in self.images] + [overall["summary"]]
        writers = (
            lambda path: _write_csv(path, self._cell_columns(), self._cell_rows()),
            lambda path: _write_csv(path, IMAGE_COLUMNS, [self._image_row(image) for image in self.images]),
            lambda path: path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n"),
            lambda path: path.write_text("\n".join(lines) + "\n"),
        )
        for path, write in zip(paths, writers, strict=True):
            _write_whole(path, write)
            self.tables.append(path)
        return paths

    def saved_note(self) -> str:
        """What is on disk so far, for a message about a scan stopped part-way (a full disk)."""
        tables = ", ".join(path.name for path in self.tables) or "none of the tables"
        done = f"{len(self.images)} photograph{'s' * (len(self.images) != 1)} done"
        overlays = f"{self.overlays} overlay{'s' * (self.overlays != 1)} in {self.out / OVERLAY_DIR}"
        return f"kept: {overlays} ({done}), {tables}"

    def _overlay_name(self, path: Path) -> str:
        """``<stem>_scan.png``; prefixed by the parent folder, then numbered, when another photograph took it."""
        stem, parent = path.stem, path.parent.name
        candidates = itertools.chain(
            [f"{stem}_scan.png", f"{parent}_{stem}_scan.png"],
            (f"{parent}_{stem}_{count}_scan.png" for count in itertools.count(2)),
        )
        name = next(candidate for candidate in candidates if candidate not in self._used)
        self._used.add(name)
        return name

    def _cell_columns(self) -> list[str]:
        """As ``predict``'s CSV names them: each row says what its p(positive) was compared with, and who set it."""
        box = ["centroid_x", "centroid_y", "x0", "y0", "x1", "y1"]
        probabilities = [f"p_{name}" for name in self.classes]
        return ["image", "cell", *box, "label", *probabilities, *DECISION_COLUMNS, "referred"]

    def _cell_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "image": image["file"],
                **{key: cell[key] for key in ("cell", "centroid_x", "centroid_y", "x0", "y0", "x1", "y1", "label")},
                # numbers in full, as predict's CSV: p and the threshold never read as equal when they decided apart
                **{f"p_{name}": repr(float(cell["probabilities"][name])) for name in self.classes},
                "positive_class": image["positive_class"] or "",  # empty, as the threshold, for a multi-class run
                "threshold": "" if image["threshold"] is None else repr(float(image["threshold"])),
                "decided_by": image["decided_by"],
                "referred": cell["referred"],
            }
            for image in self.images
            for cell in image["cells"]
        ]

    @staticmethod
    def _image_row(image: dict[str, Any]) -> dict[str, Any]:
        row = {key: image.get(key) for key in IMAGE_COLUMNS}
        row["image"] = image["file"]
        return {key: "" if value is None else value for key, value in row.items()}


def _image_line(image: dict[str, Any]) -> str:
    if image["error"] is not None:
        return f"{image['file']}: not scanned: {image['error']}"
    if image["verdict"] == "no_white_cell":  # the summary says so already
        return f"{image['file']}: {image['summary']}"
    return f"{image['file']}: {image['summary']}; {image['verdict_text']}"


def _write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write(path)``; when it fails (a full disk), remove the partial file and raise the error with ``path`` named;
    when it is interrupted (Ctrl-C), remove the partial file too."""
    try:
        write(path)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    except KeyboardInterrupt:
        path.unlink(missing_ok=True)
        raise


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(columns))
        writer.writeheader()
        writer.writerows(rows)
