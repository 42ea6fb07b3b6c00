"""The one prediction path: items -> normalised batches -> runner -> logits per view -> probabilities.

Every door to a model goes through :func:`predict_logits` and :func:`probabilities`: ``evaluate`` and the test score
written at the end of training (dataset cells, through the decoded cache), the Python API, ``predict`` and ``serve``
(files and uploaded images), and the export's parity and variant checks. Labels then come from
``decision.decide`` alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from blastscope.data.cache import DecodedCache, resize_rgb
from blastscope.data.images import decode_pil, read_rgb
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.table import Cell
from blastscope.data.transforms import Transform
from blastscope.inference.runners import Runner
from blastscope.inference.tta import view_logits

Item = Cell | Image.Image | str | Path
"""A dataset cell (decoded once through the cache), a PIL image, or an image file's path."""


def resized_pixels(item: Item, pre: Preprocessing, cache: DecodedCache | None = None) -> np.ndarray:
    """One item as the uint8 (S, S, 3) array the model's transform takes, S = ``pre.input_size``.

    Cells are read through ``cache`` (exactly as training saw them); images and paths are decoded and resized the
    same way. Raises ``ImageError`` for an unreadable file.
    """
    if isinstance(item, Cell):
        return (cache or DecodedCache()).load(item.path, item.digest, pre.input_size, pre.interpolation)
    image = decode_pil(item).image if isinstance(item, Image.Image) else read_rgb(item)
    return resize_rgb(image, pre.input_size, pre.interpolation)


def batches(
    items: Sequence[Item],
    pre: Preprocessing,
    transform: Transform,
    batch_size: int = 32,
    cache: DecodedCache | None = None,
) -> Iterator[torch.Tensor]:
    """Normalised float32 batches of shape (B, 3, S, S), B <= ``batch_size``, in item order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if cache is None and any(isinstance(item, Cell) for item in items):
        cache = DecodedCache()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        yield torch.stack([transform(resized_pixels(item, pre, cache)) for item in chunk])


def predict_logits(
    runner: Runner,
    items: Sequence[Item],
    pre: Preprocessing,
    transform: Transform,
    *,
    tta: bool = False,
    batch_size: int = 32,
    cache: DecodedCache | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits of every item in every view: float32 array of shape (N, V, C), V = 8 with ``tta`` else 1.

    ``transform`` maps a resized uint8 image to the model's input (a run's own: ``TrainedRun.transform``).
    Raises ``ValueError`` for no items and ``ImageError`` for an unreadable file.
    """
    if not len(items):
        raise ValueError("no images to predict")
    total = -(-len(items) // batch_size)
    chunks = [
        view_logits(runner, batch, tta).float().numpy()
        for batch in tqdm(
            batches(items, pre, transform, batch_size, cache),
            total=total,
            desc="predict",
            unit="batch",
            disable=not progress,
        )
    ]
    return np.concatenate(chunks)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (N, C), float64: the softmax of ``logits / temperature``, averaged over views.

    ``logits`` has shape (N, V, C) (views from :func:`predict_logits`) or (N, C).
    """
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float64))  # float64: no p rounds to exactly 1 at small T
    if logits.ndim == 2:
        logits = logits.unsqueeze(1)
    return (logits / float(temperature)).softmax(dim=-1).mean(dim=1).numpy()
