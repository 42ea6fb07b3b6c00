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
from scipy.ndimage import gaussian_filter

from blastscope import __version__
from blastscope.data.attribution import SYNTH_MARKER
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
    for start in range(0, len(plan["paths"]), RENDER_CHUNK):
        chunk = slice(start, start + RENDER_CHUNK)
        images = _render({key: value[chunk] for key, value in plan.items() if key != "paths"}, image_size, rng)
        for relative, pixels in zip(plan["paths"][chunk], images, strict=True):
            path = out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, format="PNG")
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
