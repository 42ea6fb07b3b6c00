"""Measurements a haematologist would name, computed by a network's forward pass from a cell on a black canvas.

:class:`CellMeasurements` turns ``(N, 3, H, W)`` RGB cells into ``(N, 67)`` numbers: the cell's area and the lengths
of its two axes (px), and the distribution inside the cell of eight colour channels: haematoxylin and eosin optical
densities (colour deconvolution, Ruifrok & Johnston 2001, with scikit-image's ``hed_from_rgb`` matrix), CIE L*a*b*
(sRGB, D65) and R, G, B (0-255). Each is a masked sum, second moment or sort of pixel values, so the module runs in
float32 on any device and exports to ONNX. Cross-validated over cnmc-dev's 41 people, a perceptron on these 67
numbers averaged with the default network's probabilities scored pooled weighted F1 0.853 against 0.839 for the
network alone (``benchmarks/RESULTS.md``, sessions 22 and 23). :mod:`blastscope.models.measured` carries it inside a
registered network; ``benchmarks/bench_morphometry.py --measured-by network`` computes it for the benchmark.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from blastscope.segmentation import background

HED_FROM_RGB = (
    (1.87798274, -1.00767869, -0.55611582),
    (-0.06590806, 1.13473037, -0.1355218),
    (-0.60190736, -0.48041419, 1.57358807),
)
"""scikit-image's ``hed_from_rgb``: the inverse of Ruifrok & Johnston's (2001) haematoxylin, eosin, DAB vectors."""
XYZ_FROM_RGB = ((0.412453, 0.35758, 0.180423), (0.212671, 0.71516, 0.072169), (0.019334, 0.119193, 0.950227))
"""Linear sRGB to CIE XYZ (D65), as scikit-image's ``rgb2lab``."""
D65 = (0.95047, 1.0, 1.08883)
"""CIE D65 white point, 2-degree observer."""
CHANNELS = ("H", "E", "L", "a", "b", "R", "G", "B")
STATISTICS = ("mean", "sd", "p5", "p25", "p50", "p75", "p95", "iqr_relative")
PERCENTILES = (5, 25, 50, 75, 95)
CELL_LEVEL = background.CELL_LEVEL / 255
"""A pixel belongs to the cell when its brightest channel reaches this, as for every other blastscope cell mask."""
EDGE_PX = 4
"""Colour is read this far inside the cell's edge, away from the black canvas's dark fringe."""
MIN_INNER_PX = 50
"""Fewer pixels than this left after moving in from the edge: read the whole cell instead."""
COLOUR_GRID_PX = 160
"""Colour is read on every s-th pixel in both directions, s = ceil(side / COLOUR_GRID_PX) (3 for C-NMC's 450 px
cells, 1 up to 160 px): a cell of 450 px still gives thousands of pixels per percentile, and the module runs 7 times
faster on a CPU, where sorting the pixels took most of its time (``benchmarks/bench_measurements.py``)."""
NAMES = (
    "size_area",
    "size_axis_major",
    "size_axis_minor",
    *(f"colour_{channel}_{statistic}" for channel in CHANNELS for statistic in STATISTICS),
)
"""The measurements' names in output order, as ``benchmarks/bench_morphometry.py`` names them."""


class CellMeasurements(nn.Module):
    """``(N, 3, H, W)`` RGB cells on black, values in [0, 1] -> ``(N, 67)`` measurements named by :data:`NAMES`.

    ``mean`` and ``std`` (per channel) are the normalisation the input arrives with, undone first (a network's
    input ``(rgb - mean) / std``); the defaults take RGB in [0, 1] as it is.

    The cell is every pixel whose brightest channel reaches :data:`CELL_LEVEL`. Unlike
    :func:`~blastscope.segmentation.background.cell_on_black_mask` it neither keeps only the largest such component
    nor fills holes (neither is a fixed sequence of tensor operations), so near-black pixels inside a cell (a few
    C-NMC cells have hundreds) stay out of its area and colour; elsewhere the two agree to float precision.
    Sizes are in pixels of the input: the axes are 4 sqrt(eigenvalue) of the mask's second central moments, the
    lengths of the ellipse with the same moments (scikit-image ``regionprops``). Colour statistics are read inside
    the cell eroded by a disk of :data:`EDGE_PX` px, on every :func:`colour_step`-th pixel; percentiles interpolate
    linearly (numpy's default); ``sd`` is the population standard deviation; ``iqr_relative`` is
    (p75 - p25) / (|p50| + 1e-6). An image with no cell pixel gives zeros.
    """

    def __init__(
        self, mean: tuple[float, float, float] = (0.0, 0.0, 0.0), std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("hed_from_rgb", torch.tensor(HED_FROM_RGB), persistent=False)
        self.register_buffer("xyz_from_rgb", torch.tensor(XYZ_FROM_RGB).T.contiguous(), persistent=False)
        self.register_buffer("white", torch.tensor(D65), persistent=False)
        self.register_buffer("disk", _disk(EDGE_PX)[None, None], persistent=False)
        self.register_buffer("quantiles", torch.tensor(PERCENTILES, dtype=torch.float32) / 100, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised by ``mean`` and ``std`` -> ``(N, 67)`` float32, in float32 under any autocast
        (areas reach 10^5 px)."""
        with torch.autocast(images.device.type, enabled=False):
            return self._measure((images.float() * self.input_std + self.input_mean).clamp(0, 1))

    def _measure(self, rgb: torch.Tensor) -> torch.Tensor:
        mask = (rgb.amax(dim=1) >= CELL_LEVEL - 1e-6).float()
        sizes = _area_and_axes(mask)
        step = colour_step(*rgb.shape[-2:])
        inner = _erode(mask, self.disk, step).float()
        enough = inner.sum(dim=(1, 2), keepdim=True) >= MIN_INNER_PX / step**2
        inner = torch.where(enough, inner, mask[:, ::step, ::step]) > 0.5  # ONNX Runtime has no Where on bool
        pixels = rgb[..., ::step, ::step].permute(0, 2, 3, 1)  # (N, H / step, W / step, 3)
        channels = torch.cat([self._hed(pixels)[..., :2], self._lab(pixels), pixels * 255], dim=-1)
        values = channels.flatten(1, 2).transpose(1, 2).contiguous()  # (N, 8, H * W): sorted along the last dim
        colour = _distributions(values, inner.flatten(1), self.quantiles)
        return torch.cat([sizes, colour.flatten(1)], dim=1)

    def _hed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Optical densities by colour deconvolution, as scikit-image's ``rgb2hed``: (..., 3) -> (..., 3) >= 0."""
        density = torch.log(pixels.clamp_min(1e-6)) / math.log(1e-6)
        return (density @ self.hed_from_rgb).clamp_min(0)

    def _lab(self, pixels: torch.Tensor) -> torch.Tensor:
        """sRGB -> CIE L*a*b* (D65), as scikit-image's ``rgb2lab``: (..., 3) -> (..., 3)."""
        linear = torch.where(pixels > 0.04045, ((pixels + 0.055) / 1.055) ** 2.4, pixels / 12.92)
        xyz = (linear @ self.xyz_from_rgb) / self.white
        f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
        return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _disk(radius: int) -> torch.Tensor:
    """scikit-image's ``disk(radius)`` as a float ``(2r + 1, 2r + 1)`` kernel."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()


def colour_step(height: int, width: int) -> int:
    """The stride of the grid colour is read on for ``height`` x ``width`` px inputs (see :data:`COLOUR_GRID_PX`)."""
    return max(1, math.ceil(max(height, width) / COLOUR_GRID_PX))


def _erode(mask: torch.Tensor, disk: torch.Tensor, step: int) -> torch.Tensor:
    """``(N, H, W)`` 0/1 mask eroded by ``disk``, pixels beyond the border counting as outside, read at every
    ``step``-th pixel: bool ``(N, ceil(H / step), ceil(W / step))``, exactly the full erosion's ``[::step, ::step]``."""
    radius = disk.shape[-1] // 2
    covered = F.conv2d(mask[:, None], disk, padding=radius, stride=step)[:, 0]
    return covered >= disk.sum() - 0.5


def _area_and_axes(mask: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` 0/1 mask -> ``(N, 3)``: area, major and minor axis (px) of the ellipse with its moments.

    The moments are sums over the mask's row and column profiles (and one matrix product for the cross moment),
    not over every pixel times its coordinates, which would cost five full-size products."""
    height, width = mask.shape[-2:]
    rows = torch.arange(height, dtype=mask.dtype, device=mask.device)
    cols = torch.arange(width, dtype=mask.dtype, device=mask.device)
    by_row, by_col = mask.sum(dim=2), mask.sum(dim=1)  # (N, H), (N, W)
    area = by_row.sum(dim=1)
    safe = area.clamp_min(1)
    dr = rows[None] - ((by_row * rows).sum(dim=1) / safe)[:, None]  # (N, H)
    dc = cols[None] - ((by_col * cols).sum(dim=1) / safe)[:, None]  # (N, W)
    mu_rr = (by_row * dr * dr).sum(dim=1) / safe
    mu_cc = (by_col * dc * dc).sum(dim=1) / safe
    mu_rc = ((mask @ dc[:, :, None])[..., 0] * dr).sum(dim=1) / safe
    half_trace, spread = (mu_rr + mu_cc) / 2, torch.sqrt(((mu_rr - mu_cc) / 2) ** 2 + mu_rc**2)
    major = 4 * torch.sqrt((half_trace + spread).clamp_min(0))
    minor = 4 * torch.sqrt((half_trace - spread).clamp_min(0))
    return torch.stack([area, major, minor], dim=1)


def _distributions(values: torch.Tensor, inside: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """``(N, C, P)`` pixel values and ``(N, P)`` bool mask -> ``(N, C, 8)``: :data:`STATISTICS` over the masked
    pixels of each image and channel (zeros where an image has none)."""
    weight = inside.float()[:, None]  # (N, 1, P)
    count = weight.sum(dim=2, keepdim=True)  # (N, 1, 1)
    safe = count.clamp_min(1)
    mean = (values * weight).sum(dim=2, keepdim=True) / safe
    sd = torch.sqrt(((values - mean) ** 2 * weight).sum(dim=2, keepdim=True) / safe)
    ordered = torch.where(weight > 0, values, torch.full_like(values, torch.inf)).sort(dim=2).values
    last = (count - 1).clamp_min(0)
    position = quantiles[None, None, :] * last  # (N, 1, Q)
    low = position.floor()
    fraction = position - low
    below = ordered.gather(2, low.long().expand(-1, values.shape[1], -1))
    above = ordered.gather(2, torch.minimum(low + 1, last).long().expand_as(below))
    percentile = below + fraction * (above - below)  # (N, C, Q)
    p25, p50, p75 = percentile[..., 1:2], percentile[..., 2:3], percentile[..., 3:4]
    iqr_relative = (p75 - p25) / (p50.abs() + 1e-6)
    found = torch.cat([mean, sd, percentile, iqr_relative], dim=2)
    return torch.where(count > 0, found, torch.zeros_like(found))
