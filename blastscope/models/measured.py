"""EfficientNet-Lite0 beside the cell's measured size and colour: two members whose probabilities are averaged.

A frozen ImageNet network describes a cell's texture well but misreads whole people whose stain or exposure differs
(on cnmc-dev's subject-grouped folds, five normal people had most cells called ALL by every network measured). A
haematologist also reads the cell's size and colour, and a model of 67 such measurements
(:class:`~blastscope.models.measurements.CellMeasurements`) errs on other cells: averaging a perceptron on them with
the 448-px network raised pooled cross-validated weighted F1 from 0.839 to 0.853 and ROC-AUC from 0.869 to 0.900
(``benchmarks/RESULTS.md``, session 23, the perceptron fitted apart with scikit-learn). This module makes that
average one network, so ``predict``, ``serve``, ``export`` and Grad-CAM (whose gradient reaches the backbone through
the network member only) take it as they take any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.models.backbones import timm_preprocessing
from blastscope.models.base import CellClassifier
from blastscope.models.measurements import NAMES, CellMeasurements
from blastscope.models.timm_classifiers import EFFICIENTNET_GRADCAM_LAYERS, LITE0, TimmClassifier, register_timm_model

MEMBERS = 2
"""The head's members: the network's linear layer and the measurements' perceptron."""
PERCEPTRON_WIDTH = 64
"""Hidden units of the measurements' perceptron: 64 was the width chosen on validation on most of session 22's folds
(64 or 256 tried)."""
Z_LIMIT = 10.0
"""Standardised measurements are clipped to +-10 s.d. before the perceptron: of cnmc-dev's 6,371 cells 12 (0.19%)
have one beyond (at most 29.5 s.d., a relative IQR), while inputs that are no cell (a white square, a smear photograph
cut out whole) reached 10^6 s.d. and made the perceptron certain."""


class AveragedMembersHead(nn.Module):
    """``(N, d + 67)`` features -> ``(N, num_classes)`` log of the mean of two members' class probabilities.

    The ``network`` member is dropout and a linear layer on the first ``d`` (pooled CNN) features; the
    ``measurements`` member standardises the last 67 with a batch norm without scale or shift whose running
    statistics are the plain average over every training batch (``momentum=None``: a standard scaler, as in
    :class:`~blastscope.models.timm_classifiers.MultiScaleTimmClassifier`), clips them to :data:`Z_LIMIT`, then
    applies one hidden ReLU layer and a linear layer. Each member is trained on its own loss (:meth:`member_logits`),
    as the members of an ensemble are, not on the average's, and its logits are divided by its own temperature
    (``member_temperatures``, fitted on the validation cells after every epoch by training; 1 until then) before the
    average: the network member trained this way is under-confident (temperatures 0.47-0.69 on session 23's folds)
    and the perceptron's surer probabilities would otherwise decide most calls. The output, log-probabilities, is a
    valid logit vector: its softmax is the average.
    """

    def __init__(self, network_features: int, num_classes: int, width: int = PERCEPTRON_WIDTH, dropout: float = 0.2):
        super().__init__()
        self.network_features = network_features
        self.network = nn.Sequential(nn.Dropout(dropout), nn.Linear(network_features, num_classes))
        self.measurements = nn.Sequential(
            nn.BatchNorm1d(len(NAMES), momentum=None, affine=False),
            nn.Hardtanh(-Z_LIMIT, Z_LIMIT),
            nn.Linear(len(NAMES), width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )
        self.register_buffer("member_temperatures", torch.ones(MEMBERS))

    def member_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """``[network logits, measurements logits]``, each ``(N, num_classes)``, before their temperatures."""
        cnn, measured = features[:, : self.network_features], features[:, self.network_features :]
        return [self.network(cnn), self.measurements(measured)]

    def combine(self, member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """``log(mean_i softmax(logits_i / T_i))``, ``(N, num_classes)``, from :meth:`member_logits`' output."""
        members = torch.stack(
            [
                (logits / temperature).log_softmax(dim=1)
                for logits, temperature in zip(member_logits, self.member_temperatures, strict=True)
            ]
        )
        return torch.logsumexp(members, dim=0) - math.log(len(members))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(features))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # Runs trained before the temperatures existed averaged their members untempered: load them as they scored.
        state_dict.setdefault(f"{prefix}member_temperatures", torch.ones(MEMBERS))
        super()._load_from_state_dict(state_dict, prefix, *args)


class MeasuredTimmClassifier(TimmClassifier):
    """A timm backbone's pooled features and the input cell's 67 measurements, read by :class:`AveragedMembersHead`.

    ``forward_features`` returns ``(batch, backbone.num_features + 67)``, so phase 1 caches the measurements with the
    features: each cell is measured once per run. The measurements are taken of the input with its normalisation
    undone (``images * std + mean``: the resized RGB cell in [0, 1]), so their sizes are in pixels of the input.

    Parameters
    ----------
    backbone, num_classes, gradcam_layers, dropout
        As for :class:`TimmClassifier`.
    preprocessing : Preprocessing
        The normalisation the network's input arrives with.
    """

    input_channels = ("rgb",)  # colour is measured from the input's RGB values
    float_modules = ("measure",)  # and, in an export, everything computed from it
    unmapped_evidence = "half of the call is a perceptron on the cell's measured size and colour, which has no map"

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        gradcam_layers: Sequence[str],
        preprocessing: Preprocessing,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(backbone, num_classes, gradcam_layers, dropout)
        self.measure = CellMeasurements(preprocessing.mean, preprocessing.std)
        self.head = AveragedMembersHead(backbone.num_features, num_classes, dropout=dropout)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        pooled = super().forward_features(images)
        measured = self.measure(images)
        return torch.cat([pooled.float(), measured], dim=1)  # float32 whatever the autocast: areas reach 10^5 px

    def forward_members(self, features: torch.Tensor) -> list[torch.Tensor]:
        return self.head.member_logits(features)

    def combine_members(self, member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head.combine(member_logits)

    def member_temperatures(self) -> tuple[float, ...]:
        return tuple(self.head.member_temperatures.tolist())

    def set_member_temperatures(self, temperatures: Sequence[float]) -> None:
        self.head.member_temperatures.copy_(torch.as_tensor(temperatures, dtype=torch.float32))


@register_timm_model(
    "efficientnet_lite0_measured",
    description="EfficientNet-Lite0 averaged with a perceptron on the cell's measured size and colour (67 numbers)",
    **LITE0,
)
def efficientnet_lite0_measured(backbone: nn.Module, num_classes: int, image_size: int) -> CellClassifier:
    return MeasuredTimmClassifier(
        backbone, num_classes, EFFICIENTNET_GRADCAM_LAYERS, timm_preprocessing(LITE0["timm_name"])
    )
