"""Every supported image file becomes upright 8-bit RGB, 10/12-bit data in 16-bit files scaled by its range; broken,
oversized and fake images are ImageErrors."""

from __future__ import annotations

import argparse
import io
import logging
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import ExifTags, Image

from blastscope.cli import build_parser
from blastscope.data.images import decode_image, decode_image_bytes, decode_pil, probe_image, read_rgb
from blastscope.errors import ImageError, ImageTooLargeError

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

    with pytest.raises(ImageTooLargeError, match=r"400 pixels.*--max-pixels"):
        read_rgb(path, max_pixels=399)
    assert read_rgb(path, max_pixels=400).size == (20, 20)


def test_a_decompression_bomb_is_too_large_not_broken() -> None:
    """Over Pillow's own guard too (twice its limit): the same typed error, which a server answers 413, not 415."""
    bomb = _png(20_000, 20_000, 8, 0, b"")  # 400 Mpx declared; refused from the header before any pixel
    with pytest.raises(ImageTooLargeError, match=r"400,000,000 pixels: over the limit of 50,000,000"):
        decode_image_bytes(bomb, "bomb.png")


def test_the_pixel_limit_advice_names_only_options_that_exist(tmp_path: Path) -> None:
    """The reason reaches every command; each ``--max-pixels`` it names must parse, and commands without it are not
    told to pass it."""
    path = tmp_path / "big.png"
    Image.fromarray(_noise(20)).save(path)
    with pytest.raises(ImageError) as error:
        read_rgb(path, max_pixels=399)
    named = re.findall(r"`([a-z |]+) --max-pixels N`", error.value.reason)
    commands = []
    for phrase in named:  # "data inspect|split" -> data inspect, data split
        first, *rest = phrase.split()
        commands += [[first, sub] for sub in rest[0].split("|")] if rest else [[first]]
    assert sorted(map(tuple, commands)) == [("data", "inspect"), ("data", "split"), ("scan",), ("serve",)]
    parser = build_parser()
    for command in commands:
        for action in _subparser(parser, command)._actions:
            if "--max-pixels" in action.option_strings:
                break
        else:
            pytest.fail(f"{' '.join(command)} has no --max-pixels")
    for command in (["predict"], ["train"], ["evaluate"]):
        assert not any("--max-pixels" in a.option_strings for a in _subparser(parser, command)._actions), command


def _subparser(parser: argparse.ArgumentParser, command: list[str]) -> argparse.ArgumentParser:
    for name in command:
        choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        parser = choices[name]
    return parser


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(30_000, 30_000, 8, 0, zlib.compress(b"")))  # claims 900 megapixels in a few bytes

    with pytest.raises(ImageError, match="--max-pixels") as error:
        probe_image(path)
    assert error.value.path == path
    assert error.value.reason.startswith("900,000,000 pixels: over the limit of 50,000,000 pixels")
    assert "exceeds limit" not in error.value.reason  # Pillow's own limit, another number, is not repeated


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


def _cell_like(height: int = 24, width: int = 32) -> np.ndarray:
    """An 8-bit RGB picture with a bright, uneven blob on black, as segmented cells are."""
    y, x = np.mgrid[:height, :width]
    blob = np.clip(1.2 - np.hypot((y - height / 2) / height, (x - width / 2) / width) * 3, 0, 1)
    noise = np.random.default_rng(1).uniform(0.7, 1.0, (height, width, 3))
    return np.rint(blob[..., None] * noise * (200, 150, 230)).astype(np.uint8)


def _scaled_to(pixels8: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(pixels8.astype(np.float64) * (2**bits - 1) / 255).astype(np.uint16)


def _rgb48_png(pixels: np.ndarray) -> bytes:
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    return _png(width, height, 16, 2, rows)


def test_exif_orientation_is_applied_for_files_and_uploads(tmp_path: Path) -> None:
    stored = _cell_like(96, 64)  # 64 wide, 96 tall, as the sensor wrote it
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)

    from_file, from_upload = read_rgb(path), decode_image_bytes(path.read_bytes(), "phone.jpg")

    assert from_file.size == from_upload.size == (96, 64)
    viewed = np.asarray(Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(from_file).astype(int) - viewed).mean() < 1  # the other way round: about 5
    assert np.array_equal(np.asarray(from_file), np.asarray(from_upload))


@pytest.mark.parametrize("bits", [10, 12, 14])
@pytest.mark.parametrize("container", ["gray.png", "gray.tif", "rgb.png", "rgb.tif"])
def test_10_12_and_14_bit_values_in_16_bit_files_are_scaled_by_their_range(
    tmp_path: Path, bits: int, container: str, caplog: pytest.LogCaptureFixture
) -> None:
    reference = _cell_like()
    if container.startswith("gray"):
        reference = np.repeat(reference[..., :1], 3, axis=2)
    wide = _scaled_to(reference, bits)
    path = tmp_path / container
    if container == "rgb.png":
        path.write_bytes(_rgb48_png(wide))
    elif container == "rgb.tif":
        tifffile.imwrite(path, wide, photometric="rgb")
    else:
        Image.fromarray(wide[..., 0]).save(path)

    decoded = decode_image(path.read_bytes(), path)
    with caplog.at_level(logging.DEBUG, logger="blastscope.data.images"):
        image = read_rgb(path)

    pixels = np.asarray(image).astype(int)
    assert image.mode == "RGB" and np.abs(pixels - reference).max() <= 1
    assert abs(pixels.max() - int(reference.max())) <= 1  # not 1/16 of it, as scaling by 65535 gives
    assert decoded.scaling == (16, bits)
    assert (
        decoded.note == f"{path}: 16-bit container with values 0-{wide.max()}: scaled as {bits}-bit (0-{2**bits - 1})"
    )
    assert any(decoded.note in record.getMessage() for record in caplog.records)


def test_full_range_16_bit_images_are_scaled_by_65535_without_a_note(tmp_path: Path) -> None:
    reference = _cell_like()
    wide = _scaled_to(reference, 16)
    (tmp_path / "rgb.png").write_bytes(_rgb48_png(wide))

    decoded = decode_image((tmp_path / "rgb.png").read_bytes(), "rgb.png")

    assert decoded.note is None and decoded.scaling == (16, 16)
    assert np.abs(np.asarray(decoded.image).astype(int) - reference).max() <= 1


def test_files_read_at_different_depths_are_announced_once_naming_two_of_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blastscope.data import images

    monkeypatch.setattr(images, "_first_at_depth", {})
    for name, bits in (("a12.tif", 12), ("b12.tif", 12), ("c16.tif", 16), ("d16.tif", 16), ("e10.tif", 10)):
        tifffile.imwrite(tmp_path / name, _scaled_to(_cell_like(), bits)[..., 0])
    with caplog.at_level(logging.WARNING, logger="blastscope.data.images"):
        read_rgb(tmp_path / "a12.tif")
        read_rgb(tmp_path / "b12.tif")
        assert not [r for r in caplog.records if "brightness is not comparable" in r.getMessage()]
        for name in ("c16.tif", "d16.tif", "e10.tif"):
            read_rgb(tmp_path / name)

    mixed = [r.getMessage() for r in caplog.records if "brightness is not comparable" in r.getMessage()]
    assert len(mixed) == 2  # once for 16-bit, once for 10-bit; never again for a depth already met
    assert mixed[0].startswith(f"{tmp_path / 'c16.tif'} was read as 16-bit but {tmp_path / 'a12.tif'} as 12-bit")
    assert mixed[1].startswith(f"{tmp_path / 'e10.tif'} was read as 10-bit but {tmp_path / 'a12.tif'} as 12-bit")


def test_16_bit_rgba_is_scaled_and_composited_on_black(tmp_path: Path) -> None:
    row = np.array([[[4095, 2048, 0, 65535], [4095, 4095, 4095, 0]]], dtype=">u2")
    (tmp_path / "rgba.png").write_bytes(_png(2, 1, 16, 6, b"\x00" + row.tobytes()))

    decoded = decode_image((tmp_path / "rgba.png").read_bytes(), "rgba.png")

    assert np.asarray(decoded.image)[0].tolist() == [[255, 128, 0], [0, 0, 0]]
    assert decoded.scaling == (16, 12)


def test_a_16_bit_tiff_with_an_orientation_tag_is_turned_once(tmp_path: Path) -> None:
    wide = _scaled_to(_cell_like(24, 32), 12)
    tifffile.imwrite(tmp_path / "turned.tif", wide, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    tifffile.imwrite(tmp_path / "gray.tif", wide[..., 0], extratags=[(274, "H", 1, 6, True)])

    rgb, gray = read_rgb(tmp_path / "turned.tif"), read_rgb(tmp_path / "gray.tif")

    expected = np.rot90(_scaled_to(_cell_like(24, 32), 8), k=-1)  # 90° clockwise: 24 wide, 32 tall
    assert rgb.size == gray.size == (24, 32)
    assert np.abs(np.asarray(rgb).astype(int) - expected).max() <= 1
    assert np.abs(np.asarray(gray)[..., 0].astype(int) - expected[..., 0]).max() <= 1


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([[-5, 100]], dtype=np.int16), "signed pixel values"),
        (np.array([[0, 70000]], dtype=np.uint32), "32-bit pixel values up to 70,000"),
    ],
)
def test_pixels_outside_16_bits_are_refused_not_clipped(tmp_path: Path, values: np.ndarray, message: str) -> None:
    tifffile.imwrite(tmp_path / "odd.tif", values)

    with pytest.raises(ImageError, match=message):
        read_rgb(tmp_path / "odd.tif")


@pytest.mark.parametrize(
    ("dtype", "reason"),
    [(np.float32, "32-bit floating-point TIFF"), (np.int32, "32-bit signed integer TIFF")],
)
def test_a_tiff_with_samples_pillow_cannot_open_says_which(tmp_path: Path, dtype: type, reason: str) -> None:
    path = tmp_path / "analysis.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), dtype), photometric="rgb")  # as image-analysis software saves it

    for read in (read_rgb, probe_image):
        with pytest.raises(ImageError) as error:
            read(path)  # was: "not a BMP, PNG, JPEG, TIFF or WebP image despite its extension"
        assert str(error.value) == f"{path}: {reason}, which cannot be read; save the image as 8- or 16-bit PNG or TIFF"


def test_a_float_grey_tiff_is_refused_at_the_scan_as_decoding_refuses_it(tmp_path: Path) -> None:
    path = tmp_path / "analysis.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.float32))  # Pillow opens it (mode F), unlike float RGB

    for read in (read_rgb, probe_image):  # the probe passed it: data inspect counted it, training then skipped it
        with pytest.raises(ImageError) as error:
            read(path)
        assert str(error.value) == (
            f"{path}: 32-bit floating-point TIFF, which cannot be read; save the image as 8- or 16-bit PNG or TIFF"
        )


def test_images_opened_by_the_caller_are_read_like_files(tmp_path: Path) -> None:
    stored = _cell_like(96, 64)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=100, subsampling=0, exif=exif)
    wide = _scaled_to(_cell_like(), 12)
    (tmp_path / "rgb.png").write_bytes(_rgb48_png(wide))
    Image.fromarray(wide[..., 0]).save(tmp_path / "gray.png")

    for name in ("phone.jpg", "rgb.png", "gray.png"):
        opened = decode_pil(Image.open(tmp_path / name))
        assert np.array_equal(np.asarray(opened.image), np.asarray(read_rgb(tmp_path / name))), name
    assert decode_pil(Image.open(tmp_path / "rgb.png")).scaling == (16, 12)
    with pytest.raises(ImageError, match="pass the file's path or bytes"):
        decode_pil(Image.open(io.BytesIO((tmp_path / "rgb.png").read_bytes())))


def test_decoding_an_already_decoded_or_in_memory_image_changes_nothing(tmp_path: Path) -> None:
    stored = _cell_like(96, 64)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=100, subsampling=0, exif=exif)
    once = read_rgb(tmp_path / "phone.jpg")

    twice = decode_pil(once).image  # not turned a second time
    made = decode_pil(Image.fromarray(stored)).image

    assert twice.size == (96, 64) and np.array_equal(np.asarray(twice), np.asarray(once))
    assert np.array_equal(np.asarray(made), stored)


@pytest.mark.parametrize("reader", [read_rgb, probe_image])
def test_pipes_device_links_and_huge_files_are_refused_before_reading(
    tmp_path: Path,
    special_files: Callable[[Path], dict[Path, str]],
    returns_within: Callable[..., Any],
    reader: Callable[[Path], object],
) -> None:
    for path, reason in special_files(tmp_path).items():
        with pytest.raises(ImageError, match=re.escape(f"{path}: {reason}")):
            returns_within(10, reader, path)


def test_a_16_bit_tiff_with_separate_colour_planes_is_refused_not_scrambled(tmp_path: Path) -> None:
    wide = _scaled_to(_cell_like(), 12)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(wide, -1, 0), photometric="rgb", planarconfig="separate")

    for read in (read_rgb, probe_image):  # probe_image: the dataset scan skips it with the reason, before training
        with pytest.raises(ImageError, match="16-bit TIFF stored in a layout Pillow reads as 8-bit") as error:
            read(path)  # was: a scrambled picture of noise, with no word said
        assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
