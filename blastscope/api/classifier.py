"""A trained classifier ready for new images: probabilities, decisions at the run's operating point, Grad-CAM.

Predictions run through the inference core (``blastscope.inference``) with a runner, either the PyTorch network or an
exported ONNX Runtime session, so every backend shares the preprocessing (segmentation included), the test-time
augmentation, the temperature and the decision rule of ``blastscope evaluate``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from blastscope.data.cache import ModelInput, model_input
from blastscope.data.classes import match_class
from blastscope.data.images import DEFAULT_MAX_PIXELS, decode_pil, read_rgb
from blastscope.data.people import group_people
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import SubjectColour
from blastscope.data.transforms import Transform, eval_transform
from blastscope.errors import ImageError
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.inference.gradcam import Explanation
from blastscope.inference.gradcam import explain as explain_gradcam
from blastscope.inference.predict import (
    ONE_PERSON,
    ItemLogits,
    by_person,
    check_batch_size,
    fit_colour,
    predict_items,
    probabilities,
    resized_pixels,
    several_cells,
    several_cells_line,
)
from blastscope.inference.runners import Runner
from blastscope.models.base import CellClassifier
from blastscope.workflows.scan import FoundCells, ImageScan, find_cells, judge_cells, scan_photograph

log = logging.getLogger(__name__)

ImageInput = str | Path | Image.Image | ModelInput
"""An image file's path, a PIL image, or an image already made the model's input (:meth:`Classifier.prepare`)."""

People = str | Sequence[str]
"""Whose cells are whose, for a run that normalises colours per person: a grouping of
:data:`~blastscope.data.people.PERSON_BY` (``auto``: by C-NMC subject when every file name parses, all of one call's
images one person's when none does, refused when only some do), or one person id per image. How a grouping grouped
is logged at INFO. A run without ``colour_norm`` ignores it."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The class of one image, the probability of every class, and the threshold that decided it.

    ``threshold`` is on p(``positive_class``), so a saved row says which class it is about; both are ``None`` for
    multi-class models (the most probable class wins). ``decided_by`` says where the operating point came from
    (``OperatingPoint.origin``); ``segmented`` whether the cell was cut out of its background before it was classified
    (``Preprocessing.segment``); ``tta`` whether ``probabilities`` are the mean over the image's 8 flips/rotations
    (test-time augmentation, :data:`~blastscope.inference.tta.VIEW_NAMES`) rather than of the image as it is: the
    operating point is chosen on single-view probabilities either way, so with TTA its threshold, temperature and refer
    band apply untuned; ``referred`` whether p(positive) lies inside the operating point's refer band
    (:func:`~blastscope.inference.decision.uncertain`): the cell keeps ``label`` but is "uncertain — refer", for a
    person to review; ``white_cells`` how many whole white cells segmentation found in the image (None where it did
    not count them): more than one means the image was not of one cell (a smear photograph) and the prediction is
    about the one nearest its centre only (:meth:`Classifier.scan` classifies every one).
    """

    file: str
    label: str
    probabilities: dict[str, float]
    positive_class: str | None
    threshold: float | None
    decided_by: str
    segmented: bool = False
    tta: bool = False
    referred: bool = False
    white_cells: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "label": self.label,
            "probabilities": self.probabilities,
            "positive_class": self.positive_class,
            "threshold": self.threshold,
            "decided_by": self.decided_by,
            "segmented": self.segmented,
            "tta": self.tta,
            "referred": self.referred,
            "white_cells": self.white_cells,
        }


class Classifier:
    """A trained network ready to classify and explain cell images; ``blastscope.load(run_dir)`` returns one.

    Parameters
    ----------
    runner : Runner
        Executes the network (``TorchRunner`` or ``OnnxRunner``).
    model : CellClassifier
        The PyTorch network, for Grad-CAM (ONNX Runtime has no gradients).
    preprocessing : Preprocessing
        Input size, normalisation and whether cells are cut out of their background (``segment``).
    operating_point : OperatingPoint
        Classes, positive class, threshold and temperature: the run's own unless overridden.
    transform : callable, optional
        Resized uint8 (S, S, 3) image -> normalised tensor; default plain normalisation, a run's own is
        ``TrainedRun.transform``.
    name, attribution : str
        The model's display name, and the credit line its training data asks for wherever it is served.
    warnings : sequence of str
        Lines every door shows beside its output: e.g. a temperature at a bound of its fit, which makes every
        probability it scales untrustworthy (``runs.trained.temperature_warnings``).

    Calls are serialised by a lock so one instance can serve many threads.
    """

    def __init__(
        self,
        runner: Runner,
        model: CellClassifier,
        preprocessing: Preprocessing,
        operating_point: OperatingPoint,
        *,
        transform: Transform | None = None,
        name: str = "",
        attribution: str = "",
        warnings: Sequence[str] = (),
    ) -> None:
        self.runner = runner
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.operating_point = operating_point
        self.name = name
        self.attribution = attribution
        self.warnings = tuple(warnings)
        self._transform = transform or eval_transform(preprocessing)
        self._lock = threading.Lock()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.operating_point.classes

    @property
    def backend(self) -> str:
        return self.runner.name

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, classes={self.classes}, backend={self.backend!r})"

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        tta: bool = False,
        batch_size: int = 32,
        threshold: float | None = None,
        people: People = "auto",
        colour: SubjectColour | None = None,
    ) -> list[Prediction]:
        """One Prediction per image (a path, a PIL image or a prepared input), in order.

        ``tta`` averages each image's probabilities over its 8 flips/rotations (``Prediction.tta`` says so); the
        operating point decides at its threshold and temperature, chosen without TTA, all the same.
        ``threshold`` overrides the operating point's threshold for this call only, and drops its refer band (chosen
        around the stored threshold), so no cell is ``referred``; a multi-class model refuses it, and so does every
        model a threshold that is not a number (``True``, ``"0.3"``) or outside [0, 1] (``BlastscopeError``). For a
        run that normalises colours per person (``preprocessing.colour_norm == "subject"``) ``people`` says whose cells
        are whose (:data:`People`), and ``colour`` gives statistics fitted beforehand (:meth:`fit_colour`) over more of
        each person's images than this call's; by default they are fitted over this call's. Raises ``ImageError``
        naming the image for an unreadable file or, when the run segments, a cell that cannot be found (:meth:`prepare`
        each image first to skip such images one by one), and ``ValueError`` for a ``batch_size`` below 1.

        An image in which segmentation finds several whole white cells (a smear photograph given as one cell) is
        classified by the one nearest its centre: its ``white_cells`` says how many, and one warning per call names
        such images among those given as paths or PIL images (a prepared input carries its count from
        :meth:`prepare`).
        """
        items = _as_list(images)
        point = self._point(threshold)
        predicted = self._predicted(items, tta, batch_size, people, colour)
        rows = probabilities(predicted.logits, point.temperature)
        labels, referred = decide(rows, point), uncertain(rows, point)
        several = [
            (_display_file(item, i), count)
            for i, (item, count) in enumerate(zip(items, predicted.white_cells, strict=True))
            if several_cells(count) and not isinstance(item, ModelInput)
        ]
        if several:
            log.warning("%s", several_cells_line(several, "Classifier.scan"))
        return [
            Prediction(
                _display_file(item, i),
                self.classes[label],
                dict(zip(self.classes, map(float, row), strict=True)),
                point.positive_class,
                point.threshold if point.binary else None,
                point.origin(),
                segmented=bool(segmented),
                tta=bool(tta),
                referred=bool(flag),
                white_cells=count,
            )
            for i, (item, label, row, segmented, flag, count) in enumerate(
                zip(items, labels, rows, predicted.segmented, referred, predicted.white_cells, strict=True)
            )
        ]

    def describe_referral(self, threshold: float | None = None) -> str:
        """The refer rule :meth:`predict` applies, in one line: ``uncertain — refer when 0.3100 < p(ALL) < 0.7200
        (...)``, or why no cell is referred (``no refer band: ...``).

        ``threshold`` as for :meth:`predict`. A given threshold (this call's, or ``load(threshold=...)``'s) has no
        band: the run's band was chosen around its stored threshold (``blastscope evaluate --refer-error``).
        """
        point = self._point(threshold)
        if not point.binary:
            return "no refer band: a multi-class model calls every cell its most probable class"
        if point.refer_band is None and point.source == "given":
            return (
                "no refer band with a given threshold: every cell is called (a band is chosen around the run's stored "
                "threshold by `blastscope evaluate --refer-error`)"
            )
        return point.describe_referral()

    def predict_proba(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        tta: bool = False,
        batch_size: int = 32,
        people: People = "auto",
        colour: SubjectColour | None = None,
    ) -> np.ndarray:
        """Probabilities (N, C), columns in ``classes`` order, after the operating point's temperature scaling;
        ``people`` and ``colour`` as for :meth:`predict`."""
        items = _as_list(images)
        if not items:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        predicted = self._predicted(items, tta, batch_size, people, colour)
        return probabilities(predicted.logits, self.operating_point.temperature)

    @property
    def per_person(self) -> bool:
        """Whether the run normalises colours per person (``--colour-norm subject``): its callers must group cells."""
        return self.preprocessing.colour_norm == "subject"

    def fit_colour(self, images: Sequence[ImageInput], people: People = "auto") -> SubjectColour:
        """The per-person colour statistics of ``images`` (grouped as ``people`` says), to pass to :meth:`predict`
        and :meth:`explain` when one person's images are given over several calls (a folder in chunks).

        An image :meth:`prepare` refuses (unreadable, or no cell found) is left out: :meth:`predict` refuses it too.
        Each image is read once and not kept.
        """
        ids = self._people(images, people, readable=self.can_read)
        return fit_colour(
            (person, pixels)
            for image, person in zip(images, ids, strict=True)
            if (pixels := self._pixels_or_none(image)) is not None
        )

    def can_read(self, image: ImageInput) -> bool:
        """Whether :meth:`prepare` can make ``image`` the model's input (readable, and its cell found)."""
        return self._pixels_or_none(image) is not None

    def _pixels_or_none(self, image: ImageInput) -> np.ndarray | None:
        try:
            return self.prepare(image).pixels
        except ImageError:
            return None

    def prepare(self, image: ImageInput) -> ModelInput:
        """The image as this model takes it: decoded, its cell cut out of its background when the run's ``segment``
        mode says so, and resized; with whether it was cut out.

        Raises ``ImageError`` naming the image when it cannot be read or its cell cannot be found.
        """
        if not isinstance(image, (str, Path, Image.Image, ModelInput)):
            raise TypeError(f"expected an image path or a PIL image, got {type(image).__name__}")
        return resized_pixels(Path(image) if isinstance(image, str) else image, self.preprocessing)

    def explain(
        self,
        image: ImageInput,
        target: str | None = None,
        *,
        person: str = ONE_PERSON,
        colour: SubjectColour | None = None,
    ) -> Explanation:
        """Grad-CAM of ``target`` (a class name, matched ignoring case; default: the decided class) over the image as
        the model saw it (cut out, when the run segments, resized to the model's input, and, for a run that normalises
        colours per person, with its colours normalised by ``person``'s statistics in ``colour``: by default the image
        alone, one person per call as :meth:`predict`).

        The explained layer is the deepest whose feature map is at least 3x3 at the model's input size;
        ``Explanation.usable`` is false (with a ``note`` saying why) when the map shows nothing."""
        prepared = self.prepare(image)
        if target is not None:
            index = self._class_index(target)
        else:
            decided = self.predict(prepared, people=[person], colour=colour)[0].label
            index = self.classes.index(decided)
        if self.per_person:
            prepared = by_person([prepared], self.preprocessing, people=[person], colour=colour)[0]
        resized = prepared.pixels
        batch = self._transform(resized).unsqueeze(0)
        with self._lock:
            return explain_gradcam(self.model, batch, resized, index, self.classes[index], name=self.name)

    def scan(
        self,
        image: ImageInput,
        *,
        red_cell_diameter: float | None = None,
        tta: bool = False,
        name: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> ImageScan:
        """Every white cell of a smear photograph (a path or a PIL image), cut out onto black as C-NMC cells are and
        classified at the operating point, with the image's verdict and an overlay (:mod:`blastscope.workflows.scan`).

        ``red_cell_diameter`` (photograph px; default 1/6.4 of the longer side, as in BCCD fields) sets the scale the
        cells are cut out at. A path is decoded only within ``max_pixels`` (a guard against decompression bombs).
        Raises ``ImageError`` for an unreadable file, ``BlastscopeError`` for an unusable ``red_cell_diameter``."""
        name = name or _display_file(image, 0)
        return scan_photograph(
            _rgb(image, max_pixels),
            partial(self._classify_cutouts, tta=tta, photograph=name),
            self.operating_point,
            name=name,
            red_cell_diameter=red_cell_diameter,
        )

    def scan_together(
        self,
        images: Sequence[ImageInput],
        *,
        red_cell_diameter: float | None = None,
        tta: bool = False,
        names: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[ImageScan | ImageError]:
        """:meth:`scan` of every photograph, with the white cells of all of them classified in one call: one
        person's, for a run that normalises colours per person (its statistics pooled over every photograph's cells).

        Every photograph is kept (with its cut-outs) until all are found. A photograph that cannot be read, or is a
        grey field or a cell already on black, is answered by its ``ImageError`` in its place; ``BlastscopeError``
        for an unusable ``red_cell_diameter``."""
        found: list[FoundCells | ImageError] = []
        for i, image in enumerate(images):
            name = names[i] if names is not None else _display_file(image, i)
            try:
                found.append(find_cells(_rgb(image, max_pixels), name=name, red_cell_diameter=red_cell_diameter))
            except ImageError as error:
                found.append(error)
        canvases = [cell.canvas for one in found if isinstance(one, FoundCells) for cell in one.kept]
        every = self._classify_cutouts(canvases, tta=tta) if canvases else np.empty((0, len(self.classes)))
        scans: list[ImageScan | ImageError] = []
        start = 0
        for one in found:
            if isinstance(one, ImageError):
                scans.append(one)
                continue
            scans.append(judge_cells(one, every[start : start + len(one.kept)], self.operating_point))
            start += len(one.kept)
        return scans

    def _classify_cutouts(
        self, canvases: Sequence[np.ndarray], *, tta: bool, photograph: str | None = None
    ) -> np.ndarray:
        """Probabilities of cut-outs on black (never segmented again), all of them one person's: ``photograph``'s
        (named so in :func:`~blastscope.inference.predict.fit_colour`'s warnings), or several photographs'."""
        pre = self.preprocessing
        inputs = [
            model_input(Image.fromarray(c), pre.input_size, pre.interpolation, "never", pre.crop_fraction)
            for c in canvases
        ]
        people = [photograph or ONE_PERSON] * len(inputs)
        colour = None
        if self.per_person and inputs:
            pairs = zip(people, (one.pixels for one in inputs), strict=True)
            colour = fit_colour(pairs, whose="photograph")
        return self.predict_proba(inputs, tta=tta, people=people, colour=colour)

    def _point(self, threshold: float | None) -> OperatingPoint:
        """The operating point a call decides at: the classifier's, or its threshold replaced for this call."""
        if threshold is None:
            return self.operating_point
        return self.operating_point.with_threshold(threshold, "predict(threshold=...)", self.name or "this model")

    def _predicted(
        self, items: list[ImageInput], tta: bool, batch_size: int, people: People, colour: SubjectColour | None
    ) -> ItemLogits:
        """Logits and ``segmented`` flags; decoding and segmentation run outside the lock, so threads share them."""
        if not isinstance(tta, bool):  # tta="no" would otherwise count as true
            raise TypeError(f"tta must be True or False, got {tta!r}")
        check_batch_size(batch_size)  # before the images are read
        prepared = [self.prepare(item) for item in items]  # first: an unreadable image stops the call here
        ids = self._people(items, people) if self.per_person else None
        with self._lock:
            return predict_items(
                self.runner,
                prepared,
                self.preprocessing,
                self._transform,
                tta=tta,
                batch_size=batch_size,
                people=ids,
                colour=colour,
            )

    def _people(
        self, items: Sequence[ImageInput], people: People, readable: Callable[[ImageInput], bool] | None = None
    ) -> list[str]:
        """One person id per item: ``people``'s grouping of the items' names (logged in one line; ``readable`` as
        :func:`~blastscope.data.people.group_people`'s), or its ids as given."""
        if not isinstance(people, str):
            return list(people)
        grouped = group_people(items, people, door="api", readable=readable)
        log.info("%s", grouped.line)
        return grouped.ids

    def _class_index(self, label: str) -> int:
        """The index of ``label``, matched ignoring case as ``--positive-class`` is (``ALL``, as every door shows it,
        is the class ``all``)."""
        if (found := match_class(label, self.classes)) is None:
            raise ValueError(f"unknown class {label!r}; this model knows {', '.join(self.classes)}")
        return self.classes.index(found)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a sequence of them as a list; anything else is refused here, by what it is, rather than deep
    inside (bytes would iterate as integers, a number not at all)."""
    if isinstance(images, (str, Path, Image.Image, ModelInput)):
        return [images]
    if isinstance(images, (bytes, bytearray)):
        raise TypeError("got the bytes of a file: pass its path, or a PIL image (PIL.Image.open(io.BytesIO(data)))")
    if not isinstance(images, Iterable):
        raise TypeError(f"expected an image path, a PIL image, or a list of them, got {type(images).__name__}")
    return list(images)


def _rgb(item: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    if isinstance(item, Image.Image):
        return decode_pil(item).image
    if isinstance(item, (str, Path)):
        return read_rgb(Path(item), max_pixels)
    raise TypeError(f"expected an image path or a PIL image, got {type(item).__name__}")


def _display_file(item: ImageInput, index: int) -> str:
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"image {index}"
    if isinstance(item, ModelInput):
        return f"image {index}"
    return str(item)
