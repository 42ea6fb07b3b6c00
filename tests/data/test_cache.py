"""The decoded-image cache: decode once, never serve a changed file, never leave a partial entry."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from platformdirs import user_cache_dir

from blastscope.data import cache as cache_module
from blastscope.data.cache import DecodedCache, cache_root, decode_resized
from blastscope.errors import BlastscopeError, ImageError

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
    first = cache.load(image, DIGEST, 32, "bicubic")
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, decode_resized(image, 32, "bicubic"))
    assert cache.usage().entries == 1
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bicubic"), first)


def test_size_and_interpolation_are_part_of_the_key(cache: DecodedCache, image: Path) -> None:
    bicubic = cache.load(image, DIGEST, 32, "bicubic")
    bilinear = cache.load(image, DIGEST, 32, "bilinear")
    assert cache.load(image, DIGEST, 24, "bicubic").shape == (24, 24, 3)
    assert not np.array_equal(bicubic, bilinear)
    assert cache.usage().entries == 3


def test_a_file_changed_after_hashing_is_read_again_not_served_stale(cache: DecodedCache, image: Path) -> None:
    before = cache.load(image, DIGEST, 32, "bilinear")
    write_png(image, 250)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    after = cache.load(image, DIGEST, 32, "bilinear")
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, decode_resized(image, 32, "bilinear"))


def test_a_corrupt_entry_is_replaced(cache: DecodedCache, image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = cache.load(image, DIGEST, 32, "bilinear")
    (entry,) = cache.root.glob("*/*.npy")
    entry.write_bytes(entry.read_bytes()[:100])
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear"), expected)
    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.load(image, DIGEST, 32, "bilinear"), expected)


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
        threading.Thread(target=lambda: results.append(cache.load(image, DIGEST, 32, "bilinear"))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(np.array_equal(r, results[0]) for r in results)
    assert [p.name for p in cache.root.rglob("*") if p.is_file()] == [f"{DIGEST}-32-bilinear.npy"]


def test_missing_files_unknown_interpolation_and_unwritable_cache_are_clear_errors(
    tmp_path: Path, cache: DecodedCache, image: Path
) -> None:
    with pytest.raises(ImageError, match=r"gone\.png"):
        cache.load(tmp_path / "gone.png", DIGEST, 32, "bilinear")
    with pytest.raises(BlastscopeError, match="bilinear, bicubic"):
        cache.load(image, DIGEST, 32, "area")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(BlastscopeError, match="BLASTSCOPE_CACHE"):
        DecodedCache(blocker / "cache").load(image, DIGEST, 32, "bilinear")


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
    pixels = cache.load(path, DIGEST, 64, "bicubic")
    assert pixels.shape == (64, 64, 3)
    assert pixels[0, 0].max() < 12 and pixels[32, 32].max() > 30, "black border kept, cell in the middle"


@pytest.mark.integration
def test_real_webp_cells_decode_through_the_cache(cnmc_dev: Path, cache: DecodedCache) -> None:
    path = next(cnmc_dev.glob("training_data/fold_0/hem/*.webp"))
    first = cache.load(path, DIGEST, 48, "bilinear")
    np.testing.assert_array_equal(cache.load(path, DIGEST, 48, "bilinear"), first)
    assert first.shape == (48, 48, 3) and first.max() > 30
