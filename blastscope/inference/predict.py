"""The one prediction path: items -> normalised batches -> runner -> logits per view -> probabilities.

Every door to a model goes through :func:`predict_logits` and :func:`probabilities`: ``evaluate`` and the test score
written at the end of training (dataset cells, through the decoded cache), the Python API, ``predict`` and ``serve``
(files and uploaded images), and the export's parity and variant checks. Labels then come from
``decision.decide`` alone. Each item is segmented (or not) as ``Preprocessing.segment`` says before it is resized, the
same way for every door and runner (PyTorch or ONNX Runtime); :func:`predict_items` also says which items were cut
out of their background, and :func:`readable` sets aside, with the reason, items that cannot be read or whose cell
cannot be found. :func:`predict_features` runs the same path for a PyTorch network's penultimate features. A run
with ``Preprocessing.colour_norm == "subject"`` normalises each item's colours by its person's (:func:`by_person`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from blastscope.data.cache import DecodedCache, ModelInput, decode_resized, model_input
from blastscope.data.images import decode_pil
from blastscope.data.people import ONE_PERSON, require_subjects
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import MIN_CELL_PIXELS, SubjectColour
from blastscope.data.table import Cell
from blastscope.data.transforms import Transform
from blastscope.errors import BlastscopeError, ImageError
from blastscope.inference.precision import InferencePrecision
from blastscope.inference.runners import Runner, TorchRunner
from blastscope.inference.tta import view_logits
from blastscope.models.base import CellClassifier
from blastscope.segmentation.modes import CellNotFoundError

log = logging.getLogger(__name__)

FEW_CELLS = 20
"""A person's colour statistics pooled over fewer cells than this are noisy; :func:`by_person` says so."""

Item = Cell | ModelInput | Image.Image | str | Path
"""A dataset cell (decoded once through the cache), an image already made the model's input
(:func:`resized_pixels`), a PIL image, or an image file's path."""


@dataclass(frozen=True, slots=True)
class ItemLogits:
    """Logits of every item in every view, whether each item's cell was cut out of its background, and how many
    whole white cells segmentation found in it.

    Attributes
    ----------
    logits : numpy.ndarray
        float32, shape (N, V, C): V = 8 with test-time augmentation, else 1.
    segmented : numpy.ndarray
        bool, shape (N,).
    white_cells : list of int or None
        Per item, ``ModelInput.white_cells``: more than one means the item was not one cell's image (a smear
        photograph) and only the cell nearest its centre was classified; None where not counted.
    """

    logits: np.ndarray
    segmented: np.ndarray
    white_cells: list[int | None]


@dataclass(frozen=True, slots=True)
class Readable:
    """Items split into those the model can be given and those it cannot.

    Attributes
    ----------
    items : list
        The readable items, in order.
    segmented : list of bool
        Per readable item: whether its cell was cut out of its background.
    skipped : list of (item, str)
        The others, each with the reason (unreadable file, or no cell found).
    """

    items: list[Item]
    segmented: list[bool]
    skipped: list[tuple[Item, str]]


def several_cells(white_cells: int | None) -> bool:
    """Whether segmentation found more than one whole white cell in an image given as one cell
    (``ModelInput.white_cells``): only the one nearest its centre is then classified."""
    return white_cells is not None and white_cells > 1


def several_cells_line(counts: Sequence[tuple[str, int]], scan: str = "`blastscope scan`", shown: int = 5) -> str:
    """One line naming the images (``(name, white cells)``, the first ``shown`` of them) given as single cells in which
    segmentation found several whole white cells, saying that only the cell nearest each one's centre was classified,
    and that smear photographs are for ``scan``: such an answer is about one cell, not the image."""
    listed = ", ".join(f"{name}: {count}" for name, count in counts[:shown])
    more = f" and {len(counts) - shown} more" if len(counts) > shown else ""
    if len(counts) == 1:
        name, count = counts[0]
        head = f"{name} holds {count} whole white cells, not one: only the one nearest its centre was classified"
    else:
        head = (
            f"{len(counts)} images hold several whole white cells, not one ({listed}{more}): only the one nearest "
            "each image's centre was classified"
        )
    return f"{head}; for smear photographs use {scan}, which finds and classifies every white cell"


def resized_pixels(item: Item, pre: Preprocessing, cache: DecodedCache | None = None) -> ModelInput:
    """One item as the model's transform takes it: uint8 (S, S, 3) pixels, S = ``pre.input_size``, segmented (or
    not) as ``pre.segment`` says (at ``pre.red_cell_diameter``), with whether it was.

    Cells are read through ``cache`` (exactly as training saw them); images and paths are decoded, segmented and
    resized the same way; a :class:`ModelInput` is passed on. Raises ``ImageError`` naming the item for an unreadable
    file or a cell that cannot be found, ``ValueError`` for a ``ModelInput`` of another size.
    """
    size, interpolation, segment, crop = pre.input_size, pre.interpolation, pre.segment, pre.crop_fraction
    scale = pre.red_cell_diameter
    if isinstance(item, ModelInput):
        if item.pixels.shape != (size, size, 3):
            raise ValueError(f"a model input of shape {item.pixels.shape} given to a model of {size}x{size} px")
        return item
    if isinstance(item, Cell):
        return (cache or DecodedCache()).load(item.path, item.digest, size, interpolation, segment, crop, scale)
    if isinstance(item, Image.Image):
        try:
            return model_input(decode_pil(item).image, size, interpolation, segment, crop, scale)
        except CellNotFoundError as error:
            raise ImageError(getattr(item, "filename", "") or "<image>", error.reason) from None
    return decode_resized(Path(item), size, interpolation, segment, crop, scale)


def by_person(
    items: Sequence[Item],
    pre: Preprocessing,
    cache: DecodedCache | None = None,
    people: Sequence[str] | None = None,
    colour: SubjectColour | None = None,
) -> list[ModelInput]:
    """Every item as its model input with its colours normalised by its person's pooled statistics
    (``pre.colour_norm == "subject"``: :class:`~blastscope.data.stain.SubjectColour`).

    ``people`` names each item's person; by default a dataset cell's is its subject id and every other item's
    :data:`ONE_PERSON`. The statistics are fitted over ``items`` (:func:`fit_colour`) unless ``colour`` gives them,
    fitted beforehand over more of each person's cells than these (a folder predicted in chunks).

    Raises
    ------
    DataError
        For dataset cells without a subject id (their person is unknown) when ``people`` is not given.
    BlastscopeError
        For ``people`` of another length than ``items``, or a person ``colour`` was not fitted on; ``ImageError`` as
        :func:`resized_pixels`.
    """
    if people is None:
        require_subjects([item for item in items if isinstance(item, Cell)], "cells to predict", "give people=")
        people = [item.subject if isinstance(item, Cell) else ONE_PERSON for item in items]  # type: ignore[misc]
    if len(people) != len(items):
        raise BlastscopeError(f"{len(people)} people given for {len(items)} images")
    inputs = [resized_pixels(item, pre, cache) for item in items]
    if colour is None:
        colour = fit_colour(zip(people, (one.pixels for one in inputs), strict=True))
    unknown = sorted(set(people) - colour.cells.keys())
    if unknown:
        raise BlastscopeError(
            f"no colour statistics for person {unknown[0]!r}: fit them over every person's images "
            "(fit_colour) before predicting them"
        )
    return [replace(one, pixels=colour(one.pixels, person)) for one, person in zip(inputs, people, strict=True)]


def fit_colour(images: Iterable[tuple[str, np.ndarray]], whose: str = "person") -> SubjectColour:
    """:meth:`SubjectColour.fit <blastscope.data.stain.SubjectColour.fit>` over ``(person, uint8 (S, S, 3) model
    input)`` pairs, one pass (a generator keeps no image).

    Logged as a warning, one line each, since neither is visible in the answer: people with fewer than
    :data:`FEW_CELLS` cells (noisy statistics), and people whose cells hold too few cell pixels for statistics at all
    (left as decoded). ``whose`` names what a person id is in those lines (``photograph`` for one scanned smear's
    cells)."""
    colour = SubjectColour.fit(images)
    few = {person: n for person, n in colour.cells.items() if n < FEW_CELLS}
    if few:
        person, n = next(iter(few.items()))
        log.warning(
            "colours are normalised per person, and %d of %d people have under %d cells (e.g. %s: %d), too few for "
            "steady statistics: their normalised colours are less reliable (give all of a person's cells together)",
            len(few),
            len(colour.cells),
            FEW_CELLS,
            _who(person, whose),
            n,
        )
    bare = [person for person in colour.cells if person not in colour.statistics]
    if bare:
        log.warning(
            "%s: not colour-normalised: too few cell pixels (under %d in all), left as decoded%s",
            _who(bare[0], whose),
            MIN_CELL_PIXELS,
            f" ({len(bare)} of {len(colour.cells)} people so)" if len(bare) > 1 else "",
        )
    return colour


def _who(person: str, whose: str) -> str:
    """A person as the warnings of :func:`fit_colour` name them."""
    return "these images, taken as one person's" if person == ONE_PERSON else f"{whose} {person}"


def readable(items: Sequence[Item], pre: Preprocessing, cache: DecodedCache | None = None) -> Readable:
    """Read every item once (through ``cache`` for cells, which later reads then find warm) and set aside those that
    cannot be read or whose cell cannot be found, with the reason."""
    kept: list[Item] = []
    segmented: list[bool] = []
    skipped: list[tuple[Item, str]] = []
    for item in items:
        try:
            segmented.append(resized_pixels(item, pre, cache).segmented)
        except ImageError as error:
            skipped.append((item, error.reason))
            continue
        kept.append(item)
    return Readable(kept, segmented, skipped)


def batches(
    items: Sequence[Item],
    pre: Preprocessing,
    transform: Transform,
    batch_size: int = 32,
    cache: DecodedCache | None = None,
) -> Iterator[torch.Tensor]:
    """Normalised float32 batches of shape (B, 3, S, S), B <= ``batch_size``, in item order."""
    for batch, _ in _inputs_and_batches(items, pre, transform, batch_size, cache):
        yield batch


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` for a ``batch_size`` below 1, before any image is read or batch counted."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")


def _inputs_and_batches(
    items: Sequence[Item], pre: Preprocessing, transform: Transform, batch_size: int, cache: DecodedCache | None
) -> Iterator[tuple[torch.Tensor, list[ModelInput]]]:
    """:func:`batches`, each with its items' model inputs (whether they were cut out, how many white cells)."""
    check_batch_size(batch_size)
    if cache is None and any(isinstance(item, Cell) for item in items):
        cache = DecodedCache()
    for start in range(0, len(items), batch_size):
        inputs = [resized_pixels(item, pre, cache) for item in items[start : start + batch_size]]
        yield torch.stack([transform(one.pixels) for one in inputs]), inputs


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
    people: Sequence[str] | None = None,
) -> np.ndarray:
    """Logits of every item in every view: float32 array of shape (N, V, C), V = 8 with ``tta`` else 1.

    ``transform`` maps a resized uint8 image to the model's input (a run's own: ``TrainedRun.transform``);
    ``people`` groups the items by person for ``pre.colour_norm == "subject"`` (:func:`by_person`).
    Raises ``ValueError`` for no items and ``ImageError`` for an unreadable file or a cell that cannot be found.
    """
    return predict_items(
        runner, items, pre, transform, tta=tta, batch_size=batch_size, cache=cache, progress=progress, people=people
    ).logits


def predict_items(
    runner: Runner,
    items: Sequence[Item],
    pre: Preprocessing,
    transform: Transform,
    *,
    tta: bool = False,
    batch_size: int = 32,
    cache: DecodedCache | None = None,
    progress: bool = False,
    people: Sequence[str] | None = None,
    colour: SubjectColour | None = None,
) -> ItemLogits:
    """:func:`predict_logits` together with each item's ``segmented`` flag and white-cell count, from one read of
    each item; ``colour`` as :func:`by_person`'s."""
    if not len(items):
        raise ValueError("no images to predict")
    check_batch_size(batch_size)
    if pre.colour_norm == "subject":
        items = by_person(items, pre, cache, people, colour)
    total = -(-len(items) // batch_size)
    chunks, segmented, white_cells = [], [], []  # the inputs' flags only: their pixels are not kept
    for batch, inputs in tqdm(
        _inputs_and_batches(items, pre, transform, batch_size, cache),
        total=total,
        desc="predict",
        unit="batch",
        disable=not progress,
    ):
        chunks.append(view_logits(runner, batch, tta).float().numpy())
        segmented += [one.segmented for one in inputs]
        white_cells += [one.white_cells for one in inputs]
    return ItemLogits(np.concatenate(chunks), np.array(segmented, dtype=bool), white_cells)


class _PooledFeatures(nn.Module):
    """A network whose output is what its head consumes, a feature map averaged over its positions: (N, D)."""

    def __init__(self, model: CellClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(images)
        return features.flatten(2).mean(dim=-1) if features.ndim > 2 else features


def predict_features(
    model: CellClassifier,
    items: Sequence[Item],
    pre: Preprocessing,
    transform: Transform,
    *,
    precision: InferencePrecision = "fp32",
    batch_size: int = 32,
    cache: DecodedCache | None = None,
    progress: bool = False,
    people: Sequence[str] | None = None,
) -> np.ndarray:
    """Penultimate features of every item, float32 of shape (N, D): ``model.forward_features`` of the plain view,
    global-average-pooled when it is a map (N, D, h, w).

    Items are read, batched and run (:class:`TorchRunner`, one precision policy) exactly as :func:`predict_logits`
    does; only the network's output differs. Features need the PyTorch network: an ONNX runner has none. Raises
    ``BlastscopeError`` for a model that is not a ``CellClassifier`` or has no ``forward_features`` of its own (an
    ensemble), and what :func:`predict_logits` raises.
    """
    if not isinstance(model, CellClassifier):
        raise BlastscopeError(
            "features need the run's PyTorch network, which an ONNX export or a runner does not give: use the run's "
            "checkpoint, not an ONNX export"
        )
    if type(model).forward_features is CellClassifier.forward_features:
        raise BlastscopeError(
            "this network has no penultimate features of its own (an ensemble run averages its members' outputs): use "
            "a run of one network, e.g. one of the ensemble's members"
        )
    runner = TorchRunner(_PooledFeatures(model), precision)
    views = predict_items(
        runner, items, pre, transform, batch_size=batch_size, cache=cache, progress=progress, people=people
    )
    return views.logits[:, 0, :]  # the runner's "logits" are the features here, one view


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (N, C), float64: the softmax of ``logits / temperature``, averaged over views.

    ``logits`` has shape (N, V, C) (views from :func:`predict_logits`) or (N, C).
    """
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float64))  # float64: no p rounds to exactly 1 at small T
    if logits.ndim == 2:
        logits = logits.unsqueeze(1)
    return (logits / float(temperature)).softmax(dim=-1).mean(dim=1).numpy()
