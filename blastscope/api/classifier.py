"""A trained classifier ready for new images: probabilities, decisions at the run's operating point, Grad-CAM.

Predictions run through the inference core (``blastscope.inference``) with a runner, either the PyTorch network or an
exported ONNX Runtime session, so every backend shares the preprocessing (segmentation included), the test-time
augmentation, the temperature and the decision rule of ``blastscope evaluate``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from blastscope.data.cache import ModelInput, model_input
from blastscope.data.images import decode_pil, read_rgb
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.transforms import Transform, eval_transform
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.inference.gradcam import Explanation
from blastscope.inference.gradcam import explain as explain_gradcam
from blastscope.inference.predict import ItemLogits, predict_items, probabilities, resized_pixels
from blastscope.inference.runners import Runner
from blastscope.models.base import CellClassifier
from blastscope.workflows.scan import ImageScan, scan_photograph

ImageInput = str | Path | Image.Image | ModelInput
"""An image file's path, a PIL image, or an image already made the model's input (:meth:`Classifier.prepare`)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The class of one image, the probability of every class, and the threshold that decided it.

    ``threshold`` is ``None`` for multi-class models (the most probable class wins); ``decided_by`` says where the
    operating point came from (``OperatingPoint.origin``); ``segmented`` whether the cell was cut out of its
    background before it was classified (``Preprocessing.segment``); ``referred`` whether p(positive) lies inside the
    operating point's refer band (:func:`~blastscope.inference.decision.uncertain`): the cell keeps ``label`` but is
    "uncertain — refer", for a person to review.
    """

    file: str
    label: str
    probabilities: dict[str, float]
    threshold: float | None
    decided_by: str
    segmented: bool = False
    referred: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "label": self.label,
            "probabilities": self.probabilities,
            "threshold": self.threshold,
            "decided_by": self.decided_by,
            "segmented": self.segmented,
            "referred": self.referred,
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
    ) -> None:
        self.runner = runner
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.operating_point = operating_point
        self.name = name
        self.attribution = attribution
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
    ) -> list[Prediction]:
        """One Prediction per image (a path, a PIL image or a prepared input), in order.

        ``threshold`` overrides the operating point's threshold for this call only, and drops its refer band (chosen
        around the stored threshold), so no cell is ``referred``. Raises ``ImageError`` naming the image for an
        unreadable file or, when the run segments, a cell that cannot be found (:meth:`prepare` each image first to
        skip such images one by one).
        """
        items = _as_list(images)
        point = self._point(threshold)
        predicted = self._predicted(items, tta, batch_size)
        rows = probabilities(predicted.logits, point.temperature)
        labels, referred = decide(rows, point), uncertain(rows, point)
        return [
            Prediction(
                _display_file(item, i),
                self.classes[label],
                dict(zip(self.classes, map(float, row), strict=True)),
                point.threshold if point.binary else None,
                point.origin(),
                bool(segmented),
                bool(flag),
            )
            for i, (item, label, row, segmented, flag) in enumerate(
                zip(items, labels, rows, predicted.segmented, referred, strict=True)
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
        self, images: ImageInput | Sequence[ImageInput], *, tta: bool = False, batch_size: int = 32
    ) -> np.ndarray:
        """Probabilities (N, C), columns in ``classes`` order, after the operating point's temperature scaling."""
        items = _as_list(images)
        if not items:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        return probabilities(self._predicted(items, tta, batch_size).logits, self.operating_point.temperature)

    def prepare(self, image: ImageInput) -> ModelInput:
        """The image as this model takes it: decoded, its cell cut out of its background when the run's ``segment``
        mode says so, and resized; with whether it was cut out.

        Raises ``ImageError`` naming the image when it cannot be read or its cell cannot be found.
        """
        if not isinstance(image, (str, Path, Image.Image, ModelInput)):
            raise TypeError(f"expected an image path or a PIL image, got {type(image).__name__}")
        return resized_pixels(Path(image) if isinstance(image, str) else image, self.preprocessing)

    def explain(self, image: ImageInput, target: str | None = None) -> Explanation:
        """Grad-CAM of ``target`` (default: the decided class) over the image as the model saw it (cut out, when
        the run segments, and resized to the model's input).

        The explained layer is the deepest whose feature map is at least 3x3 at the model's input size;
        ``Explanation.usable`` is false (with a ``note`` saying why) when the map shows nothing."""
        prepared = self.prepare(image)
        index = self._class_index(target) if target is not None else self.classes.index(self.predict(prepared)[0].label)
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
    ) -> ImageScan:
        """Every white cell of a smear photograph (a path or a PIL image), cut out onto black as C-NMC cells are and
        classified at the operating point, with the image's verdict and an overlay (:mod:`blastscope.workflows.scan`).

        ``red_cell_diameter`` (photograph px; default 1/6.4 of the longer side, as in BCCD fields) sets the scale the
        cells are cut out at. Raises ``ImageError`` for an unreadable file, ``BlastscopeError`` for an unusable
        ``red_cell_diameter``."""
        photo, pre = _rgb(image), self.preprocessing

        def classify(canvases: Sequence[np.ndarray]) -> np.ndarray:  # cut out already: never segmented again
            inputs = [
                model_input(Image.fromarray(c), pre.input_size, pre.interpolation, "never", pre.crop_fraction)
                for c in canvases
            ]
            return self.predict_proba(inputs, tta=tta)

        return scan_photograph(
            photo,
            classify,
            self.operating_point,
            name=name or _display_file(image, 0),
            red_cell_diameter=red_cell_diameter,
        )

    def _point(self, threshold: float | None) -> OperatingPoint:
        """The operating point a call decides at: the classifier's, or its threshold replaced for this call."""
        if threshold is None:
            return self.operating_point
        return self.operating_point.with_threshold(threshold, "predict(threshold=...)")

    def _predicted(self, items: list[ImageInput], tta: bool, batch_size: int) -> ItemLogits:
        """Logits and ``segmented`` flags; decoding and segmentation run outside the lock, so threads share them."""
        prepared = [self.prepare(item) for item in items]
        with self._lock:
            return predict_items(
                self.runner, prepared, self.preprocessing, self._transform, tta=tta, batch_size=batch_size
            )

    def _class_index(self, label: str) -> int:
        if label not in self.classes:
            raise ValueError(f"unknown class {label!r}; this model knows {', '.join(self.classes)}")
        return self.classes.index(label)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, Path, Image.Image, ModelInput)):
        return [images]
    return list(images)


def _rgb(item: ImageInput) -> Image.Image:
    if isinstance(item, Image.Image):
        return decode_pil(item).image
    if isinstance(item, (str, Path)):
        return read_rgb(Path(item))
    raise TypeError(f"expected an image path or a PIL image, got {type(item).__name__}")


def _display_file(item: ImageInput, index: int) -> str:
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"image {index}"
    if isinstance(item, ModelInput):
        return f"image {index}"
    return str(item)
