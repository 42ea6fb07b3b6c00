"""An ensemble of trained runs as one network: the mean of its members' temperature-scaled probabilities.

Averaging the calibrated class probabilities of several independently trained networks is the "deep ensemble" of
Lakshminarayanan et al. (2017, "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles"); each
member's probabilities are first temperature-scaled (Guo et al. 2017) with the temperature its own run fitted on its
validation split, so that an over-confident member does not outvote the others. :class:`EnsembleNetwork` returns
``log`` of that mean as its logits, so the softmax of its output *is* the mean probability and every consumer of
logits (temperature scaling, thresholds, test-time augmentation, ONNX export, Grad-CAM) takes it unchanged.

An ensemble run's ``config.yaml`` has ``model: ensemble`` and a ``members`` list (see
``blastscope.workflows.ensemble.make_ensemble``, which writes it); :func:`build_ensemble` rebuilds the network from it
without downloading anything, and the run's checkpoint holds every member's weights.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.models import CellClassifier, create_model, model_display_name

ENSEMBLE = "ensemble"
"""``config.yaml``'s ``model`` of an ensemble run."""

SHARED_PREPROCESSING = (
    "interpolation",
    "segment",
    "crop_fraction",
    "red_cell_diameter",
    "channels",
    "colour_norm",
)
"""Preprocessing fields every member must share: one decoded, resized (and, with ``colour_norm``, colour-normalised)
image feeds them all. ``mean``/``std`` may differ (the ensemble turns its input into each member's normalisation), and
so may ``input_size`` (the ensemble is fed its largest member's size and resizes it for the others,
:class:`EnsembleNetwork`); ``channel_scale`` follows ``channels``."""


def input_affine(ensemble: Preprocessing, member: Preprocessing) -> tuple[list[float], list[float]]:
    """Per-channel ``scale``, ``shift`` turning the ensemble's normalised input into the member's.

    With the same [0, 1] channel values ``v``, the ensemble is fed ``x = (v - m_e) / s_e`` and the member expects
    ``(v - m_i) / s_i = x * (s_e / s_i) + (m_e - m_i) / s_i``.

    Returns
    -------
    scale, shift : list of 3 floats
        ``(1, 1, 1)`` and ``(0, 0, 0)`` when both normalise alike.
    """
    scale = [se / si for se, si in zip(ensemble.std, member.std, strict=True)]
    shift = [(me - mi) / si for me, mi, si in zip(ensemble.mean, member.mean, member.std, strict=True)]
    return scale, shift


class EnsembleNetwork(CellClassifier):
    """Member networks behind one input: ``log(mean_i softmax(member_i(resize_i(scale_i * x + shift_i)) / T_i))``.

    ``resize_i`` is the identity for a member trained at the ensemble's input size; a member trained smaller gets the
    input resized to its own size inside the network (antialiased, with the shared interpolation, as Pillow resizes),
    so members trained at different sizes (efficientnet_lite0's 448 px beside resnet50's 224 px) share one input. Such
    a member sees the image resized twice (original to the ensemble's size, then to its own) rather than once as in
    its own run, so its probabilities can differ slightly from its run's.

    Parameters
    ----------
    members : sequence of CellClassifier
        Trained networks, each mapping its own normalised ``(N, 3, S, S)`` input to ``(N, C)`` logits over the same
        classes in the same order.
    temperatures : sequence of float
        Each member's temperature (its run's operating point; 1 when never fitted), > 0.
    preprocessing : Preprocessing
        The ensemble's input size and normalisation (its largest member's); ``S = preprocessing.input_size``.
    member_preprocessing : sequence of Preprocessing
        Each member's own normalisation, for its input affine (:func:`input_affine`), and input size, at most ``S``.

    Attributes
    ----------
    members : nn.ModuleList
    temperature : Tensor, shape (M,)
    input_scale, input_shift : Tensor, shape (M, 3)
        Buffers: saved in the checkpoint with the members' weights.
    member_sizes : list of int
        Each member's input side, px (from ``member_preprocessing``, rebuilt from ``config.yaml``).

    Raises
    ------
    BlastscopeError
        For fewer than two members, lengths that differ, a temperature that is not positive, or a member trained at a
        larger input size than the ensemble's.
    """

    def __init__(
        self,
        members: Sequence[CellClassifier],
        temperatures: Sequence[float],
        preprocessing: Preprocessing,
        member_preprocessing: Sequence[Preprocessing],
    ) -> None:
        super().__init__()
        if len(members) < 2 or not len(members) == len(temperatures) == len(member_preprocessing):
            raise BlastscopeError(
                f"an ensemble needs at least 2 members, each with a temperature and preprocessing; got {len(members)} "
                f"members, {len(temperatures)} temperatures, {len(member_preprocessing)} preprocessings"
            )
        if not all(t > 0 for t in temperatures):
            raise BlastscopeError(f"member temperatures {list(temperatures)} must all be positive")
        self.member_sizes = [pre.input_size for pre in member_preprocessing]
        if max(self.member_sizes) > preprocessing.input_size:
            raise BlastscopeError(
                f"member input sizes {self.member_sizes} exceed the ensemble's {preprocessing.input_size} px: the "
                "ensemble is fed its largest member's size"
            )
        self.input_size = preprocessing.input_size
        self.interpolation = preprocessing.interpolation
        if min(self.member_sizes) < self.input_size and self.interpolation not in ("bilinear", "bicubic"):
            raise BlastscopeError(
                f"members trained at {self.member_sizes} px resize with {self.interpolation!r}, which the ensemble "
                "cannot antialias; ensemble runs trained at one --image-size"
            )
        self.members = nn.ModuleList(members)
        affines = [input_affine(preprocessing, pre) for pre in member_preprocessing]
        self.register_buffer("temperature", torch.tensor([float(t) for t in temperatures]))
        self.register_buffer("input_scale", torch.tensor([scale for scale, _ in affines]))
        self.register_buffer("input_shift", torch.tensor([shift for _, shift in affines]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Log of the mean calibrated probability, ``(N, C)``, for the ensemble's normalised ``(N, 3, S, S)`` input."""
        log_probs = [
            torch.log_softmax(
                member(self._member_input(images, i)) / self.temperature[i],
                dim=1,
            )
            for i, member in enumerate(self.members)
        ]
        # log-sum-exp over members, written out: ONNX Runtime's int8 quantiser cannot infer ReduceLogSumExp's shape
        peak = functools.reduce(torch.maximum, log_probs)
        total = functools.reduce(torch.add, [torch.exp(log_p - peak) for log_p in log_probs])
        return peak + torch.log(total) - math.log(len(log_probs))

    def _member_input(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """Member ``index``'s normalisation of ``images``, resized to its input size when that is smaller."""
        affine = images * self.input_scale[index].view(1, 3, 1, 1) + self.input_shift[index].view(1, 3, 1, 1)
        size = self.member_sizes[index]
        if size == self.input_size:
            return affine
        # The affine and the resize commute (its weights sum to 1); antialiasing low-passes like Pillow's resize.
        return F.interpolate(affine, size=(size, size), mode=self.interpolation, align_corners=False, antialias=True)

    def stages(self) -> list[nn.Module]:
        raise BlastscopeError(
            "an ensemble is not trained: train or fine-tune its member runs, then make a new one with "
            "`blastscope ensemble`"
        )

    def gradcam_layer(self) -> nn.Module:
        """The first member's: an ensemble's Grad-CAM map explains the first member's part of its output."""
        return self.members[0].gradcam_layer()

    def gradcam_layers(self) -> list[tuple[str, nn.Module]]:
        """The first member's candidates: the map shows where member 1 looked, weighed by the gradient of the
        ensemble's score (the other members add to the score, not to the map)."""
        return self.members[0].gradcam_layers()


def member_names(members: Sequence[dict[str, Any]], *, weights: bool) -> str:
    """``efficientnet_lite0 + resnet50``, or ``3 x efficientnet_lite0 (pretrained)``, from ``config.yaml``'s members.

    With ``weights``, each name says whether it started from pretrained weights, as every other result does.
    """
    names = [
        model_display_name(str(m["model"]), bool(m.get("weights_pretrained"))) if weights else str(m["model"])
        for m in members
    ]
    counts = Counter(names)
    return " + ".join(name if counts[name] == 1 else f"{counts[name]} x {name}" for name in dict.fromkeys(names))


def ensemble_name(config: dict[str, Any], *, weights: bool = False) -> str:
    """How results name an ensemble run, e.g. ``ensemble of efficientnet_lite0 + resnet50``."""
    return f"{ENSEMBLE} of {member_names(config['members'], weights=weights)}"


def build_ensemble(config: dict[str, Any], num_classes: int, preprocessing: Preprocessing) -> EnsembleNetwork:
    """The ensemble network of an ensemble run's ``config.yaml``: architecture only (no download), weights to load.

    Raises
    ------
    BlastscopeError
        When ``members`` is missing or malformed, or a member's model is not registered.
    """
    members = config.get("members")
    try:
        networks, temperatures, pres = [], [], []
        for member in members:  # type: ignore[union-attr]
            pre = Preprocessing.from_dict(member["preprocessing"])
            bundle = create_model(str(member["model"]), num_classes, pretrained="none", image_size=pre.input_size)
            networks.append(bundle.model)
            temperatures.append(float(member["temperature"]))
            pres.append(pre)
    except (KeyError, TypeError, ValueError) as error:
        raise BlastscopeError(
            f"the ensemble's config.yaml lists its members wrongly ({type(error).__name__}: {error}); "
            "make it again with `blastscope ensemble`"
        ) from None
    return EnsembleNetwork(networks, temperatures, preprocessing, pres)
