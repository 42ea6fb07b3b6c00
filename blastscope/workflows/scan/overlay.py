"""The picture of a scan: the photograph with each white cell outlined in its class's colour and its call written
beside it, under a banner with the image's verdict.

Classes keep the report's colours (:func:`blastscope.evaluation.plots.class_colors`: the positive class, ALL, is
red). Each outline has a white halo so it stays visible on pink red cells; uncertain cells are dashed and tagged
"uncertain — refer" (:data:`~blastscope.workflows.scan.result.REFER_TEXT`), and cells left out (cut by the border,
too large) are dashed grey. The picture is drawn at a size a person reads on a screen: the longer side between
``OVERLAY_MIN_SIDE`` and ``OVERLAY_MAX_SIDE`` px, in DejaVu Sans (shipped with matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from blastscope.evaluation.plots import class_colors
from blastscope.metrics import class_display_name
from blastscope.workflows.scan.result import REFER_TEXT, ImageScan

OVERLAY_MAX_SIDE = 1280
OVERLAY_MIN_SIDE = 640
SKIPPED_COLOR = "#8a94a6"
REFER_COLOR = "#d68910"
BANNER_COLOR = "#1d2433"
_FONT_FRACTION = 1 / 42  # label text height, as a fraction of the overlay's longer side
_LINE_FRACTION = 1 / 280  # outline width, likewise
_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def draw_overlay(image: Image.Image, scan: ImageScan, classes: Sequence[str]) -> Image.Image:
    """The overlay of ``scan`` on its photograph.

    Parameters
    ----------
    image : PIL.Image.Image
        The RGB photograph the scan was made on (its own size; boxes and outlines are in its pixels).
    scan : ImageScan
        The cells, left-out cells and verdict to draw (its ``overlay`` is not read).
    classes : sequence of str
        The run's classes, which fix each class's colour.

    Returns
    -------
    PIL.Image.Image
        RGB, the photograph resized to a longer side of 640-1280 px under a verdict banner.
    """
    longest = max(image.size)
    zoom = min(OVERLAY_MAX_SIDE, max(OVERLAY_MIN_SIDE, longest)) / longest
    size = (round(image.width * zoom), round(image.height * zoom))
    photo = image.resize(size, Image.Resampling.LANCZOS) if zoom != 1 else image
    font_px = max(16, round(max(size) * _FONT_FRACTION))
    banner = round(font_px * 3.2)
    picture = Image.new("RGB", (size[0], size[1] + banner), BANNER_COLOR)
    picture.paste(photo, (0, banner))
    draw = ImageDraw.Draw(picture)
    line = max(3, round(max(size) * _LINE_FRACTION))
    font = _font(font_px, bold=True)
    colors = _colors(classes, scan.positive_class)
    for skipped in scan.skipped:
        points = _points(skipped.outline, zoom, banner)
        _dashed(draw, points, SKIPPED_COLOR, line, 3 * font_px // 4)
        why = "edge: not classified" if skipped.cut_by_border else "too large: not classified"
        _label(draw, why, skipped.box, zoom, banner, SKIPPED_COLOR, _font(font_px * 4 // 5))
    for cell in scan.cells:
        points = _points(cell.outline, zoom, banner)
        color = colors[cell.label]
        dash = font_px if cell.referred else 0
        _dashed(draw, points, "white", line + 4, dash)
        _dashed(draw, points, color, line, dash)
        text = f"{cell.index} {class_display_name(cell.label)} {100 * cell.probabilities[cell.label]:.0f}%"
        _label(draw, text + (f" · {REFER_TEXT}" if cell.referred else ""), cell.box, zoom, banner, color, font)
    _banner(draw, scan, colors, size[0], font_px)
    return picture


def _colors(classes: Sequence[str], positive: str | None) -> dict[str, str]:
    """The report's class colours, the positive class last (red)."""
    order = [name for name in classes if name != positive] + ([positive] if positive is not None else [])
    return class_colors(order)


def _points(outline: np.ndarray, zoom: float, top: int) -> list[tuple[float, float]]:
    return [(float(x) * zoom, float(y) * zoom + top) for x, y in outline]


@cache
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONTS / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def _dashed(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: str, width: int, dash: int) -> None:
    """A closed polyline drawn as dashes of ``dash`` px with gaps as long (``dash`` 0: a solid line)."""
    if len(points) < 2:
        return
    closed = np.asarray([*points, points[0]])
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    on = (along[:-1] // dash) % 2 == 0 if dash else np.ones(len(points), bool)
    start = None
    for index, drawn in enumerate([*on, False]):
        if drawn and start is None:
            start = index
        elif not drawn and start is not None:
            draw.line([tuple(p) for p in closed[start : index + 1]], fill=fill, width=width, joint="curve")
            start = None


def _label(
    draw: ImageDraw.ImageDraw,
    text: str,
    box: tuple[int, int, int, int],
    zoom: float,
    top: int,
    fill: str,
    font: ImageFont.FreeTypeFont,
) -> None:
    """White text on a ``fill`` tag centred just above the cell's box (below it, or inside, where there is no room)."""
    left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (lower - upper) // 4)
    width, height = right - left + 2 * pad, lower - upper + 2 * pad
    x0, y0, x1, y1 = (round(v * zoom) for v in box)
    picture_width, picture_height = draw.im.size  # the picture drawn on
    x = min(max(0, (x0 + x1 - width) // 2), max(0, picture_width - width))
    y = y0 + top - height - 2
    if y < top:
        y = y1 + top + 2 if y1 + top + 2 + height <= picture_height else y0 + top + 2
    draw.rectangle((x, y, x + width, y + height), fill=fill)
    draw.text((x + pad - left, y + pad - upper), text, fill="white", font=font)


def _banner(draw: ImageDraw.ImageDraw, scan: ImageScan, colors: dict[str, str], width: int, font_px: int) -> None:
    """The verdict on a coloured tag, and the cell counts after it, shrunk to fit the width."""
    chip = {
        "positive": colors.get(scan.positive_class or "", SKIPPED_COLOR),
        "refer": REFER_COLOR,
        "negative": next((c for name, c in colors.items() if name != scan.positive_class), SKIPPED_COLOR),
    }.get(scan.verdict, SKIPPED_COLOR)
    margin = font_px // 2
    font = _font(font_px, bold=True)
    verdict = scan.verdict_text
    left, upper, right, lower = draw.textbbox((0, 0), verdict, font=font)
    pad = font_px // 4
    draw.rectangle((margin, margin, margin + right - left + 2 * pad, margin + lower - upper + 2 * pad), fill=chip)
    draw.text((margin + pad - left, margin + pad - upper), verdict, fill="white", font=font)
    summary, size = scan.summary(), font_px * 4 // 5
    while size > 9 and draw.textlength(summary, font=_font(size)) > width - 2 * margin:
        size -= 1
    small = _font(size)
    draw.text((margin, margin + lower - upper + 2 * pad + font_px // 3), summary, fill="white", font=small)
