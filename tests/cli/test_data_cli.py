"""``blastscope data inspect`` and ``blastscope data split`` on synthetic and real C-NMC cells."""

from __future__ import annotations

import errno
import faulthandler
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blastscope.cli import data as data_cli
from blastscope.cli import main
from blastscope.data.discover import scan_dataset
from blastscope.data.reading import MAX_FILE_BYTES_ENV
from blastscope.data.split import Split, read_split_csv


def test_inspect_reports_classes_subjects_folds_sizes_and_skips(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "cells"
    shutil.copytree(synth_small, dataset)
    first = next(dataset.glob("training_data/fold_*/all/UID_*.png"))
    shutil.copy(first, first.with_name("UID_99_1_1_all.png"))
    (first.parent / "UID_98_1_1_all.png").write_bytes(b"")

    assert main(["data", "inspect", str(dataset)]) == 0

    out = capsys.readouterr().out
    assert "98 found: 96 distinct cells, 1 exact duplicates, 1 skipped" in out
    assert "classes  hem (index 0), all (index 1, positive)" in out
    assert "Cells per C-NMC fold" in out and "Cells per subject" in out
    assert "Merged subject groups" in out and "99" in out
    assert "64x64" in out
    assert "UID_98_1_1_all.png: empty file" in out


def test_split_writes_csv_and_summary_with_achieved_ratios(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split.csv"

    assert main(["data", "split", str(synth_small), "--out", str(out), "--ratios", "0.5,0.25,0.25", "--seed", "4"]) == 0

    printed = capsys.readouterr().out
    split = read_split_csv(out, scan_dataset(synth_small))
    assert split.subject_level and split.hash in printed
    assert "target 50% / 25% / 25%, seed 4" in printed and "leakage check passed" in printed
    assert [line.split()[0] for line in printed.splitlines() if line.split()[:1] in (["train"], ["val"], ["test"])] == [
        "train",
        "val",
        "test",
    ]
    assert split.hash in (tmp_path / "split.summary.txt").read_text()


def test_cross_validation_writes_one_csv_per_fold(synth_small: Path, tmp_path: Path) -> None:
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "cv.csv"), "--cv", "3"]) == 0

    folds = [read_split_csv(tmp_path / f"cv-fold{index}.csv") for index in (1, 2, 3)]
    tested = [cell.digest for split in folds for cell in split.parts["test"]]
    assert len(tested) == len(set(tested)) == 96


def test_split_by_image_is_announced(synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "s.csv"), "--split-by", "image"]) == 0

    assert "BY IMAGE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["inspect", "{tmp}/missing"], "missing does not exist"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--ratios", "0.5,0.5,0.5"], "must be three numbers"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--ratios", "0.6,0.2,nan"], "must be three numbers"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--cv", "7"], "class 'all' has only 6 subject groups"),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--cv", "7"], "add subjects, use at most 6 folds (--cv 6 "),
        (["split", "{synth}", "--out", "{tmp}/s.csv", "--cv", "3", "--ratios", "0.8,0.2,0"], "exclude each other"),
    ],
)
def test_user_errors_are_one_line_messages(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    filled = [argument.format(tmp=tmp_path, synth=synth_small) for argument in arguments]

    assert main(["data", *filled]) == 2

    error = capsys.readouterr().err
    assert error.startswith("blastscope: error:") and message in error and error.count("\n") == 1


@pytest.mark.integration
def test_inspect_cnmc_dev_reports_the_known_counts(cnmc_dev: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(cnmc_dev)]) == 0

    out = capsys.readouterr().out
    assert "6,403 found: 6,371 distinct cells, 32 exact duplicates, 0 skipped" in out
    assert "  hem    2,144           14              11" in out
    assert "  all    4,227           27              25" in out
    assert "  total  6,371           41              36" in out
    for group in ("51+75+78", "H2+H4+H5", "H3+H10"):
        assert f"\n  {group}\n" in out or out.endswith(f"\n  {group}")


@pytest.fixture
def no_hang() -> Iterator[None]:
    """End the test process with a traceback, instead of hanging the suite, if a command blocks (on a named pipe)."""
    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


def _special_files(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A named pipe, a link to /dev/zero and a sparse file over a byte limit lowered to 4,096, with image names."""
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, "4096")
    os.mkfifo(folder / "pipe.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    with (folder / "sparse.png").open("wb") as handle:
        handle.write(next(folder.glob("UID_*.png")).read_bytes())
        handle.truncate(3 * 2**30)
    return {
        "pipe.png": "not a regular file (named pipe)",
        "zero.png": "not a regular file (character device, reached by a link to /dev/zero)",
        "sparse.png": "3,221,225,472 bytes, over the limit of 4,096 bytes",
    }


def test_inspect_and_split_list_pipes_device_links_and_huge_files_and_go_on(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_hang
) -> None:
    dataset = Path(shutil.copytree(synth_small, tmp_path / "cells"))
    special = _special_files(next(dataset.glob("training_data/fold_*/all")), monkeypatch)

    assert main(["data", "inspect", str(dataset)]) == 0
    inspected = capsys.readouterr().out
    assert main(["data", "split", str(dataset), "--out", str(tmp_path / "split.csv")]) == 0
    split = capsys.readouterr().out

    assert "99 found: 96 distinct cells, 0 exact duplicates, 3 skipped" in inspected
    for name, reason in special.items():
        assert f"{name}: {reason}" in inspected and f"{name}: {reason}" in split
    assert "Skipped files (3; fix or remove them)" in split
    assert len(list(read_split_csv(tmp_path / "split.csv").cells())) == 96


def test_split_into_a_read_only_folder_stops_before_the_scan(
    synth_small: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read_only: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    read_only(tmp_path)
    monkeypatch.setattr(data_cli, "scan_dataset", lambda *args, **kwargs: pytest.fail("scanned before the check"))

    assert main(["data", "split", str(synth_small), "--out", str(tmp_path / "new" / "split.csv")]) == 2

    captured = capsys.readouterr()
    assert captured.err == (
        f"blastscope: error: {tmp_path}: cannot write there (Read-only file system); choose another --out or make "
        "the folder writable\n"
    )
    assert captured.out == "" and not (tmp_path / "new").exists()


def test_a_full_disk_while_writing_a_split_keeps_the_previous_file_whole(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split.csv"
    assert main(["data", "split", str(synth_small), "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def half_then_full(split: Split, path: Path) -> None:
        path.write_text("path,split,label\n/x.png,tr")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(data_cli, "write_split_csv", half_then_full)
    assert main(["data", "split", str(synth_small), "--out", str(out), "--seed", "3"]) == 2

    error = capsys.readouterr().err
    assert (
        error.startswith(f"blastscope: error: {out}: not written (No space left on device;") and error.count("\n") == 1
    )
    assert out.read_bytes() == before and sorted(path.name for path in tmp_path.iterdir()) == [
        "split.csv",
        "split.summary.txt",
    ]
