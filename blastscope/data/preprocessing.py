"""How images are turned into one model's input: segmentation, crop, size, interpolation, channels and normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blastscope.errors import BlastscopeError

SEGMENT_MODES = ("auto", "always", "never")
"""``--segment``: cut cells out of their background ``auto`` (only images not already on black), ``always`` or
``never`` (:func:`blastscope.segmentation.cell_for_model` applies them). Kept here, with the record, so that reading a
run's settings does not load the image-analysis libraries."""


CHANNELS = ("rgb", "od", "hed")
"""``--channels``: what the network is fed. ``rgb`` the colours as decoded; ``od`` each channel's optical density
``-ln((I + 1) / 256)`` (Beer-Lambert: proportional to the amount of stain); ``hed`` the haematoxylin, eosin and DAB
amounts of colour deconvolution (Ruifrok & Johnston 2001, scikit-image ``rgb2hed``). Both stain inputs are divided by
the largest value a uint8 pixel can give (:data:`CHANNEL_SCALE`), so they lie in [0, 1] like RGB, and the black
canvas around a C-NMC cell is set to 0 (no stain) rather than to the largest density."""

CHANNEL_SCALE: dict[str, tuple[float, float, float]] = {
    "rgb": (1 / 255, 1 / 255, 1 / 255),
    "od": (1 / 5.545177444479562,) * 3,  # ln(256): the density of a black pixel
    "hed": (1 / 0.75324015, 1 / 0.45512904, 1 / 0.63115049),  # rgb2hed's largest output per stain, uint8 pixels >= 1
}
"""Per-channel factor from the raw channel values to the [0, 1] scale ``mean`` and ``std`` apply to."""


COLOUR_NORMS = ("none", "subject")
"""``--colour-norm``: ``none`` feeds each cell's colours as they are (after any ``--augment stain_norm``); ``subject``
maps every cell's L*a*b* colours by the mean and standard deviation pooled over all cells of its person onto one
C-NMC reference (Reinhard et al. 2001, per person instead of per image:
:class:`blastscope.data.stain.SubjectColour`). A person's stain, exposure and smear shift all their cells alike; pooled
over the person, the differences between their own cells stay."""


def check_colour_norm(mode: str) -> str:
    """``mode`` if it is one of :data:`COLOUR_NORMS`.

    Raises
    ------
    BlastscopeError
        For any other value.
    """
    if mode not in COLOUR_NORMS:
        raise BlastscopeError(f"colour normalisation {mode!r} is unknown: use one of {', '.join(COLOUR_NORMS)}")
    return mode


def check_crop_fraction(fraction: float) -> float:
    """``fraction`` if it is a share of the image's shorter side in (0, 1].

    Raises
    ------
    BlastscopeError
        For a value outside (0, 1] or not a number.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise BlastscopeError(f"crop fraction {fraction!r} is invalid: use a share of the shorter side in (0, 1]")
    return float(fraction)


def check_red_cell_diameter(diameter: float | None) -> float | None:
    """``diameter`` (px) if it is a usable red-cell size, above 2 px; None stays None (measure it on each image).

    Raises
    ------
    BlastscopeError
        For anything else: not a number, not finite, or 2 px or less.
    """
    if diameter is None:
        return None
    if isinstance(diameter, bool) or not isinstance(diameter, int | float) or not 2 < diameter < float("inf"):
        raise BlastscopeError(
            f"red-cell diameter {diameter!r} is invalid: give the red cells' size in pixels of the input images (> 2)"
        )
    return float(diameter)


def scale_override_line(trained: float | None, given: float) -> str | None:
    """One line for a person when ``given`` (this call's ``--red-cell-diameter``) differs from the red-cell diameter
    the run was trained with (None: measured on each image); ``None`` when they agree.

    Raises
    ------
    BlastscopeError
        For an unusable ``given``.
    """
    if check_red_cell_diameter(given) == trained:
        return None
    how = "with the diameter measured on each image" if trained is None else f"at {trained:g} px"
    return f"cutting cells out at a red-cell diameter of {given:g} px for this call; the run was trained {how}"


def check_channels(channels: str) -> str:
    """``channels`` if it is one of :data:`CHANNELS`.

    Raises
    ------
    BlastscopeError
        For any other value.
    """
    if channels not in CHANNELS:
        raise BlastscopeError(f"input channels {channels!r} are unknown: use one of {', '.join(CHANNELS)}")
    return channels


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
    crop_fraction : float
        Side of the centred square window kept before resizing, as a share of the image's shorter side (1: the whole
        image). One physical scale for every cell, so cell size stays a cue; the run's ``--crop-fraction``.
    channels : {"rgb", "od", "hed"}
        What the network is fed (:data:`CHANNELS`), each channel multiplied by ``CHANNEL_SCALE[channels]`` before
        ``mean`` and ``std`` apply; the run's ``--channels``.
    red_cell_diameter : float or None
        Red-cell diameter (px of the input images) that segmentation scales its sizes by; None (the default, and
        runs recorded before the option) measures it on each image
        (:func:`blastscope.segmentation.scale.crop_scale`). The run's ``--red-cell-diameter``.
    colour_norm : {"none", "subject"}
        ``subject``: each cell's colours normalised by the statistics of all cells of its person
        (:data:`COLOUR_NORMS`), so every door needs the cells grouped by person; the run's ``--colour-norm``.

    No model is fed another's normalisation: each registered model brings its own (``ModelSpec.preprocessing``).

    Raises
    ------
    BlastscopeError
        For an unknown ``segment`` mode, ``channels`` or ``colour_norm``, a ``crop_fraction`` outside (0, 1], or a
        ``red_cell_diameter`` of 2 px or less.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
    segment: str = "auto"
    crop_fraction: float = 1.0
    channels: str = "rgb"
    red_cell_diameter: float | None = None
    colour_norm: str = "none"

    def __post_init__(self) -> None:
        check_segment_mode(self.segment)
        check_colour_norm(self.colour_norm)
        object.__setattr__(self, "crop_fraction", check_crop_fraction(self.crop_fraction))
        check_channels(self.channels)
        object.__setattr__(self, "red_cell_diameter", check_red_cell_diameter(self.red_cell_diameter))

    @property
    def channel_scale(self) -> tuple[float, float, float]:
        """Per-channel factor from the raw channel values to the [0, 1] scale ``mean`` and ``std`` apply to."""
        return CHANNEL_SCALE[self.channels]

    def to_dict(self) -> dict[str, Any]:
        """Plain types (lists for mean/std) for YAML, JSON and ONNX metadata."""
        data = asdict(self)
        return {**data, "mean": list(self.mean), "std": list(self.std), "channel_scale": list(self.channel_scale)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Read a record; keys it lacks read as the behaviour from before they existed.

        Raises
        ------
        BlastscopeError
            When its ``channel_scale`` differs from this version's for its channels: the network would be fed values
            on another scale than it was trained on.
        """
        pre = cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
            # A record without the key was written before segmentation existed: that run saw its images as decoded.
            segment=str(data.get("segment", "never")),
            # Records from before --crop-fraction and --channels: the whole image, fed as RGB.
            crop_fraction=float(data.get("crop_fraction", 1.0)),
            channels=str(data.get("channels", "rgb")),
            # Records from before --red-cell-diameter: measured on each image.
            red_cell_diameter=data.get("red_cell_diameter"),
            # Records from before --colour-norm: colours as decoded.
            colour_norm=str(data.get("colour_norm", "none")),
        )
        recorded = data.get("channel_scale")
        scale = pre.channel_scale
        if recorded is not None and (
            len(recorded) != 3 or any(abs(float(r) - c) > 1e-6 * c for r, c in zip(recorded, scale, strict=True))
        ):
            raise BlastscopeError(
                f"the run fed its network {pre.channels} channels scaled by {recorded}, this version scales them by "
                f"{list(scale)}: use the blastscope version that trained it, or retrain"
            )
        return pre
