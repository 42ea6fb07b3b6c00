"""The decoded-image cache: decode once, never serve a changed file, never leave a partial entry."""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from platformdirs import user_cache_dir

from blastscope.data import cache as cache_module
from blastscope.data.cache import DecodedCache, cache_root, crop_centre, decode_resized, model_input
from blastscope.data.synth import smear_field
from blastscope.errors import BlastscopeError, ImageError
from blastscope.segmentation.modes import SEGMENTATION_VERSION

DIGEST = "0123456789abcdef0123456789abcdef"


def write_png(path: Path, value: int, size: int = 50) -> Path:
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[10:40, 15:35] = (value, value // 2, 200)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_png(tmp_path / "cell.png", 120)


@pytest.fixture
def cache(tmp_path: Path) -> DecodedCache:
    return DecodedCache(tmp_path / "cache")


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("decoded although a fresh entry exists")

    monkeypatch.setattr(cache_module, "decode_resized", fail)


def test_first_load_decodes_and_resizes_later_loads_read_the_entry(
    cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cache.load(image, DIGEST, 32, "bicubic").pixels
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, decode_resized(image, 32, "bicubic").pixels)
    assert cache.usage().entries == 1
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bicubic").pixels, first)


def test_size_and_interpolation_are_part_of_the_key(cache: DecodedCache, image: Path) -> None:
    bicubic = cache.load(image, DIGEST, 32, "bicubic").pixels
    bilinear = cache.load(image, DIGEST, 32, "bilinear").pixels
    assert cache.load(image, DIGEST, 24, "bicubic").pixels.shape == (24, 24, 3)
    assert not np.array_equal(bicubic, bilinear)
    assert cache.usage().entries == 3


def test_a_file_changed_after_hashing_is_read_again_not_served_stale(cache: DecodedCache, image: Path) -> None:
    before = cache.load(image, DIGEST, 32, "bilinear").pixels
    write_png(image, 250)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    after = cache.load(image, DIGEST, 32, "bilinear").pixels
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, decode_resized(image, 32, "bilinear").pixels)


def test_a_corrupt_entry_is_replaced(cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = cache.load(image, DIGEST, 32, "bilinear").pixels
    (entry,) = cache.root.glob("*/*.npy")
    entry.write_bytes(entry.read_bytes()[:100])
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear").pixels, expected)
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear").pixels, expected)


def test_an_interrupted_write_leaves_no_entry_and_no_temporary_file(
    cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed_mid_write(file, array, allow_pickle: bool) -> None:
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.np, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        cache.load(image, DIGEST, 32, "bilinear")
    assert [p for p in cache.root.rglob("*") if p.is_file()] == []


def test_concurrent_loads_of_one_entry_agree_and_leave_one_file(cache: DecodedCache, image: Path) -> None:
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.load(image, DIGEST, 32, "bilinear").pixels))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(np.array_equal(r, results[0]) for r in results)
    assert [p.name for p in cache.root.rglob("*") if p.is_file()] == [f"{DIGEST}-32-bilinear.npy"]


def test_missing_files_and_unknown_interpolation_are_clear_errors(
    tmp_path: Path, cache: DecodedCache, image: Path
) -> None:
    with pytest.raises(ImageError, match=r"gone\.png"):
        cache.load(tmp_path / "gone.png", DIGEST, 32, "bilinear")
    with pytest.raises(BlastscopeError, match="bilinear, bicubic"):
        cache.load(image, DIGEST, 32, "area")


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "decoded-image cache" in record.getMessage()]


def test_an_unwritable_cache_only_costs_time_and_warns_once(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cache_module, "_unwritable_warning", threading.Lock())  # as if this process had not warned
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    expected = decode_resized(image, 32, "bilinear").pixels
    with caplog.at_level(logging.WARNING, logger=cache_module.__name__):
        for _ in range(3):
            got = DecodedCache(blocker / "cache").load(image, DIGEST, 32, "bilinear").pixels
            np.testing.assert_array_equal(got, expected)
    [warning] = _cache_warnings(caplog)
    assert str(blocker) in warning and "decoding every epoch instead" in warning and "BLASTSCOPE_CACHE" in warning


def test_a_full_cache_disk_returns_the_pixels_and_leaves_no_partial_entry(
    cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cache_module, "_unwritable_warning", threading.Lock())
    expected = decode_resized(image, 32, "bilinear").pixels

    def disk_full(file, array, allow_pickle: bool) -> None:
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.np, "save", disk_full)
    with caplog.at_level(logging.WARNING, logger=cache_module.__name__):
        np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear").pixels, expected)
        np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear").pixels, expected)
    [warning] = _cache_warnings(caplog)
    assert "No space left on device" in warning and str(cache.root) in warning
    assert [p for p in cache.root.rglob("*") if p.is_file()] == []


def test_usage_and_clean(cache: DecodedCache, image: Path) -> None:
    assert cache.usage().entries == 0
    cache.load(image, DIGEST, 32, "bilinear")
    cache.load(image, DIGEST, 16, "bilinear")
    used = cache.usage()
    assert used.entries == 2 and used.bytes > 32 * 32 * 3 + 16 * 16 * 3
    assert cache.clean() == used
    assert cache.usage().entries == 0


def test_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BLASTSCOPE_CACHE", str(tmp_path / "moved"))
    assert DecodedCache().root == tmp_path / "moved" / "decoded"
    monkeypatch.delenv("BLASTSCOPE_CACHE")
    assert cache_root() == Path(user_cache_dir("blastscope"))


@pytest.mark.integration
def test_real_cells_are_resized_whole(cnmc_sample: Path, cache: DecodedCache) -> None:
    path = next(cnmc_sample.glob("train/fold_0/all/*.png"))
    pixels = cache.load(path, DIGEST, 64, "bicubic").pixels
    assert pixels.shape == (64, 64, 3)
    assert pixels[0, 0].max() < 12 and pixels[32, 32].max() > 30, "black border kept, cell in the middle"


@pytest.mark.integration
def test_real_webp_cells_decode_through_the_cache(cnmc_dev: Path, cache: DecodedCache) -> None:
    path = next(cnmc_dev.glob("training_data/fold_0/hem/*.webp"))
    first = cache.load(path, DIGEST, 48, "bilinear").pixels
    np.testing.assert_array_equal(cache.load(path, DIGEST, 48, "bilinear").pixels, first)
    assert first.shape == (48, 48, 3) and first.max() > 30


def write_smear_crop(path: Path, seed: int = 0) -> Path:
    """A 180 px crop of a synthetic smear around its one white cell: a natural background, to be segmented."""
    field = smear_field(seed, height=320, width=320, white_cells=1)
    ys, xs = np.nonzero(field.white_cells == 1)
    top, left = (min(max(0, int(c.mean()) - 90), 320 - 180) for c in (ys, xs))
    Image.fromarray(field.image[top : top + 180, left : left + 180]).save(path)
    return path


def test_segment_mode_is_part_of_the_key_and_the_flag_survives_a_cached_read(
    cache: DecodedCache, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crop = write_smear_crop(tmp_path / "crop.png")
    other = "fedcba9876543210fedcba9876543210"
    cut = cache.load(crop, other, 32, "bilinear", "auto")
    whole = cache.load(crop, other, 32, "bilinear", "never")
    assert cut.segmented and not whole.segmented
    assert not np.array_equal(cut.pixels, whole.pixels)
    assert cut.pixels[0, 0].max() == 0 and whole.pixels[0, 0].max() > 100, "cut out onto black, or not"
    on_black = cache.load(image, DIGEST, 32, "bilinear", "auto")
    assert not on_black.segmented, "a cell already on black is left as it is"
    scaled = cache.load(crop, other, 32, "bilinear", "auto", red_cell_diameter=60)  # a given scale: its own entry
    assert scaled.segmented
    names = sorted(p.name for p in cache.root.rglob("*.npy"))
    version = f"s{SEGMENTATION_VERSION}"
    assert names == [
        f"{DIGEST}-32-bilinear-auto-whole-{version}.npy",
        f"{other}-32-bilinear-auto-cut-{version}-rbc60.npy",
        f"{other}-32-bilinear-auto-cut-{version}.npy",
        f"{other}-32-bilinear.npy",
    ]
    forbid_decoding(monkeypatch)
    again = cache.load(crop, other, 32, "bilinear", "auto")
    assert again.segmented and np.array_equal(again.pixels, cut.pixels)
    assert not cache.load(image, DIGEST, 32, "bilinear", "auto").segmented
    assert not cache.load(crop, other, 32, "bilinear", "never").segmented


def test_a_cell_that_cannot_be_found_is_an_image_error_and_not_cached(cache: DecodedCache, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (215, 205, 210)).save(blank)  # tinted: a grey one is refused for having no colour
    with pytest.raises(ImageError, match=r"blank\.png: no white cell found"):
        cache.load(blank, DIGEST, 32, "bilinear", "auto")
    assert cache.usage().entries == 0
    assert not cache.load(blank, DIGEST, 32, "bilinear", "never").segmented


def test_crop_keeps_one_fixed_centred_window_whatever_the_cell(tmp_path: Path) -> None:
    """The window is the same for a small and a large cell (no per-cell zoom): its side is the fraction of the shorter
    side, centred on the image centre, so a larger cell stays larger after resizing."""
    canvas = np.zeros((100, 120, 3), np.uint8)
    canvas[0, 0] = canvas[-1, -1] = (255, 0, 0)  # corner marks the window leaves out: under 1% of the cell pixels
    canvas[40:60, 50:70] = (200, 100, 150)
    image = Image.fromarray(canvas)
    kept, clipped = crop_centre(image, 0.5)
    assert kept.size == (50, 50) and not clipped
    np.testing.assert_array_equal(np.asarray(kept), canvas[25:75, 35:85])
    small, large = canvas.copy(), canvas.copy()
    large[30:70, 40:80] = (200, 100, 150)
    sizes = [
        (model_input(Image.fromarray(c), 25, "nearest", crop_fraction=0.5).pixels.max(axis=2) >= 12).sum()
        for c in (small, large)
    ]
    assert sizes[1] >= 3.5 * sizes[0], "the crop does not zoom each cell to its own size"
    assert crop_centre(image, 1.0) == (image, False)


def test_a_cell_larger_than_the_window_is_flagged_clipped(tmp_path: Path) -> None:
    canvas = np.zeros((100, 100, 3), np.uint8)
    canvas[10:90, 10:90] = (150, 80, 170)
    assert crop_centre(Image.fromarray(canvas), 0.6)[1]
    assert not crop_centre(Image.fromarray(canvas), 0.8)[1]
    assert model_input(Image.fromarray(canvas), 16, "bilinear", crop_fraction=0.6).clipped
    with pytest.raises(BlastscopeError, match="crop fraction 1.5 is invalid"):
        model_input(Image.fromarray(canvas), 16, "bilinear", crop_fraction=1.5)


def test_crop_is_part_of_the_key_and_the_clipped_flag_survives_a_cached_read(
    cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = cache.load(image, DIGEST, 32, "bilinear")
    cropped = cache.load(image, DIGEST, 32, "bilinear", crop_fraction=0.5)
    assert not np.array_equal(whole.pixels, cropped.pixels) and cropped.clipped and not whole.clipped
    np.testing.assert_array_equal(cropped.pixels, decode_resized(image, 32, "bilinear", crop_fraction=0.5).pixels)
    names = sorted(p.name for p in cache.root.rglob("*.npy"))
    assert names == [f"{DIGEST}-32-bilinear-crop0.5000.npy", f"{DIGEST}-32-bilinear.npy"], "uncropped names unchanged"
    forbid_decoding(monkeypatch)
    again = cache.load(image, DIGEST, 32, "bilinear", crop_fraction=0.5)
    assert again.clipped and np.array_equal(again.pixels, cropped.pixels)
    assert not cache.load(image, DIGEST, 32, "bilinear").clipped


def test_the_white_cell_count_survives_a_cached_read_and_an_entry_without_it_is_decoded_again(
    cache: DecodedCache, smear_photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A smear photograph's cut-out says it held two white cells, read fresh or cached; a cut-out entry written before
    the count was stored is stale, never read as uncounted (which would hide the photograph)."""
    assert cache.load(smear_photo, DIGEST, 32, "bilinear", "auto").white_cells == 2
    (entry,) = cache.root.rglob("*.npy")
    stored = np.load(entry)
    old = np.zeros((), cache_module._record_dtype(stored["pixels"].shape))  # the layout before white_cells
    for field in old.dtype.names:
        old[field] = stored[field]
    np.save(entry, old)
    assert cache.load(smear_photo, DIGEST, 32, "bilinear", "auto").white_cells == 2
    assert "white_cells" in np.load(entry).dtype.names, "the stale entry was rewritten"
    forbid_decoding(monkeypatch)
    assert cache.load(smear_photo, DIGEST, 32, "bilinear", "auto").white_cells == 2
