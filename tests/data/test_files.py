"""find_image_files: the one finder behind the dataset scan and `predict` (litter, hidden files, symlinks, loops)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from blastscope.cli import main
from blastscope.cli.predict import expand_inputs
from blastscope.data.discover import scan_dataset
from blastscope.data.files import find_image_files

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # what a Mac zip puts in ._x.png: not an image


def _cell(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def _litter(folder: Path, name: str) -> None:
    """Beside ``folder/name``: its AppleDouble twin, Finder's and Explorer's files, and a __MACOSX copy."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"._{name}").write_bytes(APPLEDOUBLE)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / "__MACOSX").mkdir(exist_ok=True)
    (folder / "__MACOSX" / f"._{name}").write_bytes(APPLEDOUBLE)


def test_os_litter_is_ignored_silently_and_counted(tmp_path: Path) -> None:
    _cell(tmp_path / "x.png", 1)
    _litter(tmp_path, "x.png")

    found = find_image_files(tmp_path)

    assert found.files == [tmp_path / "x.png"]
    assert found.skipped == []
    assert found.litter == 5  # ._x.png, .DS_Store, Thumbs.db, desktop.ini, __MACOSX/


def test_other_hidden_images_are_skips_with_reasons(tmp_path: Path) -> None:
    _cell(tmp_path / "a" / "x.png", 1)
    _cell(tmp_path / "a" / ".draft.png", 2)
    _cell(tmp_path / ".trash" / "deep" / "y.png", 3)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    found = find_image_files(tmp_path)

    assert found.files == [tmp_path / "a" / "x.png"]
    reasons = {path.relative_to(tmp_path).as_posix(): reason for path, reason in found.skipped}
    assert set(reasons) == {"a/.draft.png", ".trash/deep/y.png"}
    assert "hidden file" in reasons["a/.draft.png"]
    assert "hidden folder .trash/" in reasons[".trash/deep/y.png"]


def test_a_symlinked_folder_is_followed(tmp_path: Path) -> None:
    storage, root = tmp_path / "storage", tmp_path / "root"
    _cell(storage / "blast" / "b1.png", 1)
    _cell(root / "normal" / "n1.png", 2)
    (root / "blast").symlink_to(storage / "blast", target_is_directory=True)

    found = find_image_files(root)

    assert found.files == [root / "blast" / "b1.png", root / "normal" / "n1.png"]
    assert found.skipped == []


def test_a_symlink_loop_is_visited_once_and_listed(tmp_path: Path) -> None:
    _cell(tmp_path / "a" / "x.png", 1)
    (tmp_path / "a" / "again").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)

    found = find_image_files(tmp_path)

    assert found.files == [tmp_path / "a" / "x.png"]
    assert sorted(path.name for path, _ in found.skipped) == ["again", "up"]
    assert all("not read" in reason for _, reason in found.skipped)


def test_a_loop_through_a_folder_outside_the_root_ends(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "root"
    _cell(outside / "o.png", 1)
    _cell(root / "r.png", 2)
    (root / "out").symlink_to(outside, target_is_directory=True)
    (outside / "back").symlink_to(outside, target_is_directory=True)

    found = find_image_files(root)

    assert found.files == [root / "out" / "o.png", root / "r.png"]
    assert [path.name for path, _ in found.skipped] == ["back"]


def test_a_second_name_for_a_folder_inside_the_root_is_not_a_second_class(tmp_path: Path) -> None:
    _cell(tmp_path / "blast" / "b.png", 1)
    _cell(tmp_path / "normal" / "n.png", 2)
    (tmp_path / "all").symlink_to(tmp_path / "blast", target_is_directory=True)  # sorts before blast/

    found = find_image_files(tmp_path)

    assert found.files == [tmp_path / "blast" / "b.png", tmp_path / "normal" / "n.png"]
    assert [(path.name, "inside the dataset" in reason) for path, reason in found.skipped] == [("all", True)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_folder_that_cannot_be_listed_is_a_skip(tmp_path: Path) -> None:
    _cell(tmp_path / "ok" / "x.png", 1)
    locked = tmp_path / "locked"
    _cell(locked / "y.png", 2)
    locked.chmod(0)
    try:
        found = find_image_files(tmp_path)
    finally:
        locked.chmod(0o755)

    assert found.files == [tmp_path / "ok" / "x.png"]
    assert [(path, "cannot be listed" in reason) for path, reason in found.skipped] == [(locked, True)]


def test_a_folder_that_cannot_be_listed_is_a_skip_named_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cell(tmp_path / "ok" / "x.png", 1)
    locked = tmp_path / "locked"
    _cell(locked / "deep" / "y.png", 2)
    scandir = os.scandir

    def refuse_locked(path: object = ".") -> object:  # as chmod 000 does for anyone but root
        if Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    found = find_image_files(tmp_path)

    assert found.files == [tmp_path / "ok" / "x.png"]
    assert found.skipped == [(locked, "folder cannot be listed (Permission denied); fix its permissions")]


def test_pipes_device_links_and_files_over_the_limit_are_listed_skips(
    tmp_path: Path,
    special_files: Callable[[Path], dict[Path, str]],
    returns_within: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = [_cell(tmp_path / "blast" / "b.png", 1), _cell(tmp_path / "normal" / "n.png", 2)]
    reasons = special_files(tmp_path / "blast")

    found = returns_within(10, find_image_files, tmp_path)

    assert found.files == good
    assert [path for path, _ in found.skipped] == sorted(reasons)
    assert all(reason.startswith(reasons[path]) for path, reason in found.skipped)
    assert returns_within(10, expand_inputs, [tmp_path]) == good
    ignored = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[0] for line in ignored] == [f"ignored {path}" for path in sorted(reasons)]


def test_scan_and_predict_agree_on_a_folder_with_appledouble_twins(tmp_path: Path) -> None:
    for label, seed in (("blast", 1), ("normal", 2)):
        _cell(tmp_path / label / "x.png", seed)
        _litter(tmp_path / label, "x.png")

    table = scan_dataset(tmp_path)

    assert [cell.path for cell in table.cells] == [tmp_path / "blast" / "x.png", tmp_path / "normal" / "x.png"]
    assert table.skipped == [] and table.classes == ("blast", "normal")
    assert any("operating-system files ignored" in note for note in table.notes)
    assert expand_inputs([tmp_path / "blast"]) == [tmp_path / "blast" / "x.png"]
    assert expand_inputs([tmp_path]) == [cell.path for cell in table.cells]


def test_predict_on_a_folder_with_x_and_its_appledouble_twin_gives_one_row_and_exit_0(
    tiny_run: Path, cell_images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "x.png").write_bytes(cell_images[0].read_bytes())
    (folder / "._x.png").write_bytes(APPLEDOUBLE)
    out = tmp_path / "preds.csv"

    assert main(["predict", str(tiny_run), str(folder), "--out", str(out), "--backend", "torch"]) == 0

    rows = out.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(str(folder / "x.png"))


def test_files_of_other_types_are_counted_by_extension_in_a_note(tmp_path: Path) -> None:
    for label, seed in (("blast", 1), ("normal", 2)):
        _cell(tmp_path / label / "x.png", seed)
    Image.new("RGB", (8, 8)).save(tmp_path / "blast" / "moving.gif")
    Image.new("RGB", (8, 8)).save(tmp_path / "normal" / "other.gif")
    (tmp_path / "README").write_text("cells from our microscope")
    (tmp_path / ".hidden.txt").write_text("not counted: hidden")
    (tmp_path / "MANIFEST.csv").write_text("not counted: a manifest travels with its images")

    found = find_image_files(tmp_path)
    table = scan_dataset(tmp_path)

    assert found.other == {".gif": 2, "": 1}
    assert "3 files of other types passed over (no extension 1, .gif 2); only .bmp" in " ".join(table.notes)


def test_a_class_folder_without_a_readable_image_is_named_as_not_a_class(tmp_path: Path) -> None:
    for label, seed in (("blast", 1), ("normal", 2)):
        _cell(tmp_path / label / "x.png", seed)
    (tmp_path / "reactive").mkdir()

    table = scan_dataset(tmp_path)

    assert table.classes == ("blast", "normal")
    assert "not a class: reactive/ holds no readable image" in table.notes
