"""The picture of a scan: the photograph with each white cell outlined in its class's colour and its call written
against it, under a banner with the image's verdict.

Classes keep the report's colours (:func:`blastscope.evaluation.plots.class_colors`: the positive class, ALL, is
red). Each outline has a white halo so it stays visible on pink red cells. A cell's tag gives its number, its call and
p(positive), as the web page's table and ``predict`` give it (``1 HEM · p(ALL) 0.53 · refer``: a tag reading "HEM
47%" would read as "HEM, 47% sure"); uncertain cells are dashed and tagged "refer" (the verdict's
:data:`~blastscope.workflows.scan.result.REFER_TEXT`, short), and cells left out (cut by the border, too large) are
dashed grey. Each tag sits against its own cell's box, where it covers the fewest other tags and cells. The picture
is drawn at a size a person reads on a screen: the longer side between ``OVERLAY_MIN_SIDE`` and ``OVERLAY_MAX_SIDE``
px, in DejaVu Sans (shipped with matplotlib).
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
from blastscope.workflows.scan.result import ImageScan, ScannedCell

OVERLAY_MAX_SIDE = 1280
OVERLAY_MIN_SIDE = 640
SKIPPED_COLOR = "#8a94a6"
REFER_COLOR = "#d68910"
BANNER_COLOR = "#1d2433"
_FONT_FRACTION = 1 / 42  # label text height, as a fraction of the overlay's longer side
_LINE_FRACTION = 1 / 280  # outline width, likewise
_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
REFER_TAG = "refer"
"""What an uncertain cell's tag adds: the verdict's "uncertain — refer", short enough for a tag."""

Rect = tuple[int, int, int, int]


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
    tags: list[tuple[str, Rect, str, ImageFont.FreeTypeFont]] = []  # the cells' first: they get the best places
    for cell in scan.cells:
        points = _points(cell.outline, zoom, banner)
        color = colors[cell.label]
        dash = font_px if cell.referred else 0
        _dashed(draw, points, "white", line + 4, dash)
        _dashed(draw, points, color, line, dash)
        tags.append((cell_tag(cell, scan.positive_class, scan.threshold), _zoomed(cell.box, zoom, banner), color, font))
    for skipped in scan.skipped:
        points = _points(skipped.outline, zoom, banner)
        _dashed(draw, points, SKIPPED_COLOR, line, 3 * font_px // 4)
        why = "edge: not classified" if skipped.cut_by_border else "too large: not classified"
        tags.append((why, _zoomed(skipped.box, zoom, banner), SKIPPED_COLOR, _font(font_px * 4 // 5)))
    boxes = [box for _, box, _, _ in tags]
    placed: list[Rect] = []
    for index, (text, box, fill, tag_font) in enumerate(tags):
        others = boxes[:index] + boxes[index + 1 :]
        placed.append(_label(draw, text, box, fill, tag_font, others, placed, banner))
    _banner(draw, scan, colors, size[0], font_px)
    return picture


def cell_tag(cell: ScannedCell, positive: str | None, threshold: float | None) -> str:
    """``1 HEM · p(ALL) 0.53 · refer``: number, call, p(positive) (p(called class) for a multi-class run) and
    :data:`REFER_TAG` when uncertain. Two decimals, more where two would put p on the other side of the threshold."""
    shown = positive if positive is not None else cell.label
    p = cell.probabilities[shown]
    digits = 2
    while threshold is not None and digits < 6 and (float(f"{p:.{digits}f}") >= threshold) != (p >= threshold):
        digits += 1
    text = f"{cell.index} {class_display_name(cell.label)} · p({class_display_name(shown)}) {p:.{digits}f}"
    return f"{text} · {REFER_TAG}" if cell.referred else text


def _zoomed(box: tuple[int, int, int, int], zoom: float, top: int) -> Rect:
    """A photograph box in the picture's px (zoomed, under the banner)."""
    x0, y0, x1, y1 = (round(v * zoom) for v in box)
    return x0, y0 + top, x1, y1 + top


def _overlap(a: Rect, b: Rect) -> int:
    """Area shared by two rectangles, px."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


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
    box: Rect,
    fill: str,
    font: ImageFont.FreeTypeFont,
    others: Sequence[Rect],
    placed: Sequence[Rect],
    top: int,
) -> Rect:
    """White text on a ``fill`` tag against ``box`` (picture px), where :func:`tag_spot` puts it; returns the tag."""
    left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (lower - upper) // 4)
    size = (right - left + 2 * pad, lower - upper + 2 * pad)
    tag = tag_spot(size, box, others, placed, draw.im.size, top)
    draw.rectangle(tag, fill=fill)
    draw.text((tag[0] + pad - left, tag[1] + pad - upper), text, fill="white", font=font)
    return tag


def tag_spot(
    size: tuple[int, int],
    box: Rect,
    others: Sequence[Rect],
    placed: Sequence[Rect],
    picture: tuple[int, int],
    top: int,
) -> Rect:
    """Where a tag of ``size`` (width, height) goes for the cell in ``box``: above it, below it or inside its top or
    bottom edge, centred on it or flush with one of its sides, at the spot covering the fewest ``placed`` tags
    (first) and ``others``' boxes, within ``picture`` (width, height) below ``top`` (the banner).

    Against its own box, a tag cannot be read as a neighbour's, as one centred above a box narrower than it can.

    Returns
    -------
    tuple of int
        The tag's ``(x0, y0, x1, y1)``, picture px.
    """
    width, height = size
    x0, y0, x1, y1 = box
    rows = (y0 - height - 2, y1 + 2, y0 + 2, y1 - height - 2)  # above, below, inside the top, inside the bottom
    columns = ((x0 + x1 - width) // 2, x0, x1 - width)  # centred, flush left, flush right
    spots = [
        (min(max(0, x), max(0, picture[0] - width)), y)
        for y in rows
        for x in columns
        if y >= top and y + height <= picture[1]
    ] or [(min(max(0, columns[0]), max(0, picture[0] - width)), top)]

    def cost(rank: int, spot: tuple[int, int]) -> float:
        tag = (spot[0], spot[1], spot[0] + width, spot[1] + height)
        covered = 16 * sum(_overlap(tag, other) for other in placed) + sum(_overlap(tag, other) for other in others)
        return covered + _overlap(tag, box) / 4 + rank  # its own cell covered a little; ties to the earlier spot

    x, y = min(enumerate(spots), key=lambda ranked: cost(*ranked))[1]
    return x, y, x + width, y + height


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
