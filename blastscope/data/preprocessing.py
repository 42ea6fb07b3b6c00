"""How images are turned into one model's input: segmentation, size, interpolation and normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blastscope.errors import BlastscopeError

SEGMENT_MODES = ("auto", "always", "never")
"""``--segment``: cut cells out of their background ``auto`` (only images not already on black), ``always`` or
``never`` (:func:`blastscope.segmentation.cell_for_model` applies them). Kept here, with the record, so that reading a
run's settings does not load the image-analysis libraries."""


def check_segment_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`SEGMENT_MODES`.

    Raises
    ------
    BlastscopeError
        For any other value.
    """
    if mode not in SEGMENT_MODES:
        raise BlastscopeError(f"segment mode {mode!r} is unknown: use one of {', '.join(SEGMENT_MODES)}")
    return mode


def segment_override_line(trained: str, given: str) -> str | None:
    """One line for a person when ``given`` (this call's ``--segment``) differs from the mode the run was trained
    with; ``None`` when they agree.

    Raises
    ------
    BlastscopeError
        For an unknown ``given`` mode.
    """
    if check_segment_mode(given) == trained:
        return None
    return (
        f"segmenting with --segment {given} for this call; the run was trained with --segment {trained}, so its "
        "inputs may not look like the cells it learned from"
    )


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How images must be prepared for one model, taken from its backbone's timm pretrained config.

    Attributes
    ----------
    input_size : int
        Side of the square model input, in pixels; every image is resized to ``input_size x input_size``.
    mean, std : tuple of 3 floats
        Per-channel RGB mean and standard deviation on the [0, 1] scale (uint8 / 255): the model is fed
        ``(x / 255 - mean) / std``.
    interpolation : str
        The resize filter (``bilinear``, ``bicubic``, ...), as the pretrained weights were trained with.
    segment : {"auto", "always", "never"}
        Whether a cell is cut out onto black before resizing (:func:`blastscope.segmentation.cell_for_model`); the
        run's ``--segment``, applied alike in training and every inference door.

    No model is fed another's normalisation: each registered model brings its own (``ModelSpec.preprocessing``).

    Raises
    ------
    BlastscopeError
        For an unknown ``segment`` mode.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    segment: str = "auto"

    def __post_init__(self) -> None:
        check_segment_mode(self.segment)

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists for mean/std) for YAML, JSON and ONNX metadata."""
        data = asdict(self)
        return {**data, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
            # A record without the key was written before segmentation existed: that run saw its images as decoded.
            segment=str(data.get("segment", "never")),
        )
