"""Synthetic stained single cells in the C-NMC 2019 layout: demo data the repository can ship.

The cells carry the cues that tell lymphoblasts (ALL) from normal precursors (HEM) in C-NMC: blasts are larger, with
rounder nuclei, finer chromatin, more visible nucleoli and a higher nucleus-to-cytoplasm ratio. Every trait is drawn
from overlapping per-class distributions and shifted per subject, and each subject has its own stain and illumination,
so no single feature separates the classes and a split that leaks subjects scores too well, as on the real data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from scipy.ndimage import gaussian_filter

from blastscope import __version__
from blastscope.data.attribution import SYNTH_MARKER, SYNTH_PNG_KEY
from blastscope.errors import DataError

FOLDS = 3
RENDER_CHUNK = 32

# Optical densities of one unit of the two stains: the purple nuclear stain and the pink cytoplasmic counterstain.
NUCLEAR_STAIN = np.array([0.62, 1.05, 0.48])
CYTOPLASM_STAIN = np.array([0.25, 0.95, 0.30])


@dataclass(frozen=True, slots=True)
class Trait:
    """A cell trait: its mean over both classes, its spread within a class, and the sign of (ALL mean - HEM mean)."""

    mean: float
    sd: float
    all_higher: bool


# Classes differ by `separation` within-class SDs per trait, so the demo's difficulty is one knob.
TRAITS = {
    "cell_radius": Trait(0.205, 0.018, all_higher=True),  # fraction of the image side
    "nc_ratio": Trait(0.78, 0.045, all_higher=True),  # nucleus radius / cell radius
    "nuclear_irregularity": Trait(0.055, 0.02, all_higher=False),  # amplitude of the nuclear outline's harmonics
    "chromatin_fineness": Trait(0.5, 0.18, all_higher=True),  # weight of fine over coarse chromatin texture
    "nucleolus_visibility": Trait(0.16, 0.08, all_higher=True),  # how much the nucleoli lighten the nucleus
}
SUBJECT_SHIFT = 0.5  # per-subject trait offset, in within-class SDs


def synthesize(
    out: str | Path,
    subjects_per_class: int = 20,
    cells_per_subject: int = 8,
    image_size: int = 64,
    seed: int = 0,
    separation: float = 1.6,
) -> Path:
    """Write a synthetic C-NMC-layout dataset under ``out`` and return ``out``.

    Files land in ``out/training_data/fold_N/{all,hem}/UID_<subject>_<image>_<cell>_<label>.png`` with ALL subjects
    ``1..n`` and HEM subjects ``H1..Hn`` spread over three folds. The same arguments always give byte-identical files.
    ``separation`` is the distance between the class means of each trait in within-class SDs: 0 makes the classes
    indistinguishable, larger values make them easier.
    """
    if subjects_per_class < 1 or cells_per_subject < 1:
        raise DataError("synthesize needs at least 1 subject per class and 1 cell per subject")
    if image_size < 16:
        raise DataError(f"image size {image_size} px is too small to draw a cell; use 16 px or more")
    if separation < 0:
        raise DataError(f"separation {separation} is negative; use 0 (indistinguishable) or more")
    out = Path(out)
    rng = np.random.default_rng(seed)
    plan = _plan_cells(rng, subjects_per_class, cells_per_subject, separation)
    marker = PngInfo()
    marker.add_text(SYNTH_PNG_KEY, str(seed))  # credited as synthetic, not C-NMC, wherever the cell is copied
    for start in range(0, len(plan["paths"]), RENDER_CHUNK):
        chunk = slice(start, start + RENDER_CHUNK)
        images = _render({key: value[chunk] for key, value in plan.items() if key != "paths"}, image_size, rng)
        for relative, pixels in zip(plan["paths"][chunk], images, strict=True):
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, format="PNG", pnginfo=marker)
    recipe = {
        "generator": f"blastscope synth {__version__}",
        "seed": seed,
        "subjects_per_class": subjects_per_class,
        "cells_per_subject": cells_per_subject,
        "image_size": image_size,
        "separation": separation,
    }
    (out / SYNTH_MARKER).write_text(json.dumps(recipe, indent=2))
    return out


def _plan_cells(
    rng: np.random.Generator, subjects_per_class: int, cells_per_subject: int, separation: float
) -> dict[str, np.ndarray]:
    """Draw every cell's file path, traits and its subject's stain, one row per cell."""
    rows: dict[str, list] = {"paths": [], "stain_gain": [], "stain_tint": [], "illumination": []}
    rows.update({name: [] for name in TRAITS})
    for label in ("all", "hem"):
        is_all = label == "all"
        for number in range(1, subjects_per_class + 1):
            subject = str(number) if is_all else f"H{number}"
            fold = f"fold_{(number - 1) % FOLDS}"
            stain_gain = rng.normal([1.0, 1.0], [0.12, 0.15])  # nuclear and cytoplasmic stain strength
            stain_tint = rng.normal(0.0, 0.06, size=3)  # shifts the stains' hue
            illumination = rng.normal(0.8, 0.06)
            subject_means = {
                name: _class_mean(trait, is_all, separation) + rng.normal(0.0, SUBJECT_SHIFT * trait.sd)
                for name, trait in TRAITS.items()
            }
            for index in range(cells_per_subject):
                image, cell = index // 2 + 1, index % 2 + 1
                rows["paths"].append(f"training_data/{fold}/{label}/UID_{subject}_{image}_{cell}_{label}.png")
                rows["stain_gain"].append(stain_gain)
                rows["stain_tint"].append(stain_tint)
                rows["illumination"].append(illumination)
                for name, trait in TRAITS.items():
                    rows[name].append(rng.normal(subject_means[name], trait.sd))
    return {key: np.asarray(values) for key, values in rows.items()}


def _class_mean(trait: Trait, is_all: bool, separation: float) -> float:
    offset = separation * trait.sd / 2
    return trait.mean + (offset if is_all == trait.all_higher else -offset)


def _render(cells: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a batch of cells as (n, size, size, 3) uint8 images on black, as C-NMC's segmented cells are."""
    n = len(cells["cell_radius"])
    grid = (np.arange(size) - (size - 1) / 2)[None, :, None]  # broadcasts to (n, y, x)
    centre = rng.normal(0.0, 0.025 * size, size=(n, 2))
    radius = np.clip(cells["cell_radius"], 0.12, 0.34) * size
    cell_mask = _blob_mask(rng, grid, centre, radius, irregularity=np.full(n, 0.05))

    nc_ratio = np.clip(cells["nc_ratio"], 0.5, 0.95)
    nucleus_radius = nc_ratio * radius
    room = radius - nucleus_radius
    angle = rng.uniform(0, 2 * np.pi, size=n)
    nucleus_centre = centre + (rng.uniform(0.2, 0.8, size=n) * room)[:, None] * np.stack(
        [np.sin(angle), np.cos(angle)], axis=1
    )
    irregularity = np.clip(cells["nuclear_irregularity"], 0.0, 0.2)
    nucleus_mask = _blob_mask(rng, grid, nucleus_centre, nucleus_radius, irregularity) * cell_mask

    chromatin = _chromatin(rng, n, size, np.clip(cells["chromatin_fineness"], 0.0, 1.0))
    nucleoli = _nucleoli(rng, grid, nucleus_centre, nucleus_radius, np.clip(cells["nucleolus_visibility"], 0, 0.5))

    nuclear_stain = cells["stain_gain"][:, 0, None, None] * (
        0.85 * cell_mask + 1.2 * nucleus_mask * (1.0 + 0.22 * chromatin - nucleoli)
    )
    cytoplasm_stain = cells["stain_gain"][:, 1, None, None] * 0.45 * cell_mask
    nuclear_vector = NUCLEAR_STAIN + cells["stain_tint"]
    density = (
        nuclear_stain[..., None] * nuclear_vector[:, None, None, :]
        + cytoplasm_stain[..., None] * CYTOPLASM_STAIN[None, None, None, :]
    )
    light = 255.0 * cells["illumination"][:, None, None, None] * np.exp(-density)
    light += rng.normal(0.0, 2.0, size=light.shape)
    return np.clip(np.rint(light * cell_mask[..., None]), 0, 255).astype(np.uint8)


def _blob_mask(
    rng: np.random.Generator, grid: np.ndarray, centre: np.ndarray, radius: np.ndarray, irregularity: np.ndarray
) -> np.ndarray:
    """Anti-aliased masks of round blobs whose outlines wobble by random low harmonics of the given amplitude."""
    dy = grid - centre[:, 0, None, None]
    dx = np.swapaxes(grid, 1, 2) - centre[:, 1, None, None]
    theta, rho = np.arctan2(dy, dx), np.hypot(dy, dx)
    outline = np.ones_like(theta)
    for harmonic in range(2, 6):
        amplitude = irregularity * rng.normal(1.0, 0.3, size=len(radius)) * 2 / harmonic
        phase = rng.uniform(0, 2 * np.pi, size=len(radius))
        outline = outline + amplitude[:, None, None] * np.cos(harmonic * theta + phase[:, None, None])
    return np.clip(radius[:, None, None] * outline - rho + 0.5, 0.0, 1.0)


def _chromatin(rng: np.random.Generator, n: int, size: int, fineness: np.ndarray) -> np.ndarray:
    """Unit-variance chromatin texture: a per-cell mix of fine grain and coarse clumps."""
    fine = _unit_noise(rng, (n, size, size), sigma=0.012 * size)
    coarse = _unit_noise(rng, (n, size, size), sigma=0.035 * size)
    weight = fineness[:, None, None]
    return (weight * fine + (1 - weight) * coarse) / np.sqrt(weight**2 + (1 - weight) ** 2)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    noise = gaussian_filter(rng.standard_normal(shape), sigma=(0, sigma, sigma))
    return noise / noise.std(axis=(1, 2), keepdims=True)


def _nucleoli(
    rng: np.random.Generator, grid: np.ndarray, centre: np.ndarray, radius: np.ndarray, visibility: np.ndarray
) -> np.ndarray:
    """Two pale Gaussian spots inside each nucleus, as bright as its nucleolus visibility."""
    spots = np.zeros((len(radius), grid.size, grid.size))
    for _ in range(2):
        angle = rng.uniform(0, 2 * np.pi, size=len(radius))
        distance = rng.uniform(0.0, 0.5, size=len(radius)) * radius
        y = centre[:, 0] + distance * np.sin(angle)
        x = centre[:, 1] + distance * np.cos(angle)
        width = 0.13 * radius[:, None, None]
        squared = (grid - y[:, None, None]) ** 2 + (np.swapaxes(grid, 1, 2) - x[:, None, None]) ** 2
        spots += rng.uniform(0.5, 1.0, size=len(radius))[:, None, None] * np.exp(-squared / (2 * width**2))
    return visibility[:, None, None] * spots


# --- Smear fields: white cells among red cells and platelets on a bright background, with exact masks -------------

# Optical densities (per unit amount) measured on BCCD smear photographs (Giemsa-type stain, MIT licence): a white
# cell's violet nucleus, its pale lilac cytoplasm, a red cell's pink, and a platelet's granular violet.
SMEAR_NUCLEUS = np.array([0.38, 0.52, 0.02])
SMEAR_CYTOPLASM = np.array([0.10, 0.16, 0.05])
SMEAR_RED_CELL = np.array([0.16, 0.35, 0.40])
SMEAR_PLATELET = np.array([0.30, 0.42, 0.06])
SMEAR_BACKGROUND = np.array([210.0, 212.0, 210.0])
SMEAR_FIELD_FRACTION = 1 / 6.4  # red-cell diameter / longer side, as in a BCCD field (640 px wide, red cells ~100 px)


@dataclass(frozen=True)
class SmearField:
    """A synthetic blood-smear field and its exact ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        HxWx3 uint8 RGB picture: pale background, pink red cells with central pallor, violet platelets, and white
        cells with a violet nucleus in pale lilac cytoplasm.
    white_cells : numpy.ndarray
        HxW int32: 0 outside white cells, ``k`` on white cell ``k`` (nucleus and cytoplasm; 1-based).
    nuclei : numpy.ndarray
        HxW int32: the nucleus of white cell ``k`` labelled ``k``.
    boxes : list of tuple of int
        ``(x0, y0, x1, y1)`` of each white cell's visible part, px, ends exclusive (index ``k - 1``).
    cut_by_border : numpy.ndarray
        Bool per white cell: it extends beyond the image edge.
    touching : list of tuple of int
        Pairs ``(j, k)`` of white cells drawn touching each other.
    red_cells : numpy.ndarray
        HxW bool: red-cell pixels.
    platelets : numpy.ndarray
        HxW bool: platelet pixels.
    red_cell_diameter : float
        Mean red-cell diameter, px.
    """

    image: np.ndarray
    white_cells: np.ndarray
    nuclei: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    cut_by_border: np.ndarray
    touching: list[tuple[int, int]]
    red_cells: np.ndarray
    platelets: np.ndarray
    red_cell_diameter: float


def smear_field(
    seed: int = 0,
    *,
    height: int = 240,
    width: int = 320,
    white_cells: int | None = None,
    touching: bool = True,
    cut_cells: int = 0,
    red_cell_cover: float = 0.35,
    platelets: int = 5,
    red_cell_diameter: float | None = None,
) -> SmearField:
    """Draw a smear-like field with known white-cell masks and boxes: test data without third-party images.

    Parameters
    ----------
    seed : int
        Random seed; the same arguments always give the same field.
    height, width : int
        Image size, px (at least 64).
    white_cells : int, optional
        Number of whole white cells, 1-4 drawn at random when None.
    touching : bool
        With two or more white cells, draw the first two touching each other.
    cut_cells : int
        Further white cells placed across the image edge (``cut_by_border`` True).
    red_cell_cover : float
        Target fraction of the field covered by red cells (they avoid white cells and may overlap each other).
    platelets : int
        Number of platelets (violet specks 0.15-0.3 red-cell diameters across).
    red_cell_diameter : float, optional
        Mean red-cell diameter, px; default 1/6.4 of the longer side, the scale of a BCCD field. White cells are
        1.5-2 red cells across.

    Returns
    -------
    SmearField
        The picture and its ground truth.

    Raises
    ------
    DataError
        When the size, counts or cover are out of range.
    """
    if height < 64 or width < 64:
        raise DataError(f"smear field {width}x{height} px is too small; use 64 px or more on each side")
    if white_cells is not None and not 0 <= white_cells <= 4:
        raise DataError(f"white_cells {white_cells} is out of range; use 0 to 4")
    if cut_cells < 0 or platelets < 0 or not 0 <= red_cell_cover <= 0.8:
        raise DataError("cut_cells and platelets must be >= 0 and red_cell_cover between 0 and 0.8")
    if red_cell_diameter is not None and not red_cell_diameter >= 8:
        raise DataError(f"red_cell_diameter {red_cell_diameter} px is too small to draw; use 8 px or more")
    rng = np.random.default_rng(seed)
    diameter = float(red_cell_diameter if red_cell_diameter is not None else max(height, width) * SMEAR_FIELD_FRACTION)
    count = int(rng.integers(1, 5)) if white_cells is None else white_cells
    cells = _place_white_cells(rng, height, width, diameter, count, touching and count >= 2, cut_cells)
    density = np.zeros((height, width, 3))
    owner = np.full((height, width), -1.0)  # index of the white cell owning each pixel, by scaled distance
    closeness = np.full((height, width), np.inf)
    nuclei = np.zeros((height, width), np.int32)
    for index, cell in enumerate(cells, start=1):
        window, dy, dx = _window(cell["y"], cell["x"], cell["radius"] + 2, height, width)
        rho = np.hypot(dy, dx)
        cover = np.clip(cell["radius"] - rho + 0.5, 0.0, 1.0)
        scaled = rho / cell["radius"]
        mine = (cover >= 0.5) & (scaled < closeness[window])
        owner[window][mine] = index
        closeness[window][mine] = scaled[mine]
        nucleus = _nucleus_cover(rng, cell, dy, dx) * cover
        grain = gaussian_filter(rng.standard_normal(rho.shape), 1.5)
        texture = 1.0 + 0.15 * grain / grain.std()  # chromatin
        amount = cell["stain"]
        density[window] += (cover * (1 - nucleus))[..., None] * cell["cytoplasm"] * SMEAR_CYTOPLASM
        density[window] += (nucleus * texture * amount)[..., None] * SMEAR_NUCLEUS
        nuclei[window][(nucleus >= 0.5) & mine] = index
    labels = np.where(owner > 0, owner, 0).astype(np.int32)
    nuclei = np.where(nuclei == labels, nuclei, 0)
    red = _draw_red_cells(rng, density, labels > 0, diameter, red_cell_cover)
    platelet_mask = _draw_platelets(rng, density, labels > 0, diameter, platelets)
    density = gaussian_filter(density, (0.8, 0.8, 0))
    shading = 1.0 - 0.08 * _vignette(height, width)
    background = SMEAR_BACKGROUND * rng.normal(1.0, 0.015, size=3)
    light = background * shading[..., None] * np.exp(-density) + rng.normal(0.0, 2.0, size=density.shape)
    image = np.clip(np.rint(light), 0, 255).astype(np.uint8)
    boxes, cut = [], []
    for index in range(1, len(cells) + 1):
        ys, xs = np.nonzero(labels == index)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
        cut.append(bool(cells[index - 1]["cut"]))
    pairs = [(1, 2)] if touching and count >= 2 else []
    return SmearField(image, labels, nuclei, boxes, np.array(cut, bool), pairs, red, platelet_mask, diameter)


def _place_white_cells(
    rng: np.random.Generator, height: int, width: int, diameter: float, count: int, touching: bool, cut: int
) -> list[dict]:
    """Centres, radii, nuclear shapes and stains of the white cells: whole cells apart (or one touching pair), then
    the cells across the edge. Starts over when a cell finds no room, and gives up after 50 layouts."""
    for _ in range(50):
        cells: list[dict] = []
        for index in range(count + cut):
            cell = _place_one(rng, height, width, diameter, cells, touching and index == 1, index >= count)
            if cell is None:
                break
            cells.append(cell)
        else:
            return cells
    raise DataError(f"cannot fit {count + cut} white cells in a {width}x{height} px field; make it larger")


def _place_one(
    rng: np.random.Generator,
    height: int,
    width: int,
    diameter: float,
    cells: list[dict],
    touch_first: bool,
    on_edge: bool,
) -> dict | None:
    """One white cell clear of ``cells`` (or touching the first of them), inside the field or across its edge."""
    radius = diameter * rng.uniform(0.7, 0.9)
    margin = radius + max(4.0, 0.1 * diameter)  # whole cells keep clear of the edge, so "cut" is unambiguous
    for _ in range(200):
        if touch_first:
            angle = rng.uniform(0, 2 * np.pi)
            distance = cells[0]["radius"] + radius - 1.0
            y, x = cells[0]["y"] + distance * np.sin(angle), cells[0]["x"] + distance * np.cos(angle)
        elif on_edge:
            side = int(rng.integers(4))
            along = rng.uniform(radius, (width if side < 2 else height) - radius)
            across = rng.uniform(0.2, 0.6) * radius
            y, x = [(across, along), (height - across, along), (along, across), (along, width - across)][side]
        else:
            y, x = rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)
        inside = margin <= y <= height - margin and margin <= x <= width - margin
        others = cells[1:] if touch_first else cells
        clear = all(np.hypot(y - c["y"], x - c["x"]) > c["radius"] + radius + 0.15 * diameter for c in others)
        if (inside or on_edge) and clear:
            break
    else:
        return None
    lobes = int(rng.choice([1, 1, 2, 3]))
    return {
        "y": y,
        "x": x,
        "radius": radius,
        "cut": on_edge,
        "lobes": lobes,
        "nucleus": radius * (rng.uniform(0.6, 0.75) if lobes == 1 else rng.uniform(0.36, 0.44)),
        "angle": rng.uniform(0, 2 * np.pi),
        "stain": rng.uniform(0.9, 1.3),
        "cytoplasm": rng.uniform(0.9, 1.4),
    }


def _window(
    y: float, x: float, reach: float, height: int, width: int
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The image window around (y, x) within ``reach`` px, and each of its pixels' offsets from (y, x)."""
    rows = slice(max(0, int(y - reach)), min(height, int(y + reach) + 2))
    cols = slice(max(0, int(x - reach)), min(width, int(x + reach) + 2))
    dy = np.arange(rows.start, rows.stop)[:, None] - y
    dx = np.arange(cols.start, cols.stop)[None, :] - x
    return (rows, cols), dy + 0 * dx, dx + 0 * dy


def _nucleus_cover(rng: np.random.Generator, cell: dict, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Anti-aliased nucleus: one slightly eccentric disk, or 2-3 overlapping lobes around the centre."""
    if cell["lobes"] == 1:
        offset = rng.uniform(0, 0.15) * cell["radius"]
        centres = [(offset * np.sin(cell["angle"]), offset * np.cos(cell["angle"]))]
    else:
        spread = 0.45 * cell["radius"]
        centres = [
            (
                spread * np.sin(cell["angle"] + k * 2 * np.pi / cell["lobes"]),
                spread * np.cos(cell["angle"] + k * 2 * np.pi / cell["lobes"]),
            )
            for k in range(cell["lobes"])
        ]
    cover = np.zeros(dy.shape)
    for cy, cx in centres:
        cover = np.maximum(cover, np.clip(cell["nucleus"] - np.hypot(dy - cy, dx - cx) + 0.5, 0.0, 1.0))
    return cover


def _draw_red_cells(
    rng: np.random.Generator, density: np.ndarray, white: np.ndarray, diameter: float, cover: float
) -> np.ndarray:
    """Add pink disks with central pallor until about ``cover`` of the field is red; they avoid white cells."""
    height, width = white.shape
    keep_out = gaussian_filter(white.astype(np.float64), 1.0) > 0.01
    red = np.zeros(white.shape, bool)
    for _ in range(int(40 * cover * height * width / (np.pi * diameter**2 / 4)) + 1):
        if red.mean() >= cover:
            break
        radius = diameter / 2 * rng.uniform(0.9, 1.1)
        y, x = rng.uniform(-0.3 * radius, height + 0.3 * radius), rng.uniform(-0.3 * radius, width + 0.3 * radius)
        window, dy, dx = _window(y, x, radius + 2, height, width)
        if dy.size == 0:
            continue
        rho = np.hypot(dy, dx)
        disk = np.clip(radius - rho + 0.5, 0.0, 1.0)
        if (keep_out[window] & (disk > 0)).any() or (red[window] & (disk > 0)).mean() > 0.15:
            continue
        profile = 1.0 - rng.uniform(0.45, 0.7) * np.exp(-((rho / (0.45 * radius)) ** 2))
        density[window] += (disk * profile * rng.uniform(0.85, 1.15))[..., None] * SMEAR_RED_CELL
        red[window] |= disk >= 0.5
    return red


def _draw_platelets(
    rng: np.random.Generator, density: np.ndarray, white: np.ndarray, diameter: float, count: int
) -> np.ndarray:
    """Add ``count`` small violet specks (0.15-0.3 red-cell diameters across), 0.15 diameters or more from any white
    cell."""
    height, width = white.shape
    mask = np.zeros(white.shape, bool)
    for _ in range(count):
        radius = diameter * rng.uniform(0.075, 0.15)
        for _ in range(100):
            y, x = rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)
            clearance, _, _ = _window(y, x, radius + 0.15 * diameter, height, width)  # apart from white cells
            if not white[clearance].any():
                window, dy, dx = _window(y, x, radius + 2, height, width)
                break
        else:
            continue
        speck = np.clip(radius - np.hypot(dy, dx) + 0.5, 0.0, 1.0)
        density[window] += (speck * rng.uniform(0.8, 1.2))[..., None] * SMEAR_PLATELET
        mask[window] |= speck >= 0.5
    return mask


def _vignette(height: int, width: int) -> np.ndarray:
    """0 at the centre, 1 in the corners: the fall-off of a microscope's illumination."""
    y = (np.arange(height)[:, None] - (height - 1) / 2) / (height / 2)
    x = (np.arange(width)[None, :] - (width - 1) / 2) / (width / 2)
    return (y**2 + x**2) / 2
