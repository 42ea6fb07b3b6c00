"""read_image_file and file_problem: only regular files are opened, and only up to the byte limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from blastscope.data.reading import MAX_FILE_BYTES_ENV, file_problem, max_file_bytes, read_image_file
from blastscope.errors import BlastscopeError, ImageError


def test_pipes_device_links_and_files_over_the_limit_are_refused_from_their_metadata(
    tmp_path: Path, special_files: Callable[[Path], dict[Path, str]], returns_within: Callable[..., Any]
) -> None:
    for path, reason in special_files(tmp_path).items():
        assert file_problem(path).startswith(reason)
        with pytest.raises(ImageError, match=re.escape(f"{path}: {reason}")):
            returns_within(10, read_image_file, path)


def test_the_reasons_say_what_to_do(tmp_path: Path, special_files: Callable[[Path], dict[Path, str]]) -> None:
    pipe, _, sparse = special_files(tmp_path)

    assert file_problem(pipe) == "not a regular file (named pipe); remove it or put the image file itself there"
    assert file_problem(sparse).endswith(f"; set {MAX_FILE_BYTES_ENV} to read larger files")


def test_the_limit_is_inclusive_and_the_variable_raises_it(
    tmp_path: Path, small_file_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact, over = tmp_path / "exact.png", tmp_path / "over.png"
    exact.write_bytes(b"x" * small_file_limit)
    over.write_bytes(b"x" * (small_file_limit + 1))

    assert read_image_file(exact) == b"x" * small_file_limit and file_problem(exact) is None
    with pytest.raises(ImageError, match="over the limit"):
        read_image_file(over)
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, str(small_file_limit + 1))
    assert max_file_bytes() == small_file_limit + 1 and len(read_image_file(over)) == small_file_limit + 1


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1e9"])
def test_a_bad_limit_in_the_variable_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_FILE_BYTES_ENV, value)

    with pytest.raises(BlastscopeError, match=f"{MAX_FILE_BYTES_ENV}='{value}': expected a positive number of bytes"):
        max_file_bytes()


def test_a_folder_with_an_image_name_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()

    with pytest.raises(ImageError, match=r"not a regular file \(folder\)"):
        read_image_file(tmp_path / "folder.png")
    assert file_problem(tmp_path / "gone.png") is None  # left to the reader, which says why
    with pytest.raises(ImageError, match=r"gone\.png: cannot be read \(No such file or directory\)"):
        read_image_file(tmp_path / "gone.png")


def test_regular_files_and_links_to_them_are_read_whole(tmp_path: Path) -> None:
    png = tmp_path / "cell.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (tmp_path / "link.png").symlink_to(png)

    assert read_image_file(png) == read_image_file(tmp_path / "link.png") == png.read_bytes()
    assert file_problem(png) is None and file_problem(tmp_path / "link.png") is None
