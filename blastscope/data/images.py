"""Reading cell images: any supported file becomes an 8-bit RGB picture, or an ImageError that says why not.

Cells are segmented on a black background, so transparency is composited on black; 16-bit pixels are scaled to 8 bits
(65535 -> 255), never clipped. The pixel limit guards against decompression bombs: it is checked from the header,
before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from blastscope.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 50_000_000

_FORMATS = ("PNG", "BMP", "JPEG", "TIFF", "WEBP")  # Pillow tries only these decoders, in this order
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What a cheap look at a file tells: enough to list sizes without decoding pixels."""

    width: int
    height: int
    mode: str
    format: str


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def probe_image(path: Path, data: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Check that ``path`` is a complete image within the pixel limit, decoding as little as the format allows.

    Scanning thousands of cells must take seconds, so pixels are decoded only where that is the only way to notice a
    truncated file and is cheap (BMP, TIFF, JPEG at 1/8 scale); PNG is checked by its chunk checksums and WebP by its
    container. ``data`` lets a caller that already read the bytes (to hash them) avoid a second read.
    """
    data = path.read_bytes() if data is None else data
    if not data:
        raise ImageError(path, "empty file (0 bytes); delete it or replace it with the image")
    with _open(path, io.BytesIO(data), max_pixels) as image:
        header = ImageHeader(image.width, image.height, image.mode, image.format or "unknown")
        try:
            if image.format == "PNG":
                image.verify()
            elif image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            elif image.format != "WEBP":
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(path, f"corrupt or truncated {header.format} file ({error}); replace it") from error
    return header


def read_rgb(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image (grayscale, palette, alpha and 16-bit inputs included)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(path, f"cannot be read ({error.strerror or error})") from error
    if not data:
        raise ImageError(path, "empty file (0 bytes); delete it or replace it with the image")
    with _open(path, io.BytesIO(data), max_pixels) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(path, f"corrupt or truncated {image.format} file ({error}); replace it") from error
        return to_rgb(image, path)


def to_rgb(image: Image.Image, path: Path | str = "<image>") -> Image.Image:
    """Convert a decoded image of any mode to RGB uint8, compositing transparency on the black cell background."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        raise ImageError(path, "32-bit float pixels are not supported; save the image as 8- or 16-bit")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 0..65535 to 0..255 (Pillow's own conversion clips everything above 255 to white)."""
    pixels = np.asarray(image).astype(np.float64)
    gray = np.clip(np.rint(np.clip(pixels, 0, 65535) / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), mode="RGB")


def _open(path: Path, stream: io.BytesIO, max_pixels: int) -> Image.Image:
    """Open the header only, refusing pictures above ``max_pixels`` before any pixel is decoded."""
    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = max_pixels  # the user raised the limit; Pillow's own bomb guard must not undercut it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(path, f"{_pixel_limit_reason(max_pixels)} ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(
            path, "not a BMP, PNG, JPEG, TIFF or WebP image despite its extension; delete or convert it"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"corrupt or truncated image ({error}); replace it") from error
    if image.width * image.height > max_pixels:
        pixels = image.width * image.height
        image.close()
        raise ImageError(path, f"{image.width}x{image.height} = {pixels:,} pixels: {_pixel_limit_reason(max_pixels)}")
    return image


def _pixel_limit_reason(max_pixels: int) -> str:
    return f"over the limit of {max_pixels:,} pixels; pass --max-pixels N to allow larger images"


def decode_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an in-memory image (an upload named ``name``) into RGB, under the same format whitelist and pixel limit
    as :func:`read_rgb`; an ImageError says why not."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    with _open(Path(name), io.BytesIO(data), max_pixels) as image:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(name, f"corrupt or truncated {image.format} file ({error}); replace it") from error
        return to_rgb(image, name)
