"""On-disk cache of decoded, resized cells, so each image file is decoded once per size rather than once per epoch.

An entry is one ``.npy`` file keyed by (content digest, size, interpolation, segment mode and red-cell diameter, crop
fraction) that also
records the source file's byte size and modification time and the decoder's version: a file edited after it was
hashed, or an entry written by an older decoder (before EXIF orientation and 10/12-bit scaling), no longer matches
and is decoded again, never served stale. With segmentation on (``--segment auto|always``) the entry's name also says
whether its cell was cut out, and by which :data:`~blastscope.segmentation.modes.SEGMENTATION_VERSION`, so a cached
read reports it as a fresh decode does; a cell that cannot be found is not cached. A cut-out entry also records how
many whole white cells its image held (``ModelInput.white_cells``); one written before that field is stale and decoded
again, never read as uncounted. A cropped entry (``--crop-fraction``) also records whether the crop clipped its
cell. Entries are written to a temporary file and
renamed into place, so a killed run or two DataLoader workers filling the same entry leave either nothing or a
complete entry.

One file per entry rather than memory-mapped shards: at 224 px a warm .npy read took 0.17 ms against 0.02 ms from a
shard, but decoding a 450-px C-NMC WebP and resizing it takes about 10 ms, so both make decoding vanish, and single
files need no locking, no index and no compaction (benchmarks/bench_cache.py measures the cache against Pillow).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from blastscope.data.images import DECODER_VERSION, read_rgb
from blastscope.data.preprocessing import check_crop_fraction, check_segment_mode
from blastscope.errors import BlastscopeError, ImageError
from blastscope.segmentation.background import CELL_LEVEL
from blastscope.segmentation.modes import SEGMENTATION_VERSION, CellNotFoundError, cell_for_model

CACHE_ENV = "BLASTSCOPE_CACHE"
log = logging.getLogger(__name__)
_npy_header_lock = threading.Lock()
"""np.load parses the .npy header with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
("SystemError: AST constructor recursion depth mismatch", python/cpython#106905); a read takes ~0.2 ms."""
_unwritable_warning = threading.Lock()  # held for good by the first thread that warns: one warning per process
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
CLIPPED_SHARE = 0.01  # a crop that leaves more than this share of the cell's pixels outside its window clipped the cell
NOT_COUNTED = -1  # an entry's white_cells when segmentation did not count them (a cut-out re-centred on black)


def cache_root() -> Path:
    """Where blastscope caches things: ``$BLASTSCOPE_CACHE`` if set, else the user's cache directory."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("blastscope"))


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One image as a model's transform takes it, and whether blastscope cut its cell out of a background first.

    Attributes
    ----------
    pixels : numpy.ndarray
        (S, S, 3) uint8 RGB at the model's input size.
    segmented : bool
        True when the pixels are the cell cut out onto black (``--segment``), False for the image as decoded.
    clipped : bool
        True when the ``--crop-fraction`` window left more than :data:`CLIPPED_SHARE` of the cell outside it.
    white_cells : int or None
        Whole white cells segmentation found in the image (``CellImage.white_cells``): more than one means the image
        was not of one cell (a smear photograph) and ``pixels`` show only the one nearest its centre. None where not
        counted (not segmented).
    """

    pixels: np.ndarray
    segmented: bool
    clipped: bool = False
    white_cells: int | None = None


def model_input(
    image: Image.Image,
    size: int,
    interpolation: str,
    segment: str = "never",
    crop_fraction: float = 1.0,
    red_cell_diameter: float | None = None,
) -> ModelInput:
    """Apply the ``segment`` mode to the whole decoded image (at ``red_cell_diameter`` px, None: measured on it), keep
    its central ``crop_fraction`` window (:func:`crop_centre`), then resize it to ``size`` x ``size``.

    Raises ``CellNotFoundError`` when segmentation finds no cell, ``BlastscopeError`` for an unknown mode,
    interpolation, crop fraction or red-cell diameter.
    """
    check_crop_fraction(crop_fraction)
    segmented, white_cells = False, None
    if check_segment_mode(segment) != "never":
        rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        cell = cell_for_model(rgb, segment, red_cell_diameter)
        image = Image.fromarray(cell.image) if cell.segmented else image
        segmented, white_cells = cell.segmented, cell.white_cells
    image, clipped = crop_centre(image, crop_fraction)
    return ModelInput(resize_rgb(image, size, interpolation), segmented, clipped, white_cells)


def crop_centre(image: Image.Image, fraction: float) -> tuple[Image.Image, bool]:
    """The centred square window of side ``fraction`` x the shorter side, and whether it clipped the cell.

    A fixed window rather than each cell's bounding box: every cell keeps the physical scale of its canvas, so a
    blast still looks larger than a normal cell (C-NMC cells sit centred on a black canvas of one magnification).
    The cell is clipped when more than :data:`CLIPPED_SHARE` of its pixels (brightest channel >= :data:`CELL_LEVEL`)
    fall outside the window. ``fraction`` 1 returns ``image`` itself, never clipped.
    """
    if fraction >= 1.0:
        return image, False
    width, height = image.size
    side = max(1, round(fraction * min(width, height)))
    left, top = (width - side) // 2, (height - side) // 2
    cell = np.asarray(image.convert("RGB") if image.mode != "RGB" else image).max(axis=2) >= CELL_LEVEL
    inside = int(cell[top : top + side, left : left + side].sum())
    total = int(cell.sum())
    clipped = total > 0 and total - inside > CLIPPED_SHARE * total
    return image.crop((left, top, left + side, top + side)), clipped


def decode_resized(
    path: Path,
    size: int,
    interpolation: str,
    segment: str = "never",
    crop_fraction: float = 1.0,
    red_cell_diameter: float | None = None,
) -> ModelInput:
    """Decode ``path`` to RGB, segment it as ``segment`` says, crop it to its central ``crop_fraction`` and resize
    it to size x size.

    Raises ``ImageError`` naming ``path`` when it cannot be read or its cell cannot be found.
    """
    try:
        return model_input(read_rgb(path), size, interpolation, segment, crop_fraction, red_cell_diameter)
    except CellNotFoundError as error:
        raise ImageError(path, error.reason) from None


def resize_rgb(image: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """The whole image as RGB, resized to ``size`` x ``size`` pixels: uint8 array of shape (size, size, 3).

    Raises ``BlastscopeError`` for an interpolation that is not one of ``RESAMPLING``.
    """
    if interpolation not in RESAMPLING:
        raise BlastscopeError(f"unknown interpolation {interpolation!r}; use one of {', '.join(RESAMPLING)}")
    if image.mode != "RGB":  # converting an RGB image would copy it whole, for nothing
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLING[interpolation])
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class CacheUsage:
    location: Path
    entries: int
    bytes: int


class DecodedCache:
    """Decoded uint8 pixels of cell images, by content digest, size, interpolation, segment mode (and red-cell
    diameter) and crop fraction.

    Holds only a path, so it pickles cheaply into DataLoader worker processes.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "decoded"

    def load(
        self,
        path: str | Path,
        digest: str,
        size: int,
        interpolation: str,
        segment: str = "never",
        crop_fraction: float = 1.0,
        red_cell_diameter: float | None = None,
    ) -> ModelInput:
        """The (size, size, 3) uint8 pixels of ``path`` as :func:`decode_resized` gives them, whether its cell was cut
        out, whether the crop clipped it and how many white cells it held; decoded and stored on the first request
        only. Raises ``ImageError`` as ``decode_resized`` does."""
        path = Path(path)
        try:
            stat = path.stat()
        except OSError as error:
            raise ImageError(path, f"cannot be read ({error.strerror or error})") from error
        outcomes = (False,) if segment == "never" else (True,) if segment == "always" else (True, False)
        for segmented in outcomes:
            entry = self._entry(digest, size, interpolation, segment, segmented, crop_fraction, red_cell_diameter)
            if (fresh := self._read_fresh(entry, stat, segmented)) is not None:
                return fresh
        decoded = decode_resized(path, size, interpolation, segment, crop_fraction, red_cell_diameter)
        entry = self._entry(digest, size, interpolation, segment, decoded.segmented, crop_fraction, red_cell_diameter)
        self._write(entry, decoded, stat, crop_fraction < 1.0)
        return decoded

    def usage(self) -> CacheUsage:
        entries = list(self.root.glob("*/*.npy")) if self.root.is_dir() else []
        return CacheUsage(self.root, len(entries), sum(entry.stat().st_size for entry in entries))

    def clean(self) -> CacheUsage:
        """Delete every entry (and any temporary file a killed run left) and report what was freed."""
        freed = self.usage()
        shutil.rmtree(self.root, ignore_errors=True)
        return freed

    def _entry(
        self,
        digest: str,
        size: int,
        interpolation: str,
        segment: str = "never",
        segmented: bool = False,
        crop_fraction: float = 1.0,
        red_cell_diameter: float | None = None,
    ) -> Path:
        """The entry's path; ``never`` and the whole image keep the names entries had before segmentation and
        cropping (their pixels are the same)."""
        if not digest or not digest.isalnum():
            raise ValueError(f"a cache key needs an alphanumeric content digest, got {digest!r}")
        outcome = "" if segment == "never" else f"-{segment}-{'cut' if segmented else 'whole'}-s{SEGMENTATION_VERSION}"
        if segment != "never" and red_cell_diameter is not None:
            outcome += f"-rbc{red_cell_diameter:g}"
        crop = "" if crop_fraction >= 1.0 else f"-crop{crop_fraction:.4f}"
        return self.root / digest[:2] / f"{digest}-{size}-{interpolation}{outcome}{crop}.npy"

    @staticmethod
    def _read_fresh(entry: Path, stat: os.stat_result, segmented: bool) -> ModelInput | None:
        """The entry's model input (``segmented``: whether the entry is a cut-out) if it exists, is intact and was made
        from a file of the same size and mtime by this decoder (an entry without a decoder field predates the field
        and is stale, and so is a cut-out without a white-cell count)."""
        try:
            with _npy_header_lock:
                record = np.load(entry, allow_pickle=False)
            if record["source_bytes"] != stat.st_size or record["source_mtime_ns"] != stat.st_mtime_ns:
                return None
            if record["decoder"] != DECODER_VERSION:
                return None
            fields = record.dtype.names or ()
            if segmented and "white_cells" not in fields:
                return None
            clipped = bool(record["clipped"]) if "clipped" in fields else False
            counted = int(record["white_cells"]) if segmented else NOT_COUNTED
            white_cells = None if counted == NOT_COUNTED else counted
            return ModelInput(np.array(record["pixels"]), segmented, clipped, white_cells)
        except (OSError, ValueError, KeyError, IndexError):
            return None

    @staticmethod
    def _write(entry: Path, decoded: ModelInput, stat: os.stat_result, cropped: bool = False) -> None:
        """Write atomically: readers see the old entry, no entry, or the complete new one, never a partial file.
        ``clipped`` is stored for ``cropped`` entries only and ``white_cells`` for cut-outs only, so other entries
        keep their old layout.

        The cache only saves time: when the entry cannot be written (full disk, read-only or forbidden folder) it is
        left out, the caller keeps its decoded pixels, and the process warns once.
        """
        dtype = _record_dtype(decoded.pixels.shape, with_clipped=cropped, with_white_cells=decoded.segmented)
        record = np.zeros((), dtype=dtype)
        record["source_bytes"] = stat.st_size
        record["source_mtime_ns"] = stat.st_mtime_ns
        record["decoder"] = DECODER_VERSION
        record["pixels"] = decoded.pixels
        if cropped:
            record["clipped"] = decoded.clipped
        if decoded.segmented:
            record["white_cells"] = NOT_COUNTED if decoded.white_cells is None else decoded.white_cells
        temporary = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                np.save(file, record, allow_pickle=False)
            os.replace(temporary, entry)
        except BaseException as error:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            if not isinstance(error, OSError):
                raise
            _warn_unwritable(entry.parent.parent, error)


def _warn_unwritable(root: Path, error: OSError) -> None:
    if not _unwritable_warning.acquire(blocking=False):
        return
    log.warning(
        "cannot write the decoded-image cache in %s (%s); decoding every epoch instead — set %s to a writable folder",
        root,
        error.strerror or error,
        CACHE_ENV,
    )


def _record_dtype(shape: tuple[int, ...], with_clipped: bool = False, with_white_cells: bool = False) -> np.dtype:
    """One record per entry: the source file's fingerprint and the decoder's version next to its pixels (and, for a
    cropped entry, whether the crop clipped its cell; for a cut-out, how many whole white cells its image held, or
    :data:`NOT_COUNTED`), in a plain .npy file."""
    fields = [("source_bytes", "<i8"), ("source_mtime_ns", "<i8"), ("decoder", "<i4"), ("pixels", "u1", shape)]
    return np.dtype(fields + [("clipped", "?")] * with_clipped + [("white_cells", "<i4")] * with_white_cells)
