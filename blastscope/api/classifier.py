"""Class probabilities and Grad-CAM explanations for cell images, from one trained network.

Inference runs through a *runner*: a callable from a normalised NCHW batch to logits, either the PyTorch model or an
exported ONNX Runtime session, so both backends share the preprocessing and the test-time augmentation of
``blastscope evaluate``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.data.table import Cell
from blastscope.inference.gradcam import Explanation, grad_cam, overlay_heatmap
from blastscope.inference.predict import resize_image
from blastscope.inference.tta import view_logits
from blastscope.metrics import predict_labels
from blastscope.models.base import CellClassifier

ImageInput = str | Path | Image.Image
Runner = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The class of one image and the probability of every class."""

    file: str
    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "label": self.label, "probabilities": self.probabilities}


def torch_runner(model: nn.Module) -> Runner:
    """Logits from the PyTorch model, without autograd bookkeeping."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch).float()

    return run


def probabilities(runner: Runner, batch: torch.Tensor, tta: bool = False) -> np.ndarray:
    """Softmax probabilities (N, C); with ``tta`` the mean over the 8 dihedral views, as in ``blastscope evaluate``."""
    logits = view_logits(runner, batch, tta)  # type: ignore[arg-type]  # any logits callable will do
    return logits.float().softmax(dim=-1).mean(dim=1).numpy()


def cell_batches(
    cells: Sequence[Cell], pre: Preprocessing, transform: Transform, batch_size: int = 32
) -> Iterator[torch.Tensor]:
    """Normalised batches of dataset cells, decoded through the shared cache exactly as training saw them."""
    from blastscope.data.cache import DecodedCache

    cache = DecodedCache()
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        arrays = [cache.load(cell.path, cell.digest, pre.input_size, pre.interpolation) for cell in chunk]
        yield torch.stack([transform(array) for array in arrays])


class Classifier:
    """A trained network ready to classify and explain cell images; ``blastscope.load(run_dir)`` returns one.

    ``transform`` turns a resized uint8 image into the model's input (default: plain normalisation; a run's own is
    ``TrainedRun.transform``). ``runner`` defaults to the PyTorch model; pass an ``OnnxModel`` to predict through ONNX
    Runtime. ``attribution`` is the credit line the training data asks for, shown wherever the model is served.
    Grad-CAM always uses the PyTorch model. Calls are serialised by a lock so one instance can serve many threads.
    """

    def __init__(
        self,
        model: CellClassifier,
        preprocessing: Preprocessing,
        classes: Sequence[str],
        *,
        name: str = "",
        transform: Transform | None = None,
        runner: Runner | None = None,
        backend: str = "torch",
        attribution: str = "",
    ) -> None:
        from blastscope.data.transforms import eval_transform

        self.model = model.eval()
        self.preprocessing = preprocessing
        self.classes = tuple(classes)
        self.name = name
        self.backend = backend
        self.attribution = attribution
        self._runner = runner or torch_runner(self.model)
        self._transform = transform or eval_transform(preprocessing)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Classifier({self.name!r}, classes={self.classes}, backend={self.backend!r})"

    def predict(
        self, images: ImageInput | Sequence[ImageInput], *, tta: bool = False, batch_size: int = 32
    ) -> list[Prediction]:
        """One Prediction per image (a path or a PIL image), in order; unreadable files raise ``ImageError``."""
        items = _as_list(images)
        rows = self.predict_proba(items, tta=tta, batch_size=batch_size)
        labels = predict_labels(rows)
        return [
            Prediction(
                _display_file(item, i), self.classes[label], dict(zip(self.classes, map(float, row), strict=True))
            )
            for i, (item, label, row) in enumerate(zip(items, labels, rows, strict=True))
        ]

    def predict_proba(
        self, images: ImageInput | Sequence[ImageInput], *, tta: bool = False, batch_size: int = 32
    ) -> np.ndarray:
        """Probabilities (N, C) with columns in ``classes`` order."""
        items = _as_list(images)
        chunks = [np.empty((0, len(self.classes)), dtype=np.float32)]
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self._tensor(_rgb(item)) for item in items[start : start + batch_size]])
            with self._lock:
                chunks.append(probabilities(self._runner, batch, tta))
        return np.concatenate(chunks)

    def explain(self, image: ImageInput, target: str | None = None) -> Explanation:
        """Grad-CAM of ``target`` (default: the predicted class) over the image resized to the model's input."""
        resized = resize_image(_rgb(image), self.preprocessing)
        batch = self._transform(resized).unsqueeze(0)
        with self._lock:
            if target is None:
                index = int(predict_labels(probabilities(self._runner, batch))[0])
            else:
                index = self._class_index(target)
            heatmap = grad_cam(self.model, batch, index)
        return Explanation(self.classes[index], heatmap, overlay_heatmap(resized, heatmap))

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        return self._transform(resize_image(image, self.preprocessing))

    def _class_index(self, label: str) -> int:
        if label not in self.classes:
            raise ValueError(f"unknown class {label!r}; this model knows {', '.join(self.classes)}")
        return self.classes.index(label)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    return list(images)


def _rgb(item: ImageInput) -> Image.Image:
    from blastscope.data.images import read_rgb

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, Path)):
        return read_rgb(Path(item))
    raise TypeError(f"expected an image path or a PIL image, got {type(item).__name__}")


def _display_file(item: ImageInput, index: int) -> str:
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"image {index}"
    return str(item)
