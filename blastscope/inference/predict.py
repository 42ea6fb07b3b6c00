"""Batched, no-grad prediction of class probabilities for cells, images or image files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from blastscope.data.cache import RESAMPLING, DecodedCache
from blastscope.data.images import read_rgb
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.table import Cell
from blastscope.data.transforms import eval_transform
from blastscope.inference.tta import view_logits

Item = Cell | Image.Image | str | Path
Precision = Literal["auto", "fp32", "bf16"]
Transform = Callable[[np.ndarray], torch.Tensor]


def predict_proba(
    model: nn.Module,
    pre: Preprocessing,
    items: Sequence[Item],
    batch_size: int = 32,
    tta: bool = False,
    cache: DecodedCache | None = None,
    precision: Precision = "auto",
    return_logits: bool = False,
    progress: bool = False,
    transform: Transform | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, C), the softmax of the logits; with ``tta`` the mean over the 8 dihedral views.

    ``cache`` is a ``DecodedCache`` for Cells (a default one is opened when needed). ``precision="auto"`` runs bf16
    autocast where the hardware has native bf16 matrix units (CPUs with AMX, CUDA GPUs that support it), else fp32.
    With ``return_logits`` the result is ``(probabilities, logits)``, logits averaged over views, for temperature
    scaling. ``transform`` replaces the plain ``eval_transform(pre)``, e.g. to apply a run's stain normalisation.
    The model is left in eval mode and channels-last memory format (faster convolutions on CPU and GPU).
    """
    logits = predict_view_logits(model, pre, items, batch_size, tta, cache, precision, progress, transform)
    probabilities = torch.from_numpy(logits).softmax(dim=-1).mean(dim=1).numpy()
    if return_logits:
        return probabilities, logits.mean(axis=1)
    return probabilities


def predict_view_logits(
    model: nn.Module,
    pre: Preprocessing,
    items: Sequence[Item],
    batch_size: int = 32,
    tta: bool = False,
    cache: DecodedCache | None = None,
    precision: Precision = "auto",
    progress: bool = False,
    transform: Transform | None = None,
) -> np.ndarray:
    """Raw logits of shape (N, V, C), V = 8 with TTA else 1, as float32."""
    if not items:
        raise ValueError("no images to predict")
    device = next(model.parameters()).device
    autocast_dtype = resolve_precision(precision, device)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    model.eval()
    model.to(memory_format=torch.channels_last)
    load = _loader(pre, items, cache, transform)
    batches = []
    starts = range(0, len(items), batch_size)
    with torch.inference_mode(), autocast:
        for start in tqdm(starts, desc="predict", unit="batch", disable=not progress):
            images = torch.stack([load(item) for item in items[start : start + batch_size]]).to(device)
            batches.append(view_logits(model, images, tta).float().cpu())
    return torch.cat(batches).numpy()


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or ``None`` for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and _cpu_has_amx():
        return torch.bfloat16
    return None


def resize_image(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """An RGB image scaled to the model's square input, as uint8 HxWx3: exactly what the decoded cache stores."""
    image = image.convert("RGB")
    size = (pre.input_size, pre.input_size)
    if image.size != size:
        image = image.resize(size, RESAMPLING[pre.interpolation])
    return np.asarray(image, dtype=np.uint8)


def _loader(
    pre: Preprocessing, items: Sequence[Item], cache: DecodedCache | None, transform: Transform | None
) -> Callable[[Item], torch.Tensor]:
    """A function turning one item into the normalised CHW tensor the model takes."""
    transform = transform or eval_transform(pre)
    if cache is None and any(isinstance(item, Cell) for item in items):
        cache = DecodedCache()

    def load(item: Item) -> torch.Tensor:
        if isinstance(item, Cell):
            array = cache.load(item.path, item.digest, pre.input_size, pre.interpolation)
        else:
            array = resize_image(item if isinstance(item, Image.Image) else read_rgb(item), pre)
        return transform(array)

    return load


def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())
