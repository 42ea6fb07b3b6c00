"""``blastscope scan``: a folder of smear photographs scanned with a tiny run, its files written and its summary
printed; an unreadable file, a grey photograph and a cell already on black listed and the exit status 1; Ctrl-C keeps
the photographs finished; a real BCCD photograph scanned where ../shared has it."""

from __future__ import annotations

import csv
import errno
import json
import shutil
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.api import load
from blastscope.api.classifier import Classifier
from blastscope.cli import main
from blastscope.errors import ImageTooLargeError
from blastscope.runs import load_run
from blastscope.runs.folder import write_operating_point


@pytest.fixture(scope="module")
def smear_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic 640x480 smear fields drawn by `blastscope synth --smear 2` (the second with a cell cut by the
    border), with their true boxes in smear_boxes.csv."""
    folder = tmp_path_factory.mktemp("smear")
    assert main(["synth", str(folder), "--smear", "2"]) == 0
    return folder


def test_a_folder_is_scanned_into_tables_overlays_and_a_summary(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), str(smear_folder), "--out", str(out)]) == 0
    truth = list(csv.DictReader((smear_folder / "smear_boxes.csv").open()))
    whole = [row for row in truth if row["cut_by_border"] == "False"]
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len(cells) == len(whole)
    assert {row["label"] for row in cells} <= {"all", "hem"}
    assert all(abs(float(row["p_all"]) + float(row["p_hem"]) - 1) < 1e-5 for row in cells)
    images = list(csv.DictReader((out / "images.csv").open()))
    assert [Path(row["image"]).name for row in images] == ["smear_000.png", "smear_001.png"]
    assert [int(row["n_cut_by_border"]) for row in images] == [0, 1]
    for row in images:
        assert Image.open(row["overlay"]).format == "PNG"
    document = json.loads((out / "scan.json").read_text())
    assert document["overall"]["n_cells"] == len(whole)
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert lines[0].endswith(f"{images[0]['summary']}; {images[0]['verdict_text']}")
    assert " of " in lines[0] and "white cells called ALL" in lines[0]
    assert lines[2] == document["overall"]["summary"] and lines[2].startswith("2 photographs scanned (")
    assert "decision: ALL when p(ALL) >= 0.5000" in printed.err
    assert "referral: no refer band" in printed.err  # worded as predict words it


def test_the_refer_band_is_printed_as_predict_prints_it(
    tiny_run_copy: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = load_run(tiny_run_copy)
    write_operating_point(
        tiny_run_copy, replace(run.operating_point, refer_band=(0.4627651221060277, 0.7715545443005776))
    )
    assert main(["scan", str(tiny_run_copy), str(smear_folder), "--out", str(tmp_path / "scan")]) == 0
    assert "referral: uncertain — refer when 0.4628 < p(ALL) < 0.7716" in capsys.readouterr().err


def test_tta_is_said_in_the_header_and_scan_json(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for tta in (False, True):
        out = tmp_path / f"scan-{tta}"
        assert main(["scan", str(tiny_run), str(smear_folder), "--out", str(out), *(["--tta"] * tta)]) == 0
        assert (
            "test-time augmentation: each image's probabilities are the mean over its 8 views"
            in capsys.readouterr().err
        ) is tta
        assert json.loads((out / "scan.json").read_text())["tta"] is tta


def test_an_unreadable_file_is_listed_and_the_status_is_1(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), str(smear_folder / "smear_000.png"), str(broken), "--out", str(out)]) == 1
    assert "skipped" in capsys.readouterr().err
    images = list(csv.DictReader((out / "images.csv").open()))
    assert images[1]["image"] == str(broken) and images[1]["error"]
    assert len(list((out / "overlays").iterdir())) == 1


def test_a_photograph_given_twice_is_scanned_once(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = smear_folder / "." / "smear_000.png"  # the folder names it too
    assert main(["scan", str(tiny_run), str(smear_folder), str(again), "--out", str(tmp_path / "scan")]) == 0

    printed = capsys.readouterr()
    images = list(csv.DictReader((tmp_path / "scan" / "images.csv").open()))
    assert [Path(row["image"]).name for row in images] == [
        "smear_000.png",
        "smear_001.png",
    ]  # was: 3, cells counted twice
    assert printed.out.splitlines()[2].startswith("2 photographs scanned (")
    assert f"ignored {again}: the same file as {smear_folder / 'smear_000.png'}, scanned once" in printed.err


def test_an_earlier_scan_in_the_folder_scanned_is_not_scanned_again(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(smear_folder, photos)
    command = ["scan", str(tiny_run), str(photos), "--out", str(photos / "scan")]
    assert main(command) == 0
    capsys.readouterr()

    assert main(command) == 0  # run again, as one does

    printed = capsys.readouterr()
    images = list(csv.DictReader((photos / "scan" / "images.csv").open()))
    assert [Path(row["image"]).name for row in images] == ["smear_000.png", "smear_001.png"]  # was: and 2 overlays
    assert f"ignored 2 files in {photos / 'scan'}: this scan's own output" in printed.err


def test_a_field_of_noise_says_no_white_cells_found_not_0_of_0(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(noise)
    assert main(["scan", str(tiny_run), str(noise), "--out", str(tmp_path / "scan")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{noise}: no white cells found"
    assert lines[1] == "1 photograph scanned (no white cell found: 1); no white cells found"
    assert not any("0 of 0" in line for line in lines)


def test_a_grey_photograph_is_listed_as_not_scanned_with_the_reason(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grey = tmp_path / "grey.png"
    Image.open(smear_folder / "smear_000.png").convert("L").save(grey)
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), str(grey), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"skipped {grey}: a grey photograph cannot be scanned" in captured.err
    assert "0 photographs scanned, 1 not scanned" in captured.out
    assert f"{grey}: not scanned: a grey photograph" in (out / "summary.txt").read_text()
    (row,) = csv.DictReader((out / "images.csv").open())
    assert "give a colour photograph" in row["error"] and "--segment" not in row["error"]  # scan has no --segment


def test_a_cell_already_on_black_is_listed_as_not_scanned_and_left_to_predict(
    tiny_run: Path, smear_folder: Path, cell_images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A C-NMC-like cut-out is not scanned as a field (rescaled, cut out again, called unlike predict calls it)."""
    cell, out = cell_images[0], tmp_path / "scan"
    assert main(["scan", str(tiny_run), str(smear_folder / "smear_000.png"), str(cell), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert (
        f"skipped {cell}: a single cut-out cell on black, not a smear photograph: classify it with `blastscope "
        "predict`" in captured.err
    )
    assert "1 photograph scanned, 1 not scanned" in captured.out
    assert f"{cell}: not scanned: a single cut-out cell on black" in (out / "summary.txt").read_text()
    rows = list(csv.DictReader((out / "images.csv").open()))
    assert rows[1]["image"] == str(cell) and rows[1]["error"].startswith("a single cut-out cell on black")
    assert {row["image"] for row in csv.DictReader((out / "cells.csv").open())} == {rows[0]["image"]}


def test_ctrl_c_writes_the_photographs_finished_and_says_so(
    tiny_run: Path,
    smear_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Interrupted on its second of three photographs, scan writes the first one's rows, not only its overlay, says in
    its summary and scan.json that it was interrupted after 1 of 3, and its last line says what to do (not train's)."""
    (tmp_path / "smear_002.png").write_bytes((smear_folder / "smear_000.png").read_bytes())  # a third photograph
    photos = [str(smear_folder / "smear_000.png"), str(smear_folder / "smear_001.png"), str(tmp_path / "smear_002.png")]
    scan, calls, out = Classifier.scan, [], tmp_path / "scan"

    def ctrl_c_on_the_second(self: Classifier, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return scan(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "scan", ctrl_c_on_the_second)
    assert main(["scan", str(tiny_run), *photos, "--out", str(out)]) == 130
    images = list(csv.DictReader((out / "images.csv").open()))
    assert [row["image"] for row in images] == photos[:1] and images[0]["overlay"]
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert len(cells) == int(images[0]["n_cells"]) > 0
    overall = json.loads((out / "scan.json").read_text())["overall"]
    assert overall["interrupted"] == {"after": 1, "of": 3}
    summary = (out / "summary.txt").read_text().splitlines()[-1]
    assert summary == overall["summary"] and summary.startswith("interrupted after 1 of 3 photographs: 1 photograph")
    captured = capsys.readouterr()
    assert summary in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last == (
        f"blastscope: interrupted; {out} holds the 1 of 3 photographs finished (its summary says it was interrupted); "
        "running the same command again scans all 3 from the start, replacing them"
    )


def test_a_full_disk_is_one_line_naming_the_file_and_what_was_kept(
    tiny_run: Path,
    smear_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = [str(smear_folder / "smear_000.png"), str(smear_folder / "smear_001.png")]
    save, out = Image.Image.save, tmp_path / "scan"

    def second_overlay_fills_the_disk(image: Image.Image, path: Path, *args: object, **kwargs: object) -> None:
        if Path(path).name.startswith("smear_001"):
            Path(path).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", second_overlay_fills_the_disk)
    assert main(["scan", str(tiny_run), *photos, "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    overlay = out / "overlays" / "smear_001_scan.png"
    assert line.startswith(f"blastscope: error: stopped: {overlay}: No space left on device; kept: 1 overlay in")
    assert "(1 photograph done), none of the tables;" in line and "free space or choose another --out" in line
    assert [path.name for path in (out / "overlays").iterdir()] == ["smear_000_scan.png"]  # no truncated overlay

    def tables_fill_the_disk(path: Path, *args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)
    monkeypatch.setattr(Path, "write_text", tables_fill_the_disk)
    assert main(["scan", str(tiny_run), photos[0], "--out", str(tmp_path / "again")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"stopped: {tmp_path / 'again' / 'scan.json'}: No space left on device" in line
    assert "done), cells.csv, images.csv;" in line and not (tmp_path / "again" / "scan.json").exists()


def test_bad_arguments_are_one_line_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tiny_run), str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("blastscope: error:") and "missing.jpg" in line
    for diameter in ("0", "-5", "inf", "3"):  # 3 px took minutes a photograph: --red-cell-diameter's refusals in
        with pytest.raises(SystemExit) as stop:  # test_arguments
            main(["scan", str(tiny_run), str(tmp_path), f"--red-cell-diameter={diameter}", "--out", "o"])
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()[-1:]
        assert line.startswith(f"blastscope scan: error: argument --red-cell-diameter: {diameter!r} is not a red cell")
        assert "at least 8" in line


def test_an_out_folder_whose_overlays_is_a_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the run loads, as an unwritable --out is (it stopped in a FileExistsError traceback)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "overlays").write_text("not a folder")
    assert main(["scan", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip()
    assert line == f"blastscope: error: {tmp_path / 'out' / 'overlays'} is a file, not a folder; choose another --out"


def test_a_red_cell_diameter_larger_than_the_photograph_lists_it_as_not_scanned(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "no white cells found" with exit status 0: no whole white cell could lie in the photograph at that scale."""
    photo = smear_folder / "smear_000.png"  # 640x480
    assert main(["scan", str(tiny_run), str(photo), "--red-cell-diameter", "1e9", "--out", str(tmp_path / "o")]) == 1
    assert f"skipped {photo}: red-cell diameter 1e+09 px is not below this 640x480 photograph's shorter side" in (
        capsys.readouterr().err
    )


def test_max_pixels_refuses_a_larger_photograph_as_predict_refuses_a_cell(
    tiny_run: Path, smear_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decoder's own limit and reason (the default: predict's and serve's, 50 Mpx), listed as not scanned."""
    from blastscope.cli import build_parser
    from blastscope.data.images import DEFAULT_MAX_PIXELS

    assert build_parser().parse_args(["scan", "run", "x.jpg"]).max_pixels == DEFAULT_MAX_PIXELS
    photo = smear_folder / "smear_000.png"  # 640x480
    assert main(["scan", str(tiny_run), str(photo), "--max-pixels", "3e5", "--out", str(tmp_path / "o")]) == 1
    assert (
        f"skipped {photo}: 640x480 = 307,200 pixels: over the limit of 300,000 pixels (a guard against "
        "decompression bombs)" in capsys.readouterr().err
    )
    (row,) = csv.DictReader((tmp_path / "o" / "images.csv").open())
    assert "over the limit of 300,000 pixels" in row["error"]
    (together,) = load(tiny_run).scan_together([photo], max_pixels=300_000)  # --person-by all's door
    assert isinstance(together, ImageTooLargeError)


def test_a_threshold_for_a_multi_class_run_is_refused_naming_scan(
    tiny_three_class_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photograph = tmp_path / "field.png"
    Image.new("RGB", (64, 64), (230, 200, 210)).save(photograph)
    args = ["scan", str(tiny_three_class_run), str(photograph), "--threshold", "0.3", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("blastscope: error: scan --threshold needs a two-class run")


def _voc_boxes(xml: Path, name: str) -> list[tuple[int, int, int, int]]:
    root = ElementTree.parse(xml).getroot()
    return [
        tuple(int(float(obj.find("bndbox").find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))
        for obj in root.iter("object")
        if obj.find("name").text == name
    ]


@pytest.mark.integration
def test_a_real_bccd_photograph_is_scanned(tiny_run: Path, bccd: Path, tmp_path: Path) -> None:
    """The README's command: BCCD's first photograph (MIT licence) holds one white cell, found where BCCD boxes it."""
    photo = bccd / "JPEGImages" / "BloodImage_00000.jpg"
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), str(photo), "--out", str(out)]) == 0
    overlay = Image.open(out / "overlays" / "BloodImage_00000_scan.png")
    assert overlay.width == 640 and overlay.height > 480
    (cell,) = list(csv.DictReader((out / "cells.csv").open()))
    (truth,) = _voc_boxes(bccd / "Annotations" / "BloodImage_00000.xml", "WBC")
    found = [int(cell[key]) for key in ("x0", "y0", "x1", "y1")]
    inter = max(0, min(found[2], truth[2]) - max(found[0], truth[0])) * max(
        0, min(found[3], truth[3]) - max(found[1], truth[1])
    )
    union = (found[2] - found[0]) * (found[3] - found[1]) + (truth[2] - truth[0]) * (truth[3] - truth[1]) - inter
    assert inter / union >= 0.5
