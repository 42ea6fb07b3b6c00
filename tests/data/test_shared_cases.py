"""The inputs in ../shared/cases that real users' files arrive as (a Mac zip's litter, camera files): read as expected.

They are read where they lie, never copied into the repository; the tests skip when ../shared/cases is missing and
fail instead when CI=true.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.cli.predict import expand_inputs
from blastscope.data.discover import scan_dataset
from blastscope.data.files import is_litter
from blastscope.data.images import decode_image, decode_image_bytes, read_rgb
from blastscope.data.table import CellTable


@pytest.fixture(scope="module")
def macos_zip(cases: Path) -> Path:
    return cases / "macos-zip"


@pytest.fixture(scope="module")
def without_litter(macos_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree as it would have been unpacked without the Mac's litter (a temporary copy)."""
    clean = tmp_path_factory.mktemp("clean") / "macos-zip"
    shutil.copytree(macos_zip, clean, ignore=lambda _, names: [name for name in names if is_litter(name)])
    return clean


def _cells(table: CellTable) -> list[tuple[str, str, str | None, str]]:
    return [(c.path.relative_to(table.root).as_posix(), c.label, c.subject, c.digest) for c in table.cells]


def _subfolders(root: Path) -> list[Path]:
    return [root] + sorted(p for p in root.rglob("*") if p.is_dir() and "__MACOSX" not in p.parts)


@pytest.mark.integration
def test_macos_zip_scans_to_the_same_cells_as_without_its_litter(macos_zip: Path, without_litter: Path) -> None:
    assert any(is_litter(path.name) for path in macos_zip.rglob("*"))  # the case still holds its litter
    for relative in ("", "C-NMC_Leukemia", "C-NMC_Leukemia/training_data"):
        table, clean = scan_dataset(macos_zip / relative), scan_dataset(without_litter / relative)

        assert _cells(table) == _cells(clean) and len(table.cells) > 0
        assert table.classes == ("hem", "all") and table.kind == "cnmc"
        assert table.skipped == [] and table.duplicates == clean.duplicates == []


@pytest.mark.integration
def test_predict_lists_the_same_files_as_without_the_litter_on_any_subfolder(
    macos_zip: Path, without_litter: Path
) -> None:
    for folder in _subfolders(macos_zip):
        relative = folder.relative_to(macos_zip)
        listed = [path.relative_to(macos_zip) for path in expand_inputs([folder])]

        assert listed == [path.relative_to(without_litter) for path in expand_inputs([without_litter / relative])]
        assert listed and not any(is_litter(part) for path in listed for part in path.parts), folder


@pytest.mark.integration
def test_12_bit_cells_in_16_bit_tiffs_look_like_the_8_bit_original(cases: Path) -> None:
    decode = cases / "decode"
    reference = np.asarray(Image.open(decode / "ref.png").convert("RGB")).astype(int)
    reference_gray = np.asarray(Image.open(decode / "ref.png").convert("L")).astype(int)

    rgb48 = decode_image((decode / "rgb48_12bit.tif").read_bytes(), decode / "rgb48_12bit.tif")
    gray12 = decode_image((decode / "gray16_12bit.tif").read_bytes(), decode / "gray16_12bit.tif")
    gray16 = decode_image((decode / "gray16_full.tif").read_bytes(), decode / "gray16_full.tif")

    assert np.abs(np.asarray(rgb48.image).astype(int) - reference).max() <= 1
    for decoded in (gray12, gray16):
        gray = np.asarray(decoded.image).astype(int)[..., 0]
        assert abs(gray.max() - reference_gray.max()) <= 2 and np.abs(gray - reference_gray).mean() < 1
    assert rgb48.note is not None and "rgb48_12bit.tif: 16-bit container with values 0-" in rgb48.note
    assert gray12.note is not None and "scaled as 12-bit" in gray12.note
    assert gray16.note is None
    assert np.array_equal(np.asarray(read_rgb(decode / "rgb48_12bit.tif")), np.asarray(rgb48.image))


@pytest.mark.integration
def test_a_jpeg_tagged_rotate_90_reads_as_a_viewer_shows_it(cases: Path) -> None:
    decode = cases / "decode"
    upright = np.asarray(read_rgb(decode / "exif_upright.jpg")).astype(int)

    from_file = read_rgb(decode / "exif_orient6.jpg")
    from_upload = decode_image_bytes((decode / "exif_orient6.jpg").read_bytes(), "exif_orient6.jpg")

    assert Image.open(decode / "exif_orient6.jpg").size == (64, 96)  # as stored
    assert from_file.size == from_upload.size == (96, 64)
    assert np.abs(np.asarray(from_file).astype(int) - upright).mean() < 2
    assert np.array_equal(np.asarray(from_file), np.asarray(from_upload))
