"""Image transforms: random augmentation for training, and preprocessing shared by training and evaluation.

Both take a uint8 HxWx3 array already resized to the model's input size (the decoded cache does that once) and return
the normalised float CHW tensor the model expects: RGB, or the stain channels of ``Preprocessing.channels`` computed
after augmentation (:class:`StainChannels`), so a jitter in RGB or HED space reaches them too. Stain normalisation
and denoising change what the model sees, so they run identically in ``train_transform`` and ``eval_transform``;
everything random runs in training only. Randomness comes from torch's global generator, which the training data
module seeds per (seed, epoch, sample).

Training augments a PIL image, through torchvision's Pillow kernels: the whole training transform of a 128-px C-NMC
cell took 1.6 ms against 2.6 ms on a tensor, the difference mostly hue (Pillow's 8-bit HSV against torch's float HSV;
same random draws, results within 2 grey levels). On a CPU the augmenting workers share cores with the training step,
so this is time the step gets back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2hed
from torchvision.transforms import v2

from blastscope.data.augment import DENOISERS, AugmentConfig
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import StainNormalizer, cell_pixels, jitter_hed, optical_density
from blastscope.errors import BlastscopeError

Transform = Callable[[np.ndarray], torch.Tensor]


class Prepare:
    """uint8 HxWx3 array -> uint8 CHW tensor (or RGB PIL image), after the deterministic denoising and stain
    normalisation."""

    def __init__(self, aug: AugmentConfig, input_size: int, *, as_pil: bool = False) -> None:
        self.input_size = input_size
        self.as_pil = as_pil
        self.denoise = aug.denoise
        self.normalizer = (
            StainNormalizer.from_reference_file(aug.stain_norm, aug.stain_reference)  # type: ignore[arg-type]
            if aug.stain_norm
            else None
        )

    def __call__(self, pixels: np.ndarray) -> torch.Tensor | Image.Image:
        expected = (self.input_size, self.input_size, 3)
        if pixels.dtype != np.uint8 or pixels.shape != expected:
            raise ValueError(f"expected a uint8 array of shape {expected}, got {pixels.dtype} {pixels.shape}")
        if self.denoise is not None:
            pixels = denoise(pixels, self.denoise)
        if self.normalizer is not None:
            pixels = self.normalizer(pixels)
        if self.as_pil:
            return Image.fromarray(np.ascontiguousarray(pixels))
        if not pixels.flags.writeable:
            pixels = pixels.copy()  # torch must not share memory it believes it may write
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


class HedJitter(torch.nn.Module):
    """Random per-stain scale and shift in HED space (Tellez et al. 2018), drawn from torch's global generator."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        self.strength = strength

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + torch.empty(3).uniform_(-self.strength, self.strength).numpy()
        shift = torch.empty(3).uniform_(-self.strength, self.strength).numpy()
        jittered = jitter_hed(image.permute(1, 2, 0).numpy(), scale, shift)
        return torch.from_numpy(jittered).permute(2, 0, 1)


def denoise(pixels: np.ndarray, method: str) -> np.ndarray:
    """Reduce sensor noise while keeping cell edges: 3x3 median, bilateral, or non-local means."""
    from scipy.ndimage import median_filter
    from skimage.restoration import denoise_bilateral, denoise_nl_means

    if method == "median":
        return median_filter(pixels, size=(3, 3, 1))
    image = pixels / 255.0
    if method == "bilateral":
        smoothed = denoise_bilateral(image, sigma_color=0.05, sigma_spatial=1.5, channel_axis=-1)
    elif method == "nl_means":
        smoothed = denoise_nl_means(image, h=0.04, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1)
    else:
        raise BlastscopeError(f"unknown denoise {method!r}; use one of {', '.join(DENOISERS)}")
    return np.clip(np.rint(smoothed * 255.0), 0, 255).astype(np.uint8)


def train_transform(aug: AugmentConfig, pre: Preprocessing) -> Transform:
    """Preprocessing, then the random augmentations switched on in ``aug``, then the model's normalisation."""
    steps: list[Callable[[Any], Any]] = [Prepare(aug, pre.input_size, as_pil=True)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.vflip:
        steps.append(v2.RandomVerticalFlip())
    if aug.rotation or aug.shift or aug.shear or aug.zoom:
        shear = aug.shear_degrees
        steps.append(
            v2.RandomAffine(
                degrees=aug.rotation_degrees if aug.rotation else 0.0,
                translate=(aug.shift_fraction, aug.shift_fraction) if aug.shift else None,
                scale=aug.zoom_range if aug.zoom else None,
                shear=(-shear, shear, -shear, shear) if aug.shear else None,
                interpolation=v2.InterpolationMode.BILINEAR,
                fill=0,
            )
        )
    if aug.color_jitter:
        # No contrast jitter: it blends towards mean grey and would lift the black background.
        steps.append(v2.ColorJitter(brightness=aug.brightness, saturation=aug.saturation, hue=aug.hue))
    steps.append(v2.PILToTensor())
    if aug.hed_jitter:
        steps.append(HedJitter(aug.hed_strength))
    return v2.Compose([*steps, *_to_model_input(pre)])


def eval_transform(pre: Preprocessing, aug: AugmentConfig | None = None) -> Transform:
    """The preprocessing of ``aug`` (if given) and the model's normalisation; never random."""
    return v2.Compose([Prepare(aug or AugmentConfig.off(), pre.input_size), *_to_model_input(pre)])


class StainChannels(torch.nn.Module):
    """uint8 RGB CHW tensor -> float32 optical-density or HED channels on the [0, 1] scale (``pre.channels``).

    The black canvas (brightest channel below ``CELL_LEVEL``) carries no stain: it is set to 0 rather than to
    the density of a black pixel, which would be the largest value in the image.
    """

    def __init__(self, channels: str, scale: tuple[float, float, float]) -> None:
        super().__init__()
        if channels not in ("od", "hed"):
            raise BlastscopeError(f"input channels {channels!r} are not stain channels: use od or hed")
        self.channels = channels
        self.scale = np.asarray(scale, dtype=np.float64)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = image.permute(1, 2, 0).numpy()
        stains = optical_density(rgb) if self.channels == "od" else rgb2hed(rgb / 255.0)
        stains = stains * self.scale
        stains[~cell_pixels(rgb)] = 0.0
        return torch.from_numpy(stains.astype(np.float32)).permute(2, 0, 1)


def _to_model_input(pre: Preprocessing) -> list[Callable[[Any], Any]]:
    """To float on the [0, 1] scale (RGB, or the stain channels of ``pre.channels``), then the model's normalisation."""
    scaled = (
        v2.ToDtype(torch.float32, scale=True)
        if pre.channels == "rgb"
        else StainChannels(pre.channels, pre.channel_scale)
    )
    return [scaled, v2.Normalize(mean=list(pre.mean), std=list(pre.std))]
