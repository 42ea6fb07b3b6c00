"""`blastscope predict` on a real tiny run: good and bad files, CSV/JSON output, Grad-CAM overlays, exit status."""

from __future__ import annotations

import csv
import errno
import faulthandler
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.api import load
from blastscope.api.classifier import Classifier, Prediction
from blastscope.cli import build_parser, main
from blastscope.cli.predict import gradcam_caption, gradcam_names, tta_line
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.gradcam import Explanation
from blastscope.inference.tta import VIEW_NAMES
from blastscope.runs import load_run


@pytest.fixture
def run_dir(tiny_run_copy: Path) -> Path:
    return tiny_run_copy


@pytest.fixture
def images(synth_small: Path, tmp_path: Path) -> Path:
    """A folder of three real cells, one corrupt file, one empty file, and a text file that is skipped by extension."""
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted(synth_small.rglob("*.png"))[:3]:
        shutil.copy(source, folder / source.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_csv_lists_every_image_and_every_failure(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(images), "--out", str(out)]) == 1
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open())}
    assert list(rows) == sorted(p.name for p in images.iterdir() if p.suffix != ".txt")  # input order, failures too
    for name in ("corrupt.png", "empty.jpg"):
        assert rows[name]["label"] == "" and rows[name]["error"]
    good = [row for row in rows.values() if not row["error"]]
    assert len(good) == 3
    for row in good:
        assert row["label"] in {"all", "hem"}
        assert float(row["p_all"]) + float(row["p_hem"]) == pytest.approx(1.0, abs=1e-5)
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "empty.jpg" in err and "2 of 5 files could not be read" in err


def test_a_temperature_at_a_bound_of_its_fit_is_one_warning_line(
    run_dir: Path, images: Path, tmp_path: Path, capsys
) -> None:
    from blastscope.runs.folder import write_operating_point

    write_operating_point(run_dir, replace(load_run(run_dir).operating_point, temperature=0.05, n_cells=16))
    main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "preds.csv")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: temperature")]
    assert len(warnings) == 1 and "0.05 (fitted on 16 validation cells) sits at the lower bound" in warnings[0]


def test_a_run_whose_training_did_not_end_is_warned_of(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    (run_dir / "metrics.json").unlink()  # killed, or still training: its best checkpoint is only the best so far
    main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "preds.csv")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {run_dir}: training did not end (no metrics.json), so these are the weights saved so far, not the "
        f"finished run's; `blastscope train --resume {run_dir}` finishes it"
    ]


def test_a_given_threshold_is_credited_to_the_command(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(images), "--threshold", "0.3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "decision: ALL when p(ALL) >= 0.3000 (threshold given, by predict --threshold)" in err.splitlines()
    good = {(row["threshold"], row["decided_by"]) for row in csv.DictReader(out.open()) if not row["error"]}
    assert good == {("0.3", "threshold given, by predict --threshold")}


def test_a_threshold_for_a_multi_class_run_is_a_one_line_error(
    tiny_three_class_run: Path, images: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tiny_three_class_run), str(images), "--threshold", "0.3", "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"blastscope: error: predict --threshold needs a two-class run; {tiny_three_class_run} has 3 classes "
        "(all, hem, other), decided by the most probable class"
    ]
    assert not out.exists()


def test_json_and_gradcam_for_good_files(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    good = sorted(images.glob("UID_*.png"))
    out, overlays = tmp_path / "preds.json", tmp_path / "gradcam"
    assert main(["predict", str(run_dir), *map(str, good), "--out", str(out), "--gradcam", str(overlays), "--tta"]) == 0
    rows = json.loads(out.read_text())
    assert [row["file"] for row in rows] == list(map(str, good))
    assert all(row["error"] is None and set(row["probabilities"]) == {"all", "hem"} for row in rows)
    assert all(row["tta"] is True for row in rows)  # each row says its probabilities are the 8 views' mean
    tta_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("test-time augmentation")]
    assert len(tta_lines) == 1 and f"8 views ({', '.join(VIEW_NAMES)})" in tta_lines[0]
    assert not (tmp_path / "preds.partial.csv").exists()  # the rows streamed there while predicting are in the JSON
    assert [row["gradcam"] for row in rows] == [str(overlays / f"{path.stem}_gradcam.png") for path in good]
    for row in rows:
        picture = Image.open(row["gradcam"])
        box = json.loads(picture.info["blastscope.gradcam"])["overlay_box"]
        assert picture.mode == "RGB" and picture.crop(box).size == (32, 32)  # the model's input, under its caption


def test_inputs_sharing_a_name_get_their_own_overlays_and_each_row_names_its_own(
    run_dir: Path, synth_small: Path, tmp_path: Path
) -> None:
    """p1/sub/c.png (an ALL cell) and p2/sub/c.png (a HEM cell), and cell.png beside cell.webp, once made two
    overlays of four images, the second of each pair written over the first without a word."""
    files = sorted(synth_small.rglob("*.png"))
    blast, normal = (next(path for path in files if path.parent.name == name) for name in ("all", "hem"))
    for folder, source in (("p1", blast), ("p2", normal)):
        (tmp_path / folder / "sub").mkdir(parents=True)
        shutil.copy(source, tmp_path / folder / "sub" / "c.png")
    pair = tmp_path / "dupB"
    pair.mkdir()
    shutil.copy(blast, pair / "cell.png")
    Image.open(normal).save(pair / "cell.webp", lossless=True)
    overlays, out = tmp_path / "gradcam", tmp_path / "preds.csv"
    inputs = [tmp_path / "p1", tmp_path / "p2", pair]
    assert main(["predict", str(run_dir), *map(str, inputs), "--gradcam", str(overlays), "--out", str(out)]) == 0

    saved = {Path(row["file"]).relative_to(tmp_path).as_posix(): row["gradcam"] for row in csv.DictReader(out.open())}
    assert saved == {
        "p1/sub/c.png": str(overlays / "p1_sub_c.png_gradcam.png"),
        "p2/sub/c.png": str(overlays / "p2_sub_c.png_gradcam.png"),
        "dupB/cell.png": str(overlays / "cell.png_gradcam.png"),
        "dupB/cell.webp": str(overlays / "cell.webp_gradcam.png"),
    }
    assert sorted(overlays.iterdir()) == sorted(map(Path, saved.values()))
    for file, overlay in saved.items():  # each overlay is its own image's
        assert json.loads(Image.open(overlay).info["blastscope.gradcam"])["file"] == str(tmp_path / file)
    first, second = (np.asarray(Image.open(saved[f"{name}/sub/c.png"])) for name in ("p1", "p2"))
    assert not np.array_equal(first, second)


def test_a_map_that_shows_nothing_leaves_the_gradcam_column_empty(
    run_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def flat(self: Classifier, image: object, target: str | None = None, **kwargs: object) -> Explanation:
        return Explanation(str(target), np.zeros((8, 8), np.float32), Image.new("RGB", (8, 8)), "bn2", (1, 1))

    monkeypatch.setattr(Classifier, "explain", flat)
    overlays, out = tmp_path / "gradcam", tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(images), "--gradcam", str(overlays), "--out", str(out)]) == 1
    assert {row["gradcam"] for row in csv.DictReader(out.open())} == {""}  # the failed files' rows too
    assert not any(overlays.iterdir()) and "no Grad-CAM overlay for " in capsys.readouterr().err


def test_overlay_names_are_unique_ignoring_case_and_depend_only_on_the_inputs() -> None:
    paths = [
        Path("a/x.png"),
        Path("b/x.png"),
        Path("a/X.jpg"),  # the same name as a/x.png's on a macOS or Windows disk, were the extension dropped
        Path("solo.png"),
        Path("y.png"),
        Path("y.png"),  # one file given twice
        Path("a_b/c/z.png"),
        Path("a/b_c/z.png"),  # flattened, the same path as the one before
    ]
    names = gradcam_names(paths)
    assert names == [
        "a_x.png_gradcam.png",
        "b_x.png_gradcam.png",
        "a_X.jpg_gradcam.png",
        "solo_gradcam.png",
        "y.png_gradcam.png",
        "y.png_2_gradcam.png",
        "a_b_c_z.png_gradcam.png",
        "a_b_c_z.png_2_gradcam.png",
    ]
    assert gradcam_names(list(paths)) == names and gradcam_names(paths[3:4]) == ["solo_gradcam.png"]


def test_an_overlay_is_captioned_with_what_it_explains_above_the_map_unchanged(
    run_dir: Path, images: Path, tmp_path: Path
) -> None:
    """Which class the map explains, the call and its probability and the threshold, in the picture and in its PNG
    text; the overlay itself is the one ``explain`` gives, pixel for pixel."""
    path = sorted(images.glob("UID_*.png"))[0]
    overlays, out = tmp_path / "gradcam", tmp_path / "preds.json"
    assert (
        main(["predict", str(run_dir), str(path), "--gradcam", str(overlays), "--out", str(out), "--threshold", "0.3"])
        == 0
    )
    row = json.loads(out.read_text())[0]
    picture = Image.open(row["gradcam"])
    about = json.loads(picture.info["blastscope.gradcam"])
    overlay = load(run_dir, backend="torch").explain(path, target=row["label"]).overlay
    np.testing.assert_array_equal(np.asarray(picture.crop(about["overlay_box"])), np.asarray(overlay))
    label, p_all = row["label"].upper(), row["probabilities"]["all"]
    assert picture.info["Description"].splitlines() == [
        f"Grad-CAM of {label}",
        f"called {label} · p({label}) {row['probabilities'][row['label']]:.4f}",
        f"ALL when p(ALL) ≥ 0.3000; here {p_all:.4f}",
    ]
    assert {key: about[key] for key in ("explained_class", "label", "positive_class", "threshold")} == {
        "explained_class": row["label"],
        "label": row["label"],
        "positive_class": "all",
        "threshold": 0.3,
    }
    strip = np.asarray(picture)[overlay.height :]
    assert strip.shape[0] > 30 and strip.max() == 255  # white text on the caption strip


def test_the_caption_shows_p_on_the_side_of_the_threshold_it_is_on() -> None:
    """Rounded to 4 decimals, 0.35379 would read as 0.3538, at the threshold of 0.3538 it is under."""
    under = Prediction("c.png", "hem", {"hem": 0.64621, "all": 0.35379}, "all", 0.3538, "given", referred=True)
    assert gradcam_caption("hem", under) == [
        "Grad-CAM of HEM",
        "called HEM · p(HEM) 0.64621 · uncertain — refer",
        "ALL when p(ALL) ≥ 0.35380; here 0.35379",
    ]
    three = Prediction("c.png", "other", {"all": 0.2, "hem": 0.3, "other": 0.5}, None, None, "by train")
    assert gradcam_caption("all", three) == [
        "Grad-CAM of ALL",
        "called other · p(other) 0.50",
        "the most probable class wins (no threshold)",
    ]


def test_rows_name_the_class_the_threshold_is_on(
    run_dir: Path, tiny_three_class_run: Path, images: Path, tmp_path: Path
) -> None:
    """A saved threshold of 0.35 is on p(ALL), not p(HEM); a multi-class run has neither (the most probable class)."""
    good = sorted(images.glob("UID_*.png"))
    point = load_run(run_dir).operating_point
    for run, expected in (
        (run_dir, (point.positive_class, repr(point.threshold))),
        (tiny_three_class_run, ("", "")),
    ):
        out = tmp_path / "preds.csv"
        assert main(["predict", str(run), *map(str, good), "--out", str(out)]) == 0
        assert {(row["positive_class"], row["threshold"]) for row in csv.DictReader(out.open())} == {expected}


def test_csv_numbers_read_back_as_the_cell_was_decided_within_1e_6_of_the_threshold(
    run_dir: Path, images: Path, tmp_path: Path
) -> None:
    """At 6 decimals a p(ALL) 4e-7 under the threshold read equal to it, yet the cell was called HEM."""
    first = sorted(images.glob("UID_*.png"))[0]
    p_all = load(run_dir).predict([first])[0].probabilities["all"]
    out = tmp_path / "preds.csv"
    for threshold in (p_all + 4e-7, p_all):
        assert main(["predict", str(run_dir), str(first), "--threshold", repr(threshold), "--out", str(out)]) == 0
        (row,) = csv.DictReader(out.open())
        assert (float(row["p_all"]), float(row["threshold"])) == (p_all, threshold)
        assert (row["label"] == "all") == (float(row["p_all"]) >= float(row["threshold"]))


def test_stdout_table_when_no_out(run_dir: Path, images: Path, capsys) -> None:
    first = sorted(images.glob("UID_*.png"))[0]
    assert main(["predict", str(run_dir), str(first), "--backend", "torch"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = "file,label,p_hem,p_all,positive_class,threshold,decided_by,segmented,tta,referred,white_cells,error"
    assert lines[0] == header
    assert lines[1].startswith(str(first)) and lines[1].endswith(",False,False,False,,")  # not cut out: not counted
    assert "test-time augmentation" not in capsys.readouterr().err


def test_the_tta_line_names_the_views_and_what_was_tuned_without_them() -> None:
    """The operating point is chosen on single-view probabilities; the line says which of its parts were, if any."""
    run = Path("runs/x")
    stored = OperatingPoint(
        ("hem", "all"), "all", 0.42, 0.6, "val:weighted_f1", "val", 240, 0.88, "evaluate", refer_band=(0.4, 0.6)
    )
    line = tta_line(stored, VIEW_NAMES, run)
    assert line.startswith(
        f"test-time augmentation: each image's probabilities are the mean over its 8 views ({', '.join(VIEW_NAMES)})"
    )
    assert "threshold, temperature and refer band were chosen on val without TTA" in line
    assert "`blastscope evaluate runs/x --tta`" in line
    given = stored.with_threshold(0.3, "predict --threshold")
    assert "the operating point's temperature was chosen without TTA" in tta_line(given, VIEW_NAMES, run)
    default = OperatingPoint.default(("hem", "all"), "all")
    assert tta_line(default, VIEW_NAMES, run).endswith(
        "the operating point was not tuned on any probabilities, with or without TTA"
    )


def test_user_errors_exit_2(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    assert main(["predict", str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert main(["predict", str(run_dir), str(images), "--backend", "onnx"]) == 2
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "preds.xlsx")]) == 2
    assert main(["predict", str(tmp_path), str(images)]) == 2
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "no" / "preds.csv")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert "does not exist" in errors[4]
    assert len(errors) == 5 and all(line.startswith("blastscope: error: ") for line in errors)


@pytest.mark.parametrize(
    ("option", "bad", "refusal"),
    [
        *(
            ("--batch-size", bad, "is not a batch size; give a whole number of at least 1, e.g. 32")
            for bad in ("0", "-1", "1.5", "many")
        ),
    ],
)
def test_unusable_numbers_are_refused_by_argparse_in_one_line_naming_the_option(
    option: str, bad: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As scan and serve refuse them, before the run loads (--batch-size 0 was refused in run(), --red-cell-diameter
    3 taken: a photograph took minutes at 3 px)."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["predict", "run", "x.png", f"{option}={bad}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blastscope predict: error: argument {option}: {bad!r} {refusal}"
    )


def test_the_smallest_usable_numbers_are_taken() -> None:
    args = build_parser().parse_args(["predict", "run", "x.png", "--batch-size", "1", "--red-cell-diameter", "8"])
    assert (args.batch_size, args.red_cell_diameter) == (1, 8.0)


def _fail_fsync_on_call(number: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up at the ``number``-th flush to disk (the writers sync each chunk)."""
    fsync, calls = os.fsync, []

    def fsync_or_full(fd: int) -> None:
        calls.append(fd)
        if len(calls) == number:
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_or_full)


def test_a_full_disk_keeps_the_chunks_already_written_as_whole_rows(
    run_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "preds.csv"
    _fail_fsync_on_call(2, monkeypatch)

    assert main(["predict", str(run_dir), str(images), "--out", str(out), "--batch-size", "2"]) == 2

    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (
        f"blastscope: error: stopped: {out}: No space left on device; 2 of 5 predictions saved in {out}; "
        "free space or choose another --out, then run again"
    )
    rows = list(csv.DictReader(out.open()))
    assert [Path(row["file"]).name for row in rows] == sorted(p.name for p in images.glob("UID_*.png"))[:2]
    assert all(row["error"] == "" and row["label"] in {"all", "hem"} for row in rows)


def test_json_on_a_full_disk_leaves_the_rows_in_a_partial_csv(
    run_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "preds.json"
    _fail_fsync_on_call(4, monkeypatch)  # three chunks reached the partial CSV; the JSON file does not fit

    assert main(["predict", str(run_dir), str(images), "--out", str(out), "--batch-size", "2"]) == 2

    assert f"5 of 5 predictions saved in {tmp_path / 'preds.partial.csv'}" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == ["preds.partial.csv"]
    assert len(list(csv.DictReader((tmp_path / "preds.partial.csv").open()))) == 5


def test_a_crash_of_the_model_keeps_the_chunks_before_it(
    run_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out, predict, calls = tmp_path / "preds.json", Classifier.predict, []

    def crash_on_second_chunk(self: Classifier, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["predict", str(run_dir), str(images), "--out", str(out), "--batch-size", "2"])

    partial = tmp_path / "preds.partial.csv"
    assert f"2 of 5 predictions saved in {partial} before the failure" in capsys.readouterr().err
    assert len(list(csv.DictReader(partial.open()))) == 2 and not out.exists()


def test_ctrl_c_keeps_the_chunks_before_it_and_says_what_to_do(
    run_dir: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Ctrl-C in the second chunk: the first chunk's rows are kept, and the last line says where and that the same
    command predicts them all again (not train's ``--resume``)."""
    out, predict, calls = tmp_path / "preds.json", Classifier.predict, []

    def ctrl_c_on_second_chunk(self: Classifier, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Classifier, "predict", ctrl_c_on_second_chunk)
    assert main(["predict", str(run_dir), str(images), "--out", str(out), "--batch-size", "2"]) == 130
    partial = tmp_path / "preds.partial.csv"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"blastscope: interrupted; 2 of 5 predictions saved in {partial}; running the same command again predicts "
        "all 5 from the start"
    )
    assert len(list(csv.DictReader(partial.open()))) == 2 and not out.exists()


def test_an_unwritable_output_folder_stops_before_the_model_loads(
    run_dir: Path, images: Path, tmp_path: Path, read_only: Callable[[Path], None], capsys
) -> None:
    read_only(tmp_path)
    for option in ("--out", "--gradcam"):
        target = tmp_path / ("preds.csv" if option == "--out" else "overlays")
        assert main(["predict", str(run_dir), str(images), option, str(target)]) == 2
        assert capsys.readouterr().err == (
            f"blastscope: error: {tmp_path}: cannot write there (Read-only file system); choose another {option} or "
            "make the folder writable\n"
        )


def test_a_named_pipe_given_as_an_input_is_a_failed_row_not_a_hang(
    run_dir: Path, images: Path, tmp_path: Path, capsys
) -> None:
    pipe, out = tmp_path / "pipe.png", tmp_path / "preds.csv"
    os.mkfifo(pipe)
    good = sorted(images.glob("UID_*.png"))[0]
    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)  # a hang ends the run, with a traceback
    try:
        assert main(["predict", str(run_dir), str(good), str(pipe), "--out", str(out)]) == 1
    finally:
        faulthandler.cancel_dump_traceback_later()

    rows = list(csv.DictReader(out.open()))
    assert rows[1]["file"] == str(pipe) and rows[1]["error"].startswith("not a regular file (named pipe)")
    assert rows[0]["error"] == "" and "\n1 of 2 files " in capsys.readouterr().err


def test_cells_on_a_background_are_cut_out_and_a_cell_not_found_is_skipped(
    run_dir: Path, images: Path, natural_crops: list[Path], tmp_path: Path, capsys, caplog
) -> None:
    """The run segments ``auto`` (its default): the crops with a background are cut out and say so, the C-NMC-like cell
    is left as it is, and a blank field is listed with the reason and skipped, never classified."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(sorted(images.glob("UID_*.png"))[0], folder / "a_on_black.png")
    shutil.copy(natural_crops[0], folder / "b_crop.png")
    Image.new("RGB", (120, 120), (215, 205, 210)).save(folder / "c_blank.png")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(folder), "--out", str(out)]) == 1
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open())}
    assert rows["a_on_black.png"]["segmented"] == "False" and rows["b_crop.png"]["segmented"] == "True"
    assert rows["c_blank.png"]["label"] == "" and rows["c_blank.png"]["segmented"] == ""
    assert "no white cell found" in rows["c_blank.png"]["error"]
    err = capsys.readouterr().err
    assert f"skipped {folder / 'c_blank.png'}: no white cell found" in err and "1 of 3 files could not be read" in err

    assert main(["predict", str(run_dir), str(folder / "b_crop.png"), "--out", str(out), "--segment", "never"]) == 0
    assert next(csv.DictReader(out.open()))["segmented"] == "False"
    assert "segmenting with --segment never for this call; the run was trained with --segment auto" in caplog.text


def test_cells_in_the_refer_band_are_marked_and_counted(run_dir: Path, images: Path, tmp_path: Path, capsys) -> None:
    """A run with a refer band: a ``referred`` column (empty for failed files), the rule under the decision line and
    "N of M cells uncertain — refer" at the end; ``--threshold`` drops the band and says so."""
    good = sorted(images.glob("UID_*.png"))
    run = load_run(run_dir)
    p_all = load(run_dir).predict_proba(good)[:, run.classes.index("all")]
    between = np.convolve(np.unique(p_all), [0.5, 0.5], "valid")  # midpoints: three cells, the middle one inside
    assert len(between) == 2
    point = replace(run.operating_point.with_threshold(between[0], "test"), refer_band=tuple(map(float, between)))
    run.save_operating_point(point)
    inside = [between[0] < p < between[1] for p in p_all]

    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(images), "--out", str(out)]) == 1  # two files cannot be read
    rows = {Path(row["file"]).name: row for row in csv.DictReader(out.open())}
    assert [rows[path.name]["referred"] for path in good] == [str(flag) for flag in inside]
    assert rows["corrupt.png"]["referred"] == rows["empty.jpg"]["referred"] == ""
    err = capsys.readouterr().err.splitlines()
    decision = next(i for i, line in enumerate(err) if line.startswith("decision: "))
    assert err[decision + 1] == f"referral: {point.describe_referral()}"
    assert "1 of 3 cells uncertain — refer" in err

    out = tmp_path / "preds.json"
    assert main(["predict", str(run_dir), *map(str, good), "--out", str(out), "--threshold", "0.5"]) == 0
    assert [row["referred"] for row in json.loads(out.read_text())] == [False] * 3
    err = capsys.readouterr().err
    assert "referral: no refer band with a given threshold" in err and "uncertain — refer" not in err


def test_the_closing_counts_match_the_files_listed_above(
    run_dir: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every 'skipped' line (read, failed) and every 'ignored' line (never read: a hidden file) is counted."""
    shutil.copy(sorted(images.glob("UID_*.png"))[0], images / ".hidden.png")
    assert main(["predict", str(run_dir), str(images), "--out", str(tmp_path / "preds.csv")]) == 1
    lines = capsys.readouterr().err.splitlines()
    skipped = [line for line in lines if line.startswith("skipped ")]
    ignored = [line for line in lines if line.startswith("ignored ")]
    assert len(skipped) == 2 and len(ignored) == 1
    assert f"{len(skipped)} of 5 files could not be read or had no cell found (the 'skipped' lines above)" in lines
    assert f"{len(ignored)} more ignored in the folders, not read (the 'ignored' lines above)" in lines


def test_a_red_cell_diameter_for_this_call_is_announced(
    run_dir: Path,
    natural_crops: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), str(natural_crops[0]), "--out", str(out), "--red-cell-diameter", "60"]) == 0
    assert next(csv.DictReader(out.open()))["segmented"] == "True"
    assert "red-cell diameter of 60 px for this call; the run was trained with the diameter measured" in caplog.text
    with pytest.raises(SystemExit) as stop:  # its refusals: test_unusable_numbers_are_refused_by_argparse...
        main(["predict", str(run_dir), str(natural_crops[0]), "--red-cell-diameter", "1"])
    assert stop.value.code == 2 and "argument --red-cell-diameter: '1' is not a red cell's" in capsys.readouterr().err


def test_a_smear_photograph_given_as_one_cell_is_counted_and_named(
    tiny_run: Path, smear_photo: Path, natural_crops: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its row's white_cells says 2 (the crop's 1), and a closing line names it and points to `blastscope scan`."""
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tiny_run), str(smear_photo), str(natural_crops[0]), "--out", str(out)]) == 0
    assert [row["white_cells"] for row in csv.DictReader(out.open())] == ["2", "1"]
    lines = capsys.readouterr().err.splitlines()
    (line,) = [line for line in lines if "white cells" in line]
    assert line.startswith(f"warning: {smear_photo} holds 2 whole white cells, not one") and "`blastscope scan`" in line
