"""Scanning a smear photograph: every whole white cell found where it is, classified once on its cut-out, cells cut
by the border left out and counted, the verdict by the documented rule, boxes in the photograph's pixels at any
size, memory within the estimate a server reserves, and the files a folder's scan writes."""

from __future__ import annotations

import csv
import dataclasses
import json
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.api.classifier import Prediction
from blastscope.data.images import read_rgb
from blastscope.data.synth import smear_field
from blastscope.errors import ImageError
from blastscope.evaluation.plots import class_colors
from blastscope.inference.decision import OperatingPoint
from blastscope.workflows.scan import ImageScan, ScannedCell, ScanWriter, scan_photograph, scan_working_bytes, verdict
from blastscope.workflows.scan.overlay import REFER_TAG, cell_tag, tag_spot
from blastscope.workflows.scan.photograph import GREY_PHOTOGRAPH_REASON, MAX_WORKING_PIXELS, ON_BLACK_REASON

POINT = OperatingPoint(("hem", "all"), "all")
BANDED = OperatingPoint(("hem", "all"), "all", refer_band=(0.4, 0.6))


class Recorder:
    """A classifier stand-in: p(ALL) from a list, in order; remembers every cut-out it was given."""

    def __init__(self, p_all: Sequence[float] = ()) -> None:
        self.p_all, self.seen = list(p_all), []

    def __call__(self, canvases: Sequence[np.ndarray]) -> np.ndarray:
        self.seen += list(canvases)
        p = np.array([self.p_all[i] if i < len(self.p_all) else 0.9 for i in range(len(canvases))])
        return np.stack([1 - p, p], axis=1)


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


@pytest.fixture(scope="module")
def field():
    """Four whole white cells (the first two touching) and one cut by the border, 640x480 like a BCCD field."""
    return smear_field(0, height=480, width=640, white_cells=4, cut_cells=1)


def test_every_whole_cell_found_boxed_and_classified_once(field) -> None:
    classify = Recorder()
    scan = scan_photograph(Image.fromarray(field.image), classify, POINT, name="field.png")
    whole = [box for box, cut in zip(field.boxes, field.cut_by_border, strict=True) if not cut]
    assert len(scan.cells) == len(whole) == 4
    for box in whole:  # each true cell has its scanned cell, box within a few pixels
        assert max(_iou(box, cell.box) for cell in scan.cells) >= 0.9
    assert [cell.index for cell in scan.cells] == [1, 2, 3, 4]
    (cut,) = [box for box, cut in zip(field.boxes, field.cut_by_border, strict=True) if cut]
    (skipped,) = scan.skipped
    assert skipped.cut_by_border and _iou(cut, skipped.box) >= 0.9 and "border" in skipped.reason
    assert len(classify.seen) == 4  # one cut-out each, never the cut cell
    for canvas, cell in zip(classify.seen, scan.cells, strict=True):
        assert canvas.shape == (450, 450, 3) and canvas is cell.canvas
        assert not canvas[:20].any() and not canvas[:, :20].any()  # on black, like C-NMC
    assert all(
        cell.label == "all" and cell.probabilities == pytest.approx({"hem": 0.1, "all": 0.9}) for cell in scan.cells
    )
    assert scan.summary() == "4 of 4 white cells called ALL; 1 cut by the border, not classified"
    assert (scan.verdict, scan.verdict_text) == ("positive", "ALL cells present")


def test_centroids_and_outlines_lie_on_their_cells(field) -> None:
    scan = scan_photograph(Image.fromarray(field.image), Recorder(), POINT)
    for cell in scan.cells:
        x, y = (round(v) for v in cell.centroid)
        assert field.white_cells[y, x] > 0
        x0, y0, x1, y1 = cell.box
        outline = cell.outline
        assert len(outline) > 50
        assert (outline[:, 0] >= x0 - 1).all() and (outline[:, 0] <= x1).all()
        assert (outline[:, 1] >= y0 - 1).all() and (outline[:, 1] <= y1).all()


def test_a_larger_photograph_of_the_same_field_gives_the_same_cells_in_its_own_pixels(field) -> None:
    """Three times the pixels (a camera's 1920x1440): boxes scale with it, cut-outs keep C-NMC's scale."""
    small = scan_photograph(Image.fromarray(field.image), Recorder(), POINT)
    large = scan_photograph(
        Image.fromarray(field.image).resize((1920, 1440), Image.Resampling.BICUBIC), Recorder(), POINT
    )
    assert large.size == (1920, 1440) and len(large.cells) == len(small.cells)
    for a, b in zip(small.cells, large.cells, strict=True):
        assert np.allclose(np.multiply(a.box, 3), b.box, atol=6)
        area_a, area_b = (a.canvas.max(axis=2) > 0).sum(), (b.canvas.max(axis=2) > 0).sum()
        assert area_b == pytest.approx(area_a, rel=0.05)


def test_uncertain_cells_come_from_the_refer_band_and_refer_the_image(field) -> None:
    scan = scan_photograph(Image.fromarray(field.image), Recorder([0.55, 0.2, 0.1, 0.45]), BANDED)
    assert [(cell.label, cell.referred) for cell in scan.cells] == [
        ("all", True),
        ("hem", False),
        ("hem", False),
        ("hem", True),
    ]
    assert scan.summary().startswith("1 of 4 white cells called ALL (2 uncertain)")
    assert (scan.verdict, scan.verdict_text) == ("refer", "uncertain — refer")
    plain = scan_photograph(Image.fromarray(field.image), Recorder([0.55, 0.2, 0.1, 0.45]), POINT)
    assert not any(cell.referred for cell in plain.cells) and plain.verdict == "positive"  # no band: no referral


def _cell(label: str, uncertain: bool = False) -> ScannedCell:
    return ScannedCell(1, (0, 0, 1, 1), (0.0, 0.0), np.empty((0, 2)), label, {}, uncertain, np.empty((0, 0, 3)))


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ([], "no_white_cell"),
        ([_cell("hem"), _cell("all")], "positive"),
        ([_cell("all", True), _cell("all")], "positive"),
        ([_cell("all", True), _cell("hem")], "refer"),
        ([_cell("hem", True), _cell("hem")], "refer"),  # near the threshold on the HEM side: still a person's call
        ([_cell("hem"), _cell("hem")], "negative"),
    ],
)
def test_the_verdict_rule(cells: list[ScannedCell], expected: str) -> None:
    assert verdict(cells, "all") == expected
    assert verdict(cells, None) == ("no_white_cell" if not cells else "classified")


def test_a_field_without_white_cells_says_so(field) -> None:
    empty = smear_field(3, height=240, width=320, white_cells=0)
    scan = scan_photograph(Image.fromarray(empty.image), Recorder(), POINT)
    assert scan.cells == () and (scan.verdict, scan.verdict_text) == ("no_white_cell", "no white cell found")
    assert scan.summary() == "no white cells found"  # not "0 of 0 white cells called ALL"
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert scan_photograph(Image.fromarray(noise), Recorder(), POINT).summary() == "no white cells found"


def test_a_cell_already_on_black_is_refused_as_predicts_not_scanned_as_a_field(cell_images: list[Path]) -> None:
    """A C-NMC-like cut-out, in colour or grey, is no smear photograph: scanning it would rescale it and cut its cell
    out again, calling it unlike ``predict`` does. Refused with the reason, never classified."""
    for on_black in (Image.open(cell_images[0]), Image.open(cell_images[-1]).convert("L")):
        classify = Recorder()
        with pytest.raises(ImageError, match="cell.png: a single cut-out cell on black") as raised:
            scan_photograph(on_black, classify, POINT, name="cell.png")
        assert raised.value.reason == ON_BLACK_REASON and not classify.seen
    assert "`blastscope predict`" in ON_BLACK_REASON


def test_a_field_seen_through_a_black_eyepiece_circle_is_scanned_like_the_field(field) -> None:
    """Dark at its border like a cut-out, but a photograph: its white cells are found where the open field has them."""
    y, x = np.mgrid[: field.image.shape[0], : field.image.shape[1]]
    framed = field.image.copy()
    framed[np.hypot(y - y.mean(), x - x.mean()) > min(framed.shape[:2]) / 2] = 0
    open_field = scan_photograph(Image.fromarray(field.image), Recorder(), POINT)
    through_eyepiece = scan_photograph(Image.fromarray(framed), Recorder(), POINT)
    assert len(through_eyepiece.cells) == len(open_field.cells) == 4
    distances = [
        np.hypot(*np.subtract(seen.centroid, cell.centroid))
        for seen, cell in zip(through_eyepiece.cells, open_field.cells, strict=True)
    ]
    assert sorted(distances)[1] < 5  # two cells lie inside the circle; the circle cuts into the other two


def test_real_cells_on_black_and_a_grey_crop_on_black_are_refused(cases: Path) -> None:
    """The C-NMC-style cells of ../shared/cases/class-names (450 px) and its grey 16-bit crops on black."""
    images = sorted((cases / "class-names").rglob("*.png")) + sorted((cases / "decode").glob("gray16_*.tif"))
    assert len(images) == 10
    for path in images:
        with pytest.raises(ImageError) as raised:
            scan_photograph(read_rgb(path), Recorder(), POINT, name=path.name)
        assert raised.value.reason == ON_BLACK_REASON, path


@pytest.mark.parametrize("diameter", [480, 1e9])
def test_a_red_cell_diameter_the_photograph_cannot_hold_is_refused_not_scanned_into_no_cells(
    field, diameter: float
) -> None:
    """A red cell at least as wide as the 640x480 photograph's shorter side leaves no room for a whole white cell:
    refused with the range that works, never "no white cells found"."""
    classify = Recorder()
    with pytest.raises(ImageError, match=r"field.png: red-cell diameter .* px is not below") as raised:
        scan_photograph(Image.fromarray(field.image), classify, POINT, name="field.png", red_cell_diameter=diameter)
    assert "above 2 and below 480 px (by default 1/6.4 of the longer side: 100 px)" in raised.value.reason
    assert not classify.seen


def test_a_grey_photograph_is_refused_with_the_reason_not_scanned_wrongly(field, cell_images: list[Path]) -> None:
    classify = Recorder()
    with pytest.raises(ImageError, match="grey.png: a grey photograph cannot be scanned") as raised:
        scan_photograph(Image.fromarray(field.image).convert("L"), classify, POINT, name="grey.png")
    assert raised.value.reason == GREY_PHOTOGRAPH_REASON and not classify.seen
    assert "colour photograph" in GREY_PHOTOGRAPH_REASON and "--segment" not in GREY_PHOTOGRAPH_REASON  # no such option
    grey_on_black = Image.open(cell_images[0]).convert("L")  # not a grey photograph: a cut-out, refused as one
    with pytest.raises(ImageError) as raised:
        scan_photograph(grey_on_black, Recorder(), POINT)
    assert raised.value.reason == ON_BLACK_REASON


def test_the_overlay_shows_each_cell_in_its_class_colour(field) -> None:
    scan = scan_photograph(Image.fromarray(field.image), Recorder([0.9, 0.1, 0.1, 0.1]), POINT)
    overlay = np.asarray(scan.overlay)
    assert overlay.shape[1] == 640 and overlay.shape[0] > 480  # the photograph under a verdict banner
    colors = class_colors(["hem", "all"])
    for name, pixels in (("all", 300), ("hem", 900)):
        rgb = np.array([int(colors[name][i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(overlay.astype(int) - rgb).sum(axis=2) < 10).sum() > pixels, name
    small = scan_photograph(Image.fromarray(smear_field(1, height=240, width=320).image), Recorder(), POINT)
    assert max(small.overlay.size) == 640  # enlarged to be read on a screen


def _tag(label: str, probabilities: dict[str, float], referred: bool = False, positive: str | None = "all") -> str:
    """The overlay tag of cell 1, called ``label``, at a threshold of 0.7158 on p(``positive``) (none: multi-class)."""
    cell = ScannedCell(1, (0, 0, 1, 1), (0.0, 0.0), np.empty((0, 2)), label, probabilities, referred, np.empty(0))
    return cell_tag(cell, positive, 0.7158 if positive else None)


def test_a_cells_tag_gives_p_of_the_positive_class_whatever_its_call() -> None:
    """As the web page's table and predict do: a HEM call at p(ALL) 0.534 is "p(ALL) 0.53", not "HEM 47%" (which
    reads as "HEM, 47% sure"); more decimals only where two would put p on the threshold's other side."""
    assert _tag("hem", {"hem": 0.466, "all": 0.534}, referred=True) == f"1 HEM · p(ALL) 0.53 · {REFER_TAG}"
    assert _tag("all", {"hem": 0.1, "all": 0.9}) == "1 ALL · p(ALL) 0.90"
    assert _tag("hem", {"hem": 0.2845, "all": 0.7155}) == "1 HEM · p(ALL) 0.7155"  # not 0.72: over 0.7158
    three = {"mono": 0.8, "lymph": 0.15, "neut": 0.05}
    assert _tag("mono", three, positive=None) == "1 mono · p(mono) 0.80"  # multi-class: the called class's


def test_each_tag_sits_against_its_own_cell_and_on_no_other_tag(field) -> None:
    """The tags of a field's cells (the first two touching, one at the top edge) and the cell cut by the border: each
    touches its own box or lies inside it, and no two overlap, however much wider than its cell a tag is."""
    scan = scan_photograph(Image.fromarray(field.image), Recorder([0.534] * 4), BANDED)
    top = 60
    boxes = [(x0, y0 + top, x1, y1 + top) for x0, y0, x1, y1 in (c.box for c in (*scan.cells, *scan.skipped))]
    boxes.append((250, top, 400, top + 140))  # a cell against the banner: no room above it
    placed: list[tuple[int, int, int, int]] = []
    for index, box in enumerate(boxes):
        others = boxes[:index] + boxes[index + 1 :]
        placed.append(tag_spot((260, 26), box, others, placed, (640, 480 + top), top))
    for tag, box in zip(placed, boxes, strict=True):
        assert tag[1] >= top and tag[3] <= 480 + top and 0 <= tag[0] and tag[2] <= 640
        assert min(tag[2], box[2]) > max(tag[0], box[0])  # over its own box's columns
        assert tag[3] >= box[1] - 2 and tag[1] <= box[3] + 2  # touching its box above or below, or within it
    for i, a in enumerate(placed):
        assert all(min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]) for b in placed[i + 1 :])


def test_memory_stays_within_the_estimate_a_server_reserves(field) -> None:
    photograph = Image.fromarray(field.image).resize((2592, 1944), Image.Resampling.BICUBIC)
    tracemalloc.start()
    try:
        scan = scan_photograph(photograph, Recorder(), POINT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = scan_working_bytes(2592, 1944)
    assert len(scan.cells) == 4
    assert peak < estimate < 200 * 2**20, (peak, estimate)
    assert scan_working_bytes(8000, 6000, red_cell_diameter=20) < MAX_WORKING_PIXELS * 300  # capped, whatever the size


def test_the_writer_writes_tables_json_overlays_and_summary(field, tmp_path: Path) -> None:
    scan = scan_photograph(Image.fromarray(field.image), Recorder([0.9, 0.1, 0.1, 0.1]), POINT, name="a/field.png")
    writer = ScanWriter(tmp_path, POINT.classes, "all", {"model": "test"})
    line = writer.add(scan, Path("a/field.png"))
    assert line == "a/field.png: 1 of 4 white cells called ALL; 1 cut by the border, not classified; ALL cells present"
    writer.add(scan, Path("b/field.png"))  # same stem in another folder: its own overlay
    writer.add_error("c/broken.png", "cannot be decoded")
    written = writer.close()
    assert [path.name for path in written] == ["cells.csv", "images.csv", "scan.json", "summary.txt"]
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["b_field_scan.png", "field_scan.png"]
    cells = list(csv.DictReader((tmp_path / "cells.csv").open()))
    assert len(cells) == 8 and cells[0]["label"] == "all" and float(cells[0]["p_all"]) == pytest.approx(0.9)
    assert set(cells[0]) >= {"image", "cell", "centroid_x", "centroid_y", "x0", "y0", "x1", "y1", "referred"}
    images = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert [row["verdict"] for row in images] == ["positive", "positive", ""]
    assert images[2]["error"] == "cannot be decoded"
    document = json.loads((tmp_path / "scan.json").read_text())
    assert document["model"] == "test" and len(document["images"]) == 3
    overall = document["overall"]
    assert (overall["photographs"], overall["failed"], overall["n_cells"], overall["n_positive"]) == (2, 1, 8, 2)
    assert overall["summary"] == (
        "2 photographs scanned, 1 not scanned (ALL cells present: 2); "
        "2 of 8 white cells called ALL, 2 cut by the border"
    )
    assert (tmp_path / "summary.txt").read_text().splitlines()[-1] == overall["summary"]
    assert overall["interrupted"] is None


def test_a_scan_into_an_earlier_scans_folder_leaves_none_of_its_overlays(field, tmp_path: Path) -> None:
    """Re-run into the same --out with fewer photographs: overlays/ holds this scan's overlays only, as the tables
    do (an earlier overlay could show a call made at another threshold); other files there are kept."""
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays" / "gone_scan.png").write_bytes(b"an earlier scan's overlay")
    (tmp_path / "overlays" / "notes.txt").write_text("the user's")
    (tmp_path / "overlays" / "kept_scan.png").mkdir()  # a folder, whatever its name: not an overlay
    scan = scan_photograph(Image.fromarray(field.image), Recorder(), POINT, name="field.png")
    writer = ScanWriter(tmp_path, POINT.classes, "all", {})
    writer.add(scan, Path("field.png"))
    writer.close()
    assert sorted(path.name for path in (tmp_path / "overlays").iterdir()) == [
        "field_scan.png",
        "kept_scan.png",
        "notes.txt",
    ]


def test_each_cell_row_says_what_its_probability_was_compared_with_as_predicts_csv_does(field, tmp_path: Path) -> None:
    """cells.csv alone tells the decision: predict's column names, in predict's order (after the probabilities),
    empty for a multi-class run, which has no positive class or threshold."""
    given = OperatingPoint(("hem", "all"), "all", threshold=0.3, source="given", chosen_by="scan --threshold")
    three = OperatingPoint(("all", "hem", "other"), None)
    for point, folder in ((given, tmp_path / "two"), (three, tmp_path / "three")):
        classify = Recorder() if point.binary else lambda canvases: np.tile([0.6, 0.3, 0.1], (len(canvases), 1))
        scan = scan_photograph(Image.fromarray(field.image), classify, point, name="field.png")
        writer = ScanWriter(folder, point.classes, point.positive_class, {})
        writer.add(scan, Path("field.png"))
        writer.close()
        with (folder / "cells.csv").open() as handle:
            reader = csv.DictReader(handle)
            header, rows = list(reader.fieldnames or ()), list(reader)
        predict_columns = [field.name for field in dataclasses.fields(Prediction)]
        assert header[header.index("label") :] == [
            "label",
            *(f"p_{name}" for name in point.classes),
            *(name for name in predict_columns if name in {"positive_class", "threshold", "decided_by"}),
            "referred",
        ]
        assert len(rows) == 4
        decision = {(row["positive_class"], row["threshold"], row["decided_by"]) for row in rows}
        expected = ("all", "0.3", given.origin()) if point is given else ("", "", three.origin())
        assert decision == {expected}


def test_cells_csv_numbers_read_back_as_each_cell_was_decided_within_1e_6_of_the_threshold(
    field, tmp_path: Path
) -> None:
    """At 6 decimals p(ALL) 0.2999996 read as the threshold 0.300000, yet the cell was called HEM."""
    point = OperatingPoint(("hem", "all"), "all", threshold=0.3, source="given", chosen_by="scan --threshold")
    p_all = [0.3 - 4e-7, 0.3, 0.3 + 4e-7, 0.9]
    scan = scan_photograph(Image.fromarray(field.image), Recorder(p_all), point, name="field.png")
    writer = ScanWriter(tmp_path, point.classes, point.positive_class, {})
    writer.add(scan, Path("field.png"))
    writer.close()
    with (tmp_path / "cells.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["p_all"]) for row in rows) == p_all
    assert [row["label"] == "all" for row in rows] == [float(row["p_all"]) >= float(row["threshold"]) for row in rows]
    assert {row["threshold"] for row in rows} == {"0.3"}


def test_an_interrupted_scan_writes_what_it_finished_and_says_so(field, tmp_path: Path) -> None:
    """Ctrl-C after 2 of 5 photographs: the tables, JSON and summary hold those 2, and say they are 2 of 5."""
    scan = scan_photograph(Image.fromarray(field.image), Recorder([0.9, 0.1, 0.1, 0.1]), POINT, name="a.png")
    writer = ScanWriter(tmp_path, POINT.classes, "all", {"model": "test"})
    writer.add(scan, Path("a.png"))
    writer.add_error("b.png", "cannot be decoded")
    writer.interrupted(5)
    writer.close()
    overall = json.loads((tmp_path / "scan.json").read_text())["overall"]
    assert overall["interrupted"] == {"after": 2, "of": 5}
    assert overall["summary"].startswith("interrupted after 2 of 5 photographs: 1 photograph scanned, 1 not scanned")
    assert (tmp_path / "summary.txt").read_text().splitlines()[-1] == overall["summary"]
    assert len(list(csv.DictReader((tmp_path / "cells.csv").open()))) == 4
    assert [row["image"] for row in csv.DictReader((tmp_path / "images.csv").open())] == ["a.png", "b.png"]


def test_an_image_scan_is_json_ready(field) -> None:
    scan: ImageScan = scan_photograph(Image.fromarray(field.image), Recorder(), POINT, name="f.png")
    data = json.loads(json.dumps(scan.to_dict()))
    assert data["n_cells"] == 4 and data["n_cut_by_border"] == 1 and data["verdict_text"] == "ALL cells present"
    assert data["cells"][0]["probabilities"]["all"] == pytest.approx(0.9)
