"""Grad-CAM: where in the cell the network looked when it chose a class.

Always computed with the PyTorch model (ONNX Runtime has no gradients), on the image exactly as the model sees it:
resized to the model's input size.

The layer explained depends on the input size. Each network offers candidate layers, deepest first
(:meth:`~blastscope.models.base.CellClassifier.gradcam_layers`); a small input can shrink the deepest map to 1x1
(``inception_v3`` at 75 px, EfficientNets at 32 px), and Grad-CAM of a 1x1 map is one number: after normalisation an
all-zero heat map. So the explainer measures every candidate's map at the input size with one dry run and takes the
deepest one at least :data:`MIN_MAP_SIDE` cells on each side. When none is, it takes the largest, and says so once in
a warning naming the model, the map size and the smallest input size that works. Whatever the layer, a heat map that
is constant (all zero: nothing to show) is never passed off as an explanation: :attr:`Explanation.usable` is False and
:attr:`Explanation.note` says why.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from blastscope.models.base import CellClassifier

log = logging.getLogger(__name__)

MIN_MAP_SIDE = 3
"""The smallest feature map side (in cells) Grad-CAM is asked to explain: 1x1 cannot localise and 2x2 hardly does."""

MAX_PROBE_SIDE = 2048
"""How far :func:`smallest_input_side` looks for an input size that gives a usable map."""

FLAT = 1e-6
"""A heat map whose values span less than this is constant: it shows nothing."""


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM heat map for one class, and the same map blended over the resized input.

    Attributes
    ----------
    label : str
        The class explained.
    heatmap : np.ndarray
        ``(H, W)`` in [0, 1], the model's input size.
    overlay : PIL.Image.Image
        The heat map blended over the resized input.
    layer : str
        The layer explained, e.g. ``Mixed_6e``; empty when not recorded.
    map_size : (int, int) or None
        That layer's feature map ``(h, w)`` at this input size.
    note : str
        Why the map shows little or nothing, in one line; empty when there is nothing to say.
    usable : bool
        False when the heat map is constant (e.g. all zero): it shows no region, and callers show ``note`` instead of
        the overlay. Derived from ``heatmap``; a constant map always gets a note.
    """

    label: str
    heatmap: np.ndarray
    overlay: Image.Image
    layer: str = ""
    map_size: tuple[int, int] | None = None
    note: str = ""
    usable: bool = field(init=False)

    def __post_init__(self) -> None:
        usable = not is_flat(self.heatmap)
        object.__setattr__(self, "usable", usable)
        if not usable and not self.note:
            object.__setattr__(self, "note", flat_note(self.label, self.layer, self.map_size))


@dataclass(frozen=True, slots=True)
class GradcamLayer:
    """The layer Grad-CAM weighs at one input size, and what its map measures there.

    ``preferred`` is the network's deepest candidate and ``preferred_size`` its map at this input; they differ from
    ``name`` and ``map_size`` when the input is too small for the deepest map. ``note`` is empty unless even the
    chosen map is under :data:`MIN_MAP_SIDE` cells a side.
    """

    name: str
    module: nn.Module
    map_size: tuple[int, int]
    preferred: str
    preferred_size: tuple[int, int]
    input_size: tuple[int, int]
    note: str = ""

    @property
    def description(self) -> str:
        """``Mixed_6e (3x3)``, and why when it is not the deepest candidate."""
        text = f"{self.name} ({_size(self.map_size)})"
        if self.name != self.preferred:
            text += f"; {self.preferred} is {_size(self.preferred_size)} at {_size(self.input_size)} px"
        return text


def is_flat(heatmap: np.ndarray) -> bool:
    """Whether a heat map is constant (or not finite anywhere): then it marks no region at all."""
    values = np.asarray(heatmap, dtype=np.float64)
    return values.size == 0 or not np.isfinite(values).all() or float(values.max() - values.min()) < FLAT


def flat_note(label: str, layer: str = "", map_size: tuple[int, int] | None = None) -> str:
    """The one line a constant heat map comes with."""
    where = f" ({layer}, {_size(map_size)} map)" if layer and map_size else (f" ({layer})" if layer else "")
    if map_size is not None and min(map_size) <= 1:
        return f"no Grad-CAM: the explained map{where} has a single cell at this input size, so it cannot localise"
    return f"no Grad-CAM: no region of the explained map{where} raises the score of {label}; the heat map is empty"


_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], GradcamLayer]] = weakref.WeakKeyDictionary()
_CHOICES_LOCK = threading.Lock()


def gradcam_target(model: CellClassifier, height: int, width: int, *, name: str = "") -> GradcamLayer:
    """The deepest of ``model``'s candidate layers whose map is at least :data:`MIN_MAP_SIDE` a side at this input.

    Measured once per model and input size with a dry run (no gradients, eval mode, stopped after the last candidate).
    When no candidate is large enough, the largest map is taken and one warning names the model, the map size and the
    smallest input size that gives a usable map.

    Parameters
    ----------
    model : CellClassifier
    height, width : int
        The input size in pixels, as the model sees it.
    name : str, optional
        The model's name for the warning; default: the backbone's architecture or the class name.
    """
    key = (int(height), int(width))
    with _CHOICES_LOCK:
        known = _CHOICES.get(model, {}).get(key)
    if known is not None:
        return known
    candidates = model.gradcam_layers()
    sizes = map_sizes(model, candidates, key)
    preferred, preferred_size = candidates[0][0], sizes[0]
    usable = [i for i, size in enumerate(sizes) if min(size) >= MIN_MAP_SIDE]
    index = usable[0] if usable else max(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    note = ""
    if not usable:
        label = name or model_name(model)
        smallest = smallest_input_side(model, candidates, key)
        works = f"inputs of at least {smallest} px give a usable map" if smallest else "no input size tried helps"
        note = (
            f"Grad-CAM of {label} at {_size(key)} px: the largest map it can explain ({candidates[index][0]}) is "
            f"{_size(sizes[index])}, under {MIN_MAP_SIDE}x{MIN_MAP_SIDE}; {works}"
        )
        log.warning("%s", note)
    choice = GradcamLayer(
        candidates[index][0], candidates[index][1], sizes[index], preferred, preferred_size, key, note
    )
    with _CHOICES_LOCK:
        _CHOICES.setdefault(model, {})[key] = choice
    return choice


class _Measured(Exception):
    """Raised by the last hook of a dry run: every candidate's map is measured, the rest of the network is skipped."""


def map_sizes(
    model: nn.Module, candidates: list[tuple[str, nn.Module]], input_size: tuple[int, int]
) -> list[tuple[int, int]]:
    """The ``(h, w)`` of each candidate layer's output for one input of ``input_size``, in the candidates' order.

    Raises
    ------
    ValueError
        When a candidate does not run or does not output a ``(batch, channels, h, w)`` map at this size.
    """
    found: dict[int, tuple[int, int]] = {}

    def hook(index: int):
        def record(_: nn.Module, __: object, output: object) -> None:
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                shape = getattr(output, "shape", type(output).__name__)
                raise ValueError(f"Grad-CAM layer {candidates[index][0]} outputs {shape}, not a (N, C, h, w) map")
            found[index] = (int(output.shape[-2]), int(output.shape[-1]))
            if len(found) == len(candidates):
                raise _Measured

        return record

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    handles = [module.register_forward_hook(hook(i)) for i, (_, module) in enumerate(candidates)]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()  # a dry run must not move batch-norm statistics
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=device, dtype=dtype))
    except _Measured:
        pass
    except Exception as error:
        if len(found) < len(candidates):
            raise ValueError(f"cannot measure Grad-CAM maps at {_size(input_size)} px: {error}") from error
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:  # each as it was: a training phase may hold frozen parts in eval mode
            module.training = training
    missing = [candidates[i][0] for i in range(len(candidates)) if i not in found]
    if missing:
        raise ValueError(f"Grad-CAM layers {', '.join(missing)} never ran at {_size(input_size)} px")
    return [found[i] for i in range(len(candidates))]


def smallest_input_side(
    model: nn.Module, candidates: list[tuple[str, nn.Module]], input_size: tuple[int, int]
) -> int | None:
    """The smallest square input side (px) at which some candidate's map is :data:`MIN_MAP_SIDE` a side, or None.

    For an ``input_size`` that gives no usable map: doubles it until one works (a network that only takes one size
    gives None), then bisects.
    """

    def works(side: int) -> bool | None:
        try:
            return any(min(size) >= MIN_MAP_SIDE for size in map_sizes(model, candidates, (side, side)))
        except ValueError:
            return None

    low = max(input_size)
    high = low * 2
    while high <= MAX_PROBE_SIDE:
        result = works(high)
        if result is None:
            return None
        if result:
            break
        low, high = high, high * 2
    else:
        return None
    while high - low > 1:  # low fails, high works
        middle = (low + high) // 2
        low, high = (low, middle) if works(middle) else (middle, high)
    return high


def model_name(model: nn.Module) -> str:
    """A name for messages: the timm architecture of the backbone, else the network's class name."""
    config = getattr(getattr(model, "backbone", None), "pretrained_cfg", None) or {}
    return str(config.get("architecture") or type(model).__name__)


def grad_cam(model: CellClassifier, batch: torch.Tensor, target: int) -> np.ndarray:
    """The (H, W) heat map in [0, 1] of class ``target`` for a one-image normalised NCHW batch.

    The layer is :func:`gradcam_target`'s choice for the batch's input size. The map may be constant (all zero):
    :func:`explain` wraps it with that verdict.
    """
    return _heatmap(model, batch, target, gradcam_target(model, *batch.shape[-2:]))


def explain(
    model: CellClassifier, batch: torch.Tensor, resized: np.ndarray, target: int, label: str, *, name: str = ""
) -> Explanation:
    """Grad-CAM of class ``target`` (named ``label``) as an :class:`Explanation` saying which layer it shows and,
    when the map shows nothing, why.

    Parameters
    ----------
    model : CellClassifier
    batch : torch.Tensor
        ``(1, 3, H, W)``: ``resized`` normalised as the model expects.
    resized : np.ndarray
        The uint8 ``(H, W, 3)`` image the model saw, for the overlay.
    target : int
        The class index explained.
    label : str
        That class's name.
    name : str, optional
        The model's name for a warning.
    """
    layer = gradcam_target(model, *batch.shape[-2:], name=name)
    heatmap = _heatmap(model, batch, target, layer)
    note = layer.note
    if is_flat(heatmap):
        note = flat_note(label, layer.name, layer.map_size) + (f" ({layer.note})" if layer.note else "")
        note += f"; {model.unmapped_evidence}" if model.unmapped_evidence else ""
    return Explanation(label, heatmap, overlay_heatmap(resized, heatmap), layer.description, layer.map_size, note)


def _heatmap(model: CellClassifier, batch: torch.Tensor, target: int, layer: GradcamLayer) -> np.ndarray:
    with GradCAM(model=model, target_layers=[layer.module]) as cam:
        # Gradients must reach the target layer even when the backbone's weights are frozen.
        cam.compute_input_gradient = True
        with torch.enable_grad():
            heatmap = cam(input_tensor=batch, targets=[ClassifierOutputTarget(target)])
    return np.nan_to_num(heatmap[0].astype(np.float32), nan=0.0)


def overlay_heatmap(resized: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """The heat map (jet colours) blended half-and-half over the uint8 HxWx3 image the model saw."""
    blended = show_cam_on_image(resized.astype(np.float32) / 255.0, heatmap, use_rgb=True, image_weight=0.5)
    return Image.fromarray(blended)


def _size(size: tuple[int, int] | None) -> str:
    if size is None:
        return "?"
    return f"{size[0]}x{size[1]}"
