"""Every supported image file becomes 8-bit RGB; broken, oversized and fake images are ImageErrors."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.data.images import probe_image, read_rgb
from blastscope.errors import ImageError

FORMATS = {
    ".bmp": "BMP",
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand, for pixel formats Pillow cannot save (16-bit RGB) or headers it would refuse."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def _noise(size: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_every_supported_format_reads_as_rgb(tmp_path: Path, suffix: str) -> None:
    ramp = np.arange(16, dtype=np.uint8) * 16
    pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128), axis=-1).astype(np.uint8)
    path = tmp_path / f"cell{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {"quality": 100} if FORMATS[suffix] == "JPEG" else {}
    Image.fromarray(pixels).save(path, FORMATS[suffix], **options)

    image = read_rgb(path)

    assert image.mode == "RGB" and image.size == (16, 16)
    tolerance = 3 if FORMATS[suffix] == "JPEG" else 0
    assert np.abs(np.asarray(image).astype(int) - pixels).mean() <= tolerance
    assert probe_image(path).format == FORMATS[suffix]


def test_grayscale_and_palette_become_three_equal_or_mapped_channels(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    Image.fromarray(_noise(8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "palette.png")

    rgb = np.asarray(read_rgb(tmp_path / "gray.png"))
    palette = read_rgb(tmp_path / "palette.png")

    assert (rgb == gray[..., None]).all()
    assert palette.mode == "RGB" and len({tuple(p) for p in np.asarray(palette).reshape(-1, 3)}) <= 8


def test_transparency_is_composited_on_the_black_background(tmp_path: Path) -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, :3] = (200, 100, 50)
    rgba[0, :, 3] = (0, 128, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")

    pixels = np.asarray(read_rgb(tmp_path / "alpha.png")).astype(int)

    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert np.abs(pixels[0, 1] - [100, 50, 25]).max() <= 1
    assert pixels[0, 2].tolist() == [200, 100, 50]


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "gray16.png")

    pixels = np.asarray(read_rgb(tmp_path / "gray16.png"))

    assert pixels[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (pixels == pixels[..., :1]).all()


def test_sixteen_bit_rgb_is_scaled_not_clipped(tmp_path: Path) -> None:
    row = np.array([[[65535, 32896, 257]]], dtype=">u2")
    (tmp_path / "rgb16.png").write_bytes(_png(1, 1, 16, 2, b"\x00" + row.tobytes()))

    assert np.asarray(read_rgb(tmp_path / "rgb16.png"))[0, 0].tolist() == [255, 128, 1]


def test_pixel_limit_is_checked_from_the_header_and_can_be_raised(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(_noise(20)).save(path)

    with pytest.raises(ImageError, match=r"400 pixels.*--max-pixels"):
        read_rgb(path, max_pixels=399)
    assert read_rgb(path, max_pixels=400).size == (20, 20)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(30_000, 30_000, 8, 0, zlib.compress(b"")))  # claims 900 megapixels in a few bytes

    with pytest.raises(ImageError, match="--max-pixels") as error:
        probe_image(path)
    assert error.value.path == path


@pytest.mark.parametrize("suffix", [".bmp", ".png", ".jpg", ".tif", ".webp"])
def test_truncated_files_are_caught_by_the_cheap_check(tmp_path: Path, suffix: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise(64)).save(buffer, FORMATS[suffix])
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(ImageError, match="truncated") as error:
        probe_image(path)
    assert error.value.path == path


def test_zero_byte_and_non_image_files_name_the_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")

    with pytest.raises(ImageError, match="empty file"):
        read_rgb(empty)
    with pytest.raises(ImageError, match="not a BMP, PNG, JPEG, TIFF or WebP image"):
        probe_image(text)
    with pytest.raises(ImageError, match="cannot be read"):
        read_rgb(tmp_path / "missing.png")
