"""``blastscope predict``: classify image files or folders with a trained run, optionally with Grad-CAM overlays."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import numbers
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from blastscope.cli._arguments import probability_threshold, red_cell_diameter, whole_number
from blastscope.cli._interrupt import Interrupted
from blastscope.cli._output import check_writable, replace_whole
from blastscope.data.people import PERSON_BY
from blastscope.data.preprocessing import SEGMENT_MODES
from blastscope.data.text_table import in_words
from blastscope.errors import BlastscopeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import Image, ImageFont
    from PIL.PngImagePlugin import PngInfo

    from blastscope.api.classifier import Classifier, Prediction
    from blastscope.data.cache import ModelInput
    from blastscope.data.stain import SubjectColour
    from blastscope.inference.decision import OperatingPoint
    from blastscope.inference.gradcam import Explanation

Row = dict[str, Any]
CAPTION_COLOR = "#1d2433"
"""The Grad-CAM caption strip's background (the scan overlay's banner colour), under white text."""
CAPTION_FRACTION, CAPTION_MIN_PX = 1 / 28, 11
"""The caption's text height: a fraction of the overlay's width, and at least this many px, to stay readable."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify cell images with a trained run",
        description="Print (or write) the class and per-class probabilities of each image, whether its cell was "
        "cut out of its background (--segment), and whether it is referred to a person (its p(positive) inside the "
        "run's refer band: `evaluate --refer-error`). An image in which segmentation finds several whole white cells "
        "(a smear photograph) is classified by the one nearest its centre: its 'white_cells' column says how many, "
        "and a closing line names such files (`blastscope scan` classifies every cell of a smear photograph). "
        "Unreadable files, and images whose cell cannot be found, are listed and skipped; the exit status is 1 when "
        "any file failed. Files a folder holds but that are not read (hidden, special or over-size files) are listed "
        "as ignored; the last lines count both. For a run trained with --colour-norm subject, each cell's colours are "
        "normalised over all the cells of its person in this call (--person-by), and the rows get a 'person' column.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/...)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="IMAGES_OR_DIRS", help="image files or folders")
    parser.add_argument("--out", type=Path, help="write predictions to this .csv or .json file instead of stdout")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average over the 8 flips/rotations of each image (said in a header line and a 'tta' column; the run's "
        "operating point was chosen without it)",
    )
    parser.add_argument(
        "--gradcam",
        type=Path,
        metavar="DIR",
        help="save a Grad-CAM overlay PNG per image here, captioned with the class it explains, the call and the "
        "threshold (<name>_gradcam.png; inputs sharing a name get their path from their common folder); each row's "
        "'gradcam' column gives its file",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto (default): ONNX Runtime when RUN_DIR/export holds a model, else PyTorch",
    )
    parser.add_argument("--variant", help="exported variant to use (fp32, int8, bf16); default: export.json's choice")
    parser.add_argument("--batch-size", type=whole_number("a batch size", "32"), default=32)
    parser.add_argument(
        "--threshold",
        type=probability_threshold,
        metavar="P",
        help="decide at p(positive) >= P for this call instead of the run's stored operating point (and refer no "
        "cell: the run's refer band belongs to its own threshold); two-class runs only",
    )
    parser.add_argument(
        "--segment",
        choices=SEGMENT_MODES,
        help="cut cells out of their background as this mode says instead of as the run was trained (default: the "
        "run's own)",
    )
    parser.add_argument(
        "--red-cell-diameter",
        type=red_cell_diameter,
        metavar="PX",
        help="cut cells out at this red-cell diameter (px of the images, at least 8) instead of the run's own "
        "(measured on each image unless the run was trained with one); give it when your images share one "
        "magnification",
    )
    parser.add_argument(
        "--person-by",
        choices=PERSON_BY,
        default="auto",
        help="for a run trained with --colour-norm subject, whose cells are whose: name (the C-NMC subject in each "
        "file name), folder (each file's parent folder is one person), all (every image of this call is one "
        "person's) or auto (default: name when every file name parses, all when none does; refused when only some "
        "do). Runs without it ignore it",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.api import load
    from blastscope.data.classes import positive_class_line
    from blastscope.inference.predict import several_cells, several_cells_line
    from blastscope.inference.tta import VIEW_NAMES
    from blastscope.metrics import class_display_name
    from blastscope.workflows.scan import REFER_TEXT

    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        raise BlastscopeError(f"{args.out}: --out must end in .csv or .json")
    if args.out and not args.out.parent.is_dir():
        raise BlastscopeError(f"{args.out}: folder {args.out.parent} does not exist; create it or choose another --out")
    if args.out:
        check_writable(args.out.parent, "--out")
    if args.gradcam:
        check_writable(args.gradcam, "--gradcam")
    ignored: list[tuple[Path, str]] = []
    paths = expand_inputs(args.inputs, ignored)
    classifier = load(
        args.run_dir,
        backend=args.backend,
        variant=args.variant,
        threshold=args.threshold,
        segment=args.segment,
        red_cell_diameter=args.red_cell_diameter,
        threshold_by="predict --threshold",
    )
    images = f"{len(paths)} image{'s' * (len(paths) != 1)}"
    print(f"{classifier.name}: {images}, backend {classifier.backend}", file=sys.stderr)
    point = classifier.operating_point
    print(positive_class_line(point.positive_class, point.classes, "run", class_display_name), file=sys.stderr)
    print(f"decision: {point.describe()}", file=sys.stderr)
    print(f"referral: {classifier.describe_referral()}", file=sys.stderr)
    for line in classifier.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.tta:
        print(tta_line(point, VIEW_NAMES, args.run_dir), file=sys.stderr)
    overlays = [args.gradcam / name for name in gradcam_names(paths)] if args.gradcam else None
    if args.gradcam:
        args.gradcam.mkdir(parents=True, exist_ok=True)
    people, colour = person_colours(classifier, paths, args.person_by)
    writer = PredictionWriter(args.out, classifier.classes)
    failures = referred = 0
    several: list[tuple[str, int]] = []  # files holding several whole white cells, each classified by one of them
    try:
        for start in range(0, len(paths), args.batch_size):
            end = start + args.batch_size
            rows = predict_chunk(
                classifier,
                paths[start:end],
                args.tta,
                overlays[start:end] if overlays else None,
                people[start:end] if people else None,
                colour,
            )
            writer.write_rows(rows)
            failures += sum(row["error"] is not None for row in rows)
            referred += sum(bool(row["referred"]) for row in rows)
            several += [(row["file"], row["white_cells"]) for row in rows if several_cells(row["white_cells"])]
        writer.finish()
    except OSError as error:  # a full disk, mostly: say what is kept, in one line
        raise BlastscopeError(
            f"stopped: {error.filename or writer.where}: {error.strerror or error}; {writer.saved_note(len(paths))}; "
            "free space or choose another --out, then run again"
        ) from error
    except KeyboardInterrupt:  # Ctrl-C: the finished chunks are kept; say where and how to go on
        raise Interrupted(
            f"{writer.saved_note(len(paths))}; running the same command again predicts all {len(paths)} from the start"
        ) from None
    except BaseException:  # a crash of the model: the finished chunks are kept; say where, then let it surface
        print(f"{writer.saved_note(len(paths))} before the failure", file=sys.stderr)
        raise
    finally:
        writer.close()
    if point.refer_band is not None:
        print(f"{referred} of {len(paths) - failures} cells {REFER_TEXT}", file=sys.stderr)
    if several:
        print(f"warning: {several_cells_line(several)}", file=sys.stderr)
    if failures:
        print(
            f"{failures} of {len(paths)} files could not be read or had no cell found (the 'skipped' lines above)",
            file=sys.stderr,
        )
    if ignored:
        print(f"{len(ignored)} more ignored in the folders, not read (the 'ignored' lines above)", file=sys.stderr)
    return 1 if failures else 0


def tta_line(point: OperatingPoint, views: Sequence[str], run_dir: Path) -> str:
    """The header line of a ``--tta`` call: which views each image's probabilities are averaged over, and that the
    operating point deciding them was tuned (where it was tuned at all) on single-view probabilities, not on these."""
    head = f"test-time augmentation: each image's probabilities are the mean over its {len(views)} views"
    head += f" ({', '.join(views)})"
    tuned = (
        (["threshold"] if point.binary and point.source.startswith("val:") else [])
        + (["temperature"] if point.temperature != 1.0 else [])
        + (["refer band"] if point.refer_band is not None else [])
    )
    if not tuned:
        return f"{head}; the operating point was not tuned on any probabilities, with or without TTA"
    named = in_words(tuned)
    were, are = ("was", "is") if len(tuned) == 1 else ("were", "are")
    where = f" on {point.split}" if point.split else ""
    return (
        f"{head}; the operating point's {named} {were} chosen{where} without TTA, on single-view probabilities, and "
        f"{are} applied to these means untuned (`blastscope evaluate {run_dir} --tta` scores the run both ways)"
    )


def person_colours(
    classifier: Classifier, paths: list[Path], person_by: str
) -> tuple[list[str] | None, SubjectColour | None]:
    """Each file's person and their colour statistics over all ``paths`` (read once more, before the chunks are
    predicted), with one line on stderr saying how cells were grouped; (None, None) for a run that does not
    normalise colours per person."""
    from blastscope.data.people import group_people

    if not classifier.per_person:
        return None, None
    people = group_people(paths, person_by, readable=classifier.can_read)
    print(people.line, file=sys.stderr)
    return people.ids, classifier.fit_colour(paths, people.ids)


def predict_chunk(
    classifier: Classifier,
    chunk: list[Path],
    tta: bool,
    overlays: list[Path] | None = None,
    people: list[str] | None = None,
    colour: SubjectColour | None = None,
) -> list[Row]:
    """One row per file of ``chunk``, in order: its prediction, or why it could not be read or its cell not found.

    ``overlays`` (one path per file, :func:`gradcam_names`) saves each file's captioned Grad-CAM overlay there, and
    the rows then name it in a ``gradcam`` column (empty where none was saved). ``people`` (one per file) and
    ``colour`` (:func:`person_colours`) for a run that normalises colours per person: each row then also names its
    ``person``."""
    from blastscope.api.classifier import Prediction
    from blastscope.errors import ImageError

    images: dict[int, ModelInput] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(chunk):
        try:
            images[i] = classifier.prepare(path)
        except ImageError as error:
            errors[i] = error.reason
            print(f"skipped {error}", file=sys.stderr)
    ids = people or [""] * len(chunk)
    good = list(images)
    predicted = (  # a chunk of only failures predicts nothing
        classifier.predict(list(images.values()), tta=tta, people=[ids[i] for i in good], colour=colour)
        if images
        else []
    )
    predictions = dict(zip(images, predicted, strict=True))
    empty = dict.fromkeys(field.name for field in dataclasses.fields(Prediction))  # the columns of a good row
    rows: list[Row] = []
    for i, path in enumerate(chunk):
        saved = None
        if i in predictions and overlays is not None:
            prediction = predictions[i]
            explanation = classifier.explain(images[i], target=prediction.label, person=ids[i], colour=colour)
            if explanation.usable:
                picture, text = captioned_overlay(explanation, prediction, path)
                picture.save(overlays[i], pnginfo=text)
                saved = str(overlays[i])
            else:
                print(f"no Grad-CAM overlay for {path}: {explanation.note}", file=sys.stderr)
        found = predictions[i].to_dict() if i in predictions else empty
        rows.append(
            {
                **found,
                "file": str(path),
                **({} if overlays is None else {"gradcam": saved}),
                "error": errors.get(i),
                **_person(people, i),
            }
        )
    return rows


def _person(people: list[str] | None, index: int) -> Row:
    """The ``person`` column of a row, for a run that normalises colours per person; empty for others."""
    return {} if people is None else {"person": people[index] or "all"}


def expand_inputs(inputs: list[Path], ignored: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The image files to read. Files are taken as given (whatever their extension, so a bad one is reported);
    folders are searched for image files by the dataset scan's own finder: symlinked folders followed once, OS litter
    (``__MACOSX/``, ``._*``, ``.DS_Store``) dropped silently, and other hidden image files, folders that cannot be
    listed, special files (named pipes, devices) and files over the byte limit each named on an ``ignored`` line on
    stderr with the reason, and appended to ``ignored`` when it is given (so a summary can count them)."""
    from blastscope.data.files import find_image_files

    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = find_image_files(item)
            for path, reason in found.skipped:
                print(f"ignored {path}: {reason}", file=sys.stderr)
            if ignored is not None:
                ignored.extend(found.skipped)
            paths.extend(found.files)
        elif item.exists():
            paths.append(item)
        else:
            raise BlastscopeError(f"{item}: no such file or folder")
    if not paths:
        raise BlastscopeError(f"no image files in {', '.join(map(str, inputs))} (.png .jpg .bmp .tif .webp)")
    return paths


def gradcam_names(paths: Sequence[Path]) -> list[str]:
    """One overlay file name per input, so that no overlay overwrites another's: ``<stem>_gradcam.png`` for a stem no
    other input shares; for inputs that share one, their path from the folder they all lie in, extension kept
    (``p1_sub_c.webp_gradcam.png`` and ``p2_sub_c.webp_gradcam.png``; ``cell.png_gradcam.png`` and
    ``cell.webp_gradcam.png``), and a number (``_2``) only where even that is taken (a file given twice). Names are
    compared ignoring case, as macOS and Windows disks do, and depend only on ``paths``, in order."""
    stems = Counter(path.stem.casefold() for path in paths)
    parents: dict[str, list[str]] = {}
    for path in paths:
        if stems[path.stem.casefold()] > 1:
            parents.setdefault(path.stem.casefold(), []).append(os.path.abspath(path.parent))
    common = {stem: os.path.commonpath(folders) for stem, folders in parents.items()}
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        folder = common.get(path.stem.casefold())
        base = path.stem if folder is None else "_".join(Path(os.path.relpath(os.path.abspath(path), folder)).parts)
        name = f"{base}_gradcam.png"
        count = 1
        while name.casefold() in taken:
            count += 1
            name = f"{base}_{count}_gradcam.png"
        taken.add(name.casefold())
        names.append(name)
    return names


def captioned_overlay(explanation: Explanation, prediction: Prediction, path: Path) -> tuple[Image.Image, PngInfo]:
    """The overlay, unchanged, above a strip saying which class the map explains, the call with its probability and
    the threshold it was decided at (an overlay alone does not say whether it shows why a cell is ALL or HEM); with
    the same and the rest of the row (``path``, the probabilities, ``decided_by``, the layer, the overlay's box in the
    picture) as PNG text, ``Description`` and ``blastscope.gradcam`` (JSON)."""
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    lines = gradcam_caption(explanation.label, prediction)
    overlay = explanation.overlay
    font = _caption_font(max(CAPTION_MIN_PX, round(overlay.width * CAPTION_FRACTION)))
    ascent, descent = font.getmetrics()
    step, margin = ascent + descent + font.size // 4, font.size // 2
    width = max(overlay.width, math.ceil(max(font.getlength(line) for line in lines)) + 2 * margin)
    picture = Image.new("RGB", (width, overlay.height + 2 * margin + step * len(lines)), CAPTION_COLOR)
    left = (width - overlay.width) // 2
    picture.paste(overlay, (left, 0))
    draw = ImageDraw.Draw(picture)
    for index, line in enumerate(lines):
        draw.text((margin, overlay.height + margin + index * step), line, fill="white", font=font)
    about = {
        "file": str(path),
        "explained_class": explanation.label,
        "label": prediction.label,
        "probabilities": prediction.probabilities,
        "positive_class": prediction.positive_class,
        "threshold": prediction.threshold,
        "decided_by": prediction.decided_by,
        "referred": prediction.referred,
        "tta": prediction.tta,
        "layer": explanation.layer,
        "overlay_box": [left, 0, left + overlay.width, overlay.height],
    }
    text = PngInfo()
    text.add_text("Description", "\n".join(lines))
    text.add_text("blastscope.gradcam", json.dumps(about, ensure_ascii=False))
    return picture, text


def gradcam_caption(explained: str, prediction: Prediction) -> list[str]:
    """The caption's lines: ``Grad-CAM of HEM``, ``called HEM · p(HEM) 0.9425`` (``· uncertain — refer`` when
    referred), and ``ALL when p(ALL) ≥ 0.3538; here 0.0575`` (the threshold is on p(positive), whatever the call);
    for a multi-class run ``called other · p(other) 0.50`` and ``the most probable class wins (no threshold)``.
    Probabilities of a two-class run get 4 decimals, more where 4 would show p(positive) on the other side of the
    threshold (0.35379 as ``0.35379`` at 0.3538, not ``0.3538``)."""
    from blastscope.metrics import class_display_name as shown
    from blastscope.workflows.scan import REFER_TEXT

    label, positive, threshold = prediction.label, prediction.positive_class, prediction.threshold
    digits = 2
    if positive is not None and threshold is not None:
        p = prediction.probabilities[positive]
        digits = 4  # the fewest at which p and the threshold, both rounded, compare as they do unrounded
        while digits < 10 and (float(f"{p:.{digits}f}") >= float(f"{threshold:.{digits}f}")) != (p >= threshold):
            digits += 1
        rule = f"{shown(positive)} when p({shown(positive)}) ≥ {threshold:.{digits}f}; here {p:.{digits}f}"
    else:
        rule = "the most probable class wins (no threshold)"
    called = f"called {shown(label)} · p({shown(label)}) {prediction.probabilities[label]:.{digits}f}"
    return [f"Grad-CAM of {shown(explained)}", called + (f" · {REFER_TEXT}" if prediction.referred else ""), rule]


def _caption_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib, as the scan overlay's), at ``size`` px."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


class PredictionWriter:
    """Writes the rows of each chunk as soon as it is predicted, so that a full disk or a crash keeps what is done.

    CSV (``--out x.csv``, or stdout) is streamed: each chunk's rows are appended, flushed and synced to disk, and a
    write that fails is cut back to the last complete chunk, so the file always ends with a whole row. JSON, which is
    valid only once complete, is written at the end (whole or not at all); until then the rows are streamed to
    ``x.partial.csv`` next to it, which is deleted once the JSON file is in place and kept when the run stops early.
    The CSV columns are the rows' fields in order, ``probabilities`` spread into one ``p_<class>`` column per class.
    """

    def __init__(self, out: Path | None, classes: tuple[str, ...]) -> None:
        self.out, self.classes = out, classes
        self.json_rows: list[Row] | None = [] if out is not None and out.suffix.lower() == ".json" else None
        self.path = out.with_suffix(".partial.csv") if out is not None and self.json_rows is not None else out
        self.saved = 0
        self._header: list[str] | None = None
        self._file: BinaryIO | None = None
        self._complete = 0  # bytes of the file that hold whole chunks

    @property
    def where(self) -> str:
        return "stdout" if self.path is None else str(self.path)

    def saved_note(self, total: int) -> str:
        """How many of ``total`` predictions are kept, and where."""
        return f"{self.saved} of {total} predictions saved in {self.where}" if self.saved else "no predictions saved"

    def write_rows(self, rows: list[Row]) -> None:
        """Append ``rows`` (one chunk) to the CSV and make sure they are on disk before counting them as saved."""
        if not rows:
            return
        flat = [flat_row(row, self.classes) for row in rows]
        text = io.StringIO()
        if self._header is None:
            self._header = list(flat[0])
            csv.DictWriter(text, self._header).writeheader()
        csv.DictWriter(text, self._header).writerows(flat)
        if self.path is None:
            sys.stdout.write(text.getvalue())
            sys.stdout.flush()
        else:
            self._append(self.path, text.getvalue().encode("utf-8"))
        if self.json_rows is not None:
            self.json_rows.extend(rows)
        self.saved += len(rows)

    def finish(self) -> None:
        """Write the JSON file, whole, and remove the partial CSV; nothing to do for CSV output."""
        if self.out is None or self.json_rows is None:
            return
        rows = self.json_rows
        replace_whole(self.out, lambda path: path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8"))
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = self.out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, path: Path, data: bytes) -> None:
        if self._file is None:
            self._file = path.open("wb", buffering=0)
        try:
            view = memoryview(data)
            while view:  # an unbuffered write may write less than asked
                view = view[self._file.write(view) :]
            os.fsync(self._file.fileno())
        except OSError:
            os.ftruncate(self._file.fileno(), self._complete)  # frees space: works on a full disk too
            raise
        self._complete += len(data)


def flat_row(row: Row, classes: tuple[str, ...]) -> dict[str, str]:
    """A row as CSV cells: ``probabilities`` becomes ``p_<class>`` columns, None empty, and numbers in full (``repr``:
    the shortest text that reads back as the same float, as ``evaluate``'s CSV and every JSON write them), so a p within
    1e-6 of the threshold never reads as equal to it while called the other class."""
    flat: dict[str, str] = {}
    for key, value in row.items():
        if key == "probabilities":
            flat.update({f"p_{label}": _cell(value[label] if value else None) for label in classes})
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return repr(float(value))
    return str(value)
