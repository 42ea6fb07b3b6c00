"""Reading cell images: any supported file becomes an upright 8-bit RGB picture, or an ImageError that says why not.

One decoder serves files (:func:`read_rgb`) and uploads (:func:`decode_image_bytes`), so every reader (training,
``predict``, ``serve``, Grad-CAM overlays) sees the same pixels:

* **Orientation**: the EXIF orientation a camera or phone writes is applied (:func:`PIL.ImageOps.exif_transpose`), so
  a 64x96 JPEG tagged "rotate 90°" is read as the 96x64 picture every viewer shows.
* **Bit depth**: 16-bit containers (grey ``I;16``/``I;16B``/``I``, and 48/64-bit RGB(A) PNG and TIFF, which Pillow
  reads only as their high bytes and which are therefore decoded at full depth with OpenCV) are scaled to 8 bits by
  their real range. Many microscope cameras store 10-, 12- or 14-bit values in 16-bit files: when the brightest value
  fits in 10, 12 or 14 bits the image is scaled by 1023, 4095 or 16383, not 65535 (which would make it nearly black),
  and the decoder says so in one line (``x.tif: 16-bit container with values 0-4095: scaled as 12-bit``), as
  :attr:`Decoded.note` and as a logging warning. The depth is read from each file's own values, so a dim file of a
  12-bit camera can be read as 10-bit: when files read in one process are scaled by different depths, a warning names
  two of them (their brightness is not comparable; convert such a set to 8 bits with one scale). Pixels are scaled,
  never clipped.
* **Transparency** is composited on black, the background cells are segmented on.

The pixel limit guards against decompression bombs: it is checked from the header, before any pixel is decoded. Files
are read by :func:`blastscope.data.reading.read_image_file`: regular files only, up to a byte limit checked before
reading (a named pipe, ``/dev/zero`` or a huge sparse file is an ImageError, not a hang or a full memory).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from blastscope.data.reading import read_image_file
from blastscope.errors import ImageError, ImageTooLargeError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 50_000_000
DECODER_VERSION = 4
"""Bumped whenever decoding gives different pixels for the same bytes (2: EXIF orientation, 10/12-bit range; 3: 14-bit
range; 4: 16-bit TIFFs Pillow reads as 8-bit refused, not scrambled), so the
decoded-image cache re-decodes what an older decoder stored."""

_FORMATS = ("PNG", "BMP", "JPEG", "TIFF", "WEBP")  # Pillow tries only these decoders, in this order
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WIDE_CHANNELS = re.compile(r";16[BLN]?$")  # Pillow's raw modes for 16 bits per channel, which it cuts to 8 bits
_CONTAINER_BITS = re.compile(r";(\d+)")
_BITS_PER_SAMPLE = 258  # the TIFF tag
_SAMPLE_FORMAT = 339  # the TIFF tag, and its values' names
_SAMPLE_KINDS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}
_UNREADABLE_SAMPLES = "{bits}-bit {kind} TIFF, which cannot be read; save the image as 8- or 16-bit PNG or TIFF"
_DEPTHS = (10, 12, 14, 16)  # the camera depths a 16-bit container's values are read as, smallest that holds them
_SCALES = {  # value -> 8 bits, for values in each depth: lookup tables keep 16-bit decoding at one byte a sample
    bits: np.rint(np.arange(65536) * (255 / (2**bits - 1))).clip(0, 255).astype(np.uint8) for bits in _DEPTHS
}
EMPTY_FILE_REASON = "empty file (0 bytes); delete it or replace it with the image"
"""Why a file or upload of 0 bytes is refused, and the fix: one text for every door (``serve`` answers it 400)."""
_reported: set[tuple[int, int]] = set()  # (container bits, scaled bits) already warned about in this process
_first_at_depth: dict[int, str] = {}  # scaled bits -> the first wide file read at that depth in this process


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What a cheap look at a file tells: enough to list sizes without decoding pixels."""

    width: int
    height: int
    mode: str
    format: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """An image as blastscope reads it: upright 8-bit RGB, and what was done to it that a user should know."""

    image: Image.Image
    note: str | None = None
    scaling: tuple[int, int] | None = None
    """(container bits, bits scaled by) of an image wider than 8 bits, its range read from its values, e.g. (16, 12);
    else None."""
    name: str = ""
    """The file or upload the image came from, for messages."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def probe_image(path: Path, data: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Check that ``path`` is a complete image within the pixel limit, decoding as little as the format allows.

    Scanning thousands of cells must take seconds, so pixels are decoded only where that is the only way to notice a
    truncated file and is cheap (BMP, TIFF, JPEG at 1/8 scale); PNG is checked by its chunk checksums and WebP by its
    container. ``data`` lets a caller that already read the bytes (to hash them) avoid a second read.
    """
    data = read_image_file(path) if data is None else data
    if not data:
        raise ImageError(path, EMPTY_FILE_REASON)
    with _open(path, io.BytesIO(data), max_pixels) as image:
        header = ImageHeader(image.width, image.height, image.mode, image.format or "unknown")
        _refuse_misread_tiff(image, path, _rawmode(image))
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
    """Decode ``path`` fully into an upright 8-bit RGB image (grayscale, palette, alpha and 16-bit inputs included).

    A special file (pipe, device, socket, folder) or one over the byte limit is an ImageError before it is opened."""
    path = Path(path)
    return _reported_image(decode_image(read_image_file(path), path, max_pixels))


def decode_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an in-memory image (an upload named ``name``) exactly as :func:`read_rgb` decodes a file, under the same
    format whitelist and pixel limit; an ImageError says why not."""
    return _reported_image(decode_image(data, name, max_pixels))


def decode_image(data: bytes, name: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """The one decoder: ``data`` (the bytes of the file or upload ``name``) as an upright 8-bit RGB image plus a note
    when its bit depth was read from its values (see the module docstring). Logs nothing; an ImageError says why the
    bytes are not a usable image."""
    if not data:
        raise ImageError(name, EMPTY_FILE_REASON)
    with _open(name, io.BytesIO(data), max_pixels) as image:
        return _decode_opened(image, name, data)


def decode_pil(image: Image.Image, name: Path | str | None = None) -> Decoded:
    """An image a caller opened with Pillow (``blastscope.load(...).predict([Image.open(f)])``), read as
    :func:`decode_image` reads bytes: turned upright, 16-bit grey scaled by its range, transparency on black.

    Pillow keeps only the high byte of 16-bit-per-channel colour; such an image not yet loaded is read again from its
    file at full depth, and one without a file is an ImageError asking for the path or bytes instead. (An image
    already loaded can no longer tell.) Its note is logged as :func:`read_rgb` logs a file's."""
    name = name or getattr(image, "filename", "") or "<image>"
    decoded = _decode_opened(image, name, None)
    _reported_image(decoded)
    return decoded


def _decode_opened(image: Image.Image, name: Path | str, data: bytes | None) -> Decoded:
    stored_orientation = _orientation(image, name) if image.format == "TIFF" else None
    rawmode = _rawmode(image)  # only while the pixels are not loaded yet
    wide = (
        image.format in ("PNG", "TIFF")
        and image.mode not in _SIXTEEN_BIT_MODES
        and bool(_WIDE_CHANNELS.search(rawmode))
    )
    _refuse_misread_tiff(image, name, rawmode)
    if wide and data is None:
        filename = getattr(image, "filename", "")
        if not filename:
            raise ImageError(
                name, "16 bits per channel, of which Pillow keeps 8; pass the file's path or bytes instead of the image"
            )
        data = read_image_file(Path(filename))
        return decode_image(data, filename, max(DEFAULT_MAX_PIXELS, image.width * image.height))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(name, f"corrupt or truncated {image.format} file ({error}); replace it") from error
    orientation = _orientation(image, name)  # Pillow has already turned a TIFF upright and dropped its tag
    if image.mode in _SIXTEEN_BIT_MODES:
        decoded = _sixteen_bit_gray_to_rgb(image, rawmode, name)
    elif wide and data is not None:
        decoded = _wide_channels_to_rgb(image, data, name, stored_orientation or orientation)
    else:
        decoded = Decoded(to_rgb(image, name))
    return Decoded(_upright(decoded.image, orientation), decoded.note, decoded.scaling, str(name))


def to_rgb(image: Image.Image, path: Path | str = "<image>") -> Image.Image:
    """Convert a decoded 8-bit image of any mode to RGB uint8, compositing transparency on the black cell background.

    A 16-bit grey image is scaled by its real range as :func:`decode_image` does; orientation is left as it is."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in _SIXTEEN_BIT_MODES:
        return _reported_image(_sixteen_bit_gray_to_rgb(image, _rawmode(image), path))
    if image.mode == "F":
        raise ImageError(path, "32-bit float pixels are not supported; save the image as 8- or 16-bit")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _reported_image(decoded: Decoded) -> Image.Image:
    """The image, after logging its note: a warning the first time each kind of scaling is met, then at debug level
    (a 12-bit dataset would otherwise repeat one line per file), and a warning the first time a file is scaled by
    another depth than one read before it."""
    if decoded.scaling is not None:
        bits = decoded.scaling[1]
        others = {depth: name for depth, name in _first_at_depth.items() if depth != bits}
        if bits not in _first_at_depth and others:
            depth, name = next(iter(others.items()))
            log.warning(
                "%s was read as %d-bit but %s as %d-bit (each 16-bit file's depth is read from its own values): "
                "their brightness is not comparable; if one camera made them, convert them to 8 bits with one scale",
                decoded.name,
                bits,
                name,
                depth,
            )
        _first_at_depth.setdefault(bits, decoded.name)
    if decoded.note is not None:
        if decoded.scaling in _reported:
            log.debug(decoded.note)
        else:
            _reported.add(decoded.scaling)
            log.warning("%s (further files scaled the same way are logged at debug level)", decoded.note)
    return decoded.image


def _rawmode(image: Image.Image) -> str:
    """How the file stores its pixels, as Pillow's raw mode (``I;16B``, ``RGB;16L``...); read before ``load()``."""
    for tile in getattr(image, "tile", None) or ():  # a picture made in memory has no tiles
        args = tile.args if hasattr(tile, "args") else tile[3]
        if isinstance(args, str):
            return args
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            return args[0]
    return ""


def _refuse_misread_tiff(image: Image.Image, name: Path | str, rawmode: str) -> None:
    """An ImageError for a TIFF whose header declares more than 8 bits per sample in a layout that Pillow reads as
    8-bit samples (16-bit colour planes stored one after another), which would decode as a scrambled picture. A
    picture already loaded has no raw mode left to tell by and passes."""
    wide = _WIDE_CHANNELS.search(rawmode)
    if image.format != "TIFF" or not rawmode or wide or image.mode in (*_SIXTEEN_BIT_MODES, "F"):
        return
    bits = image.tag_v2.get(_BITS_PER_SAMPLE, 8)  # type: ignore[attr-defined]
    bits = max(bits) if isinstance(bits, tuple) else int(bits)
    if bits > 8:
        raise ImageError(
            name,
            f"{bits}-bit TIFF stored in a layout Pillow reads as 8-bit, a scrambled picture (e.g. each colour in its "
            "own plane); save it as 8-bit, or as 16-bit RGB with interleaved channels",
        )


def _orientation(image: Image.Image, name: Path | str) -> int | None:
    try:
        return image.getexif().get(ExifTags.Base.Orientation)
    except Exception as error:  # a broken EXIF block must not make a readable picture unreadable
        log.warning("%s: EXIF block unreadable (%s); orientation not applied", name, error)
        return None


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    """``image`` turned as EXIF ``orientation`` says, by Pillow's own ``exif_transpose``."""
    if orientation in (None, 1):
        return image
    image.getexif()[ExifTags.Base.Orientation] = orientation
    return ImageOps.exif_transpose(image)


def _container_bits(rawmode: str, mode: str) -> int:
    match = _CONTAINER_BITS.search(rawmode)
    if match:
        return int(match[1])
    return 32 if mode == "I" else 16


def _scaled(values: np.ndarray, name: Path | str, container: int) -> tuple[np.ndarray, str | None, tuple[int, int]]:
    """``values`` scaled to uint8 by the smallest of 10, 12, 14 or 16 bits that holds their maximum; the note says so
    whenever that is less than the container's bits."""
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise ImageError(
            name, f"signed pixel values (down to {low}) are not supported; save the image as unsigned 16-bit"
        )
    if high > 65535:
        raise ImageError(
            name, f"{container}-bit pixel values up to {high:,} are not supported; save the image as 8- or 16-bit"
        )
    bits = next(bits for bits in _DEPTHS if high < 2**bits)
    note = None
    if bits < container:
        note = f"{name}: {container}-bit container with values {low}-{high}: scaled as {bits}-bit (0-{2**bits - 1})"
    return _SCALES[bits][values], note, (container, bits)


def _sixteen_bit_gray_to_rgb(image: Image.Image, rawmode: str, name: Path | str) -> Decoded:
    """Scale by the real range (Pillow's own conversion clips everything above 255 to white)."""
    gray, note, scaling = _scaled(np.asarray(image), name, _container_bits(rawmode, image.mode))
    return Decoded(Image.fromarray(gray).convert("RGB"), note, scaling)


def _wide_channels_to_rgb(image: Image.Image, data: bytes, name: Path | str, stored_orientation: int | None) -> Decoded:
    """A 48- or 64-bit PNG or TIFF at full depth: Pillow keeps only each sample's high byte (12-bit data comes out
    0-15: black), so OpenCV decodes the samples, checked against Pillow's high bytes (same picture, same way up)."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    reference = np.asarray(image)
    if pixels is not None and pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = np.concatenate([pixels[..., 2::-1], pixels[..., 3:]], axis=2)  # OpenCV's BGR(A) -> RGB(A)
    if pixels is None or pixels.shape != reference.shape or pixels.dtype != np.uint16:
        raise ImageError(
            name, f"16-bit-per-channel {image.format} file cannot be decoded at full depth; save it uncompressed"
        )
    high_bytes = (pixels >> 8).astype(np.uint8)
    unsure = stored_orientation not in (None, 1) and high_bytes.min() == high_bytes.max()
    if unsure or not np.array_equal(high_bytes, reference):
        raise ImageError(
            name, f"16-bit-per-channel {image.format} file decoded differently by Pillow and OpenCV; save it again"
        )
    colour, note, scaling = _scaled(pixels[..., :3], name, 16)
    if pixels.shape[2] == 4:
        alpha = _SCALES[16][pixels[..., 3]]
        return Decoded(to_rgb(Image.fromarray(np.dstack([colour, alpha])), name), note, scaling)
    return Decoded(Image.fromarray(colour), note, scaling)


def _open(path: Path, stream: io.BytesIO, max_pixels: int) -> Image.Image:
    """Open the header only, refusing pictures above ``max_pixels`` before any pixel is decoded."""
    if max_pixels > (Image.MAX_IMAGE_PIXELS or 0):
        Image.MAX_IMAGE_PIXELS = max_pixels  # the user raised the limit; Pillow's own bomb guard must not undercut it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        size = re.search(r"\((\d+) pixels\)", str(error))  # Pillow's own limit is another: say only the size
        pixels = f"{int(size.group(1)):,} pixels: " if size else ""
        raise ImageTooLargeError(path, f"{pixels}{_pixel_limit_reason(max_pixels)}") from error
    except UnidentifiedImageError as error:
        reason = _tiff_samples_reason(stream)
        raise ImageError(
            path, reason or "not a BMP, PNG, JPEG, TIFF or WebP image despite its extension; delete or convert it"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"corrupt or truncated image ({error}); replace it") from error
    if image.width * image.height > max_pixels:
        pixels = image.width * image.height
        image.close()
        raise ImageTooLargeError(
            path, f"{image.width}x{image.height} = {pixels:,} pixels: {_pixel_limit_reason(max_pixels)}"
        )
    if image.mode == "F":  # float grey: Pillow opens it, to_rgb cannot use it, so the scan refuses it as decoding does
        image.close()
        raise ImageError(path, _UNREADABLE_SAMPLES.format(bits=32, kind="floating-point"))
    return image


def _tiff_samples_reason(stream: io.BytesIO) -> str | None:
    """Why a TIFF Pillow could not open is refused, when its first directory declares samples Pillow has no mode for
    (32-bit floating-point RGB, as image-analysis software saves it), so that it is not called "not a TIFF"; None for
    other files. Only the header and the first directory's tags are read."""
    header = stream.getvalue()[:16]
    try:
        tags = TiffImagePlugin.ImageFileDirectory_v2(header if header[2:3] == b"+" else header[:8])  # "+": BigTIFF
        stream.seek(tags.next)
        tags.load(stream)
    except (SyntaxError, struct.error, OSError):  # not a TIFF, or its header is cut short
        return None
    bits, kind = tags.get(_BITS_PER_SAMPLE, 1), tags.get(_SAMPLE_FORMAT, 1)  # one value, or one per sample
    bits = max(bits) if isinstance(bits, tuple) else int(bits)
    kind = max(kind) if isinstance(kind, tuple) else int(kind)
    if kind not in _SAMPLE_KINDS or (kind == 1 and bits <= 16):
        return None
    return _UNREADABLE_SAMPLES.format(bits=bits, kind=_SAMPLE_KINDS[kind])


def _pixel_limit_reason(max_pixels: int) -> str:
    """Why a picture is refused, and what works: only ``data inspect|split``, ``scan`` and ``serve`` have
    ``--max-pixels`` (``train``, ``evaluate``, ``predict`` and the Python API's cells decode at
    :data:`DEFAULT_MAX_PIXELS`)."""
    return (
        f"over the limit of {max_pixels:,} pixels (a guard against decompression bombs); shrink or crop the image "
        "(`data inspect|split --max-pixels N`, `scan --max-pixels N` and `serve --max-pixels N` raise the limit; other "
        "commands keep it)"
    )
