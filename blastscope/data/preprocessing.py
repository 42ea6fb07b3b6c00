"""How images are turned into one model's input: size, interpolation and normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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

    No model is fed another's normalisation: each registered model brings its own (``ModelSpec.preprocessing``).
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

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
        )
