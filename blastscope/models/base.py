"""The interface every blastscope network implements, whatever its backbone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CellClassifier(nn.Module):
    """A backbone followed by a head: the split two-phase transfer learning works on.

    The network only describes itself (its backbone, its head, its stages from input to output); what is frozen in
    which phase of training is decided by :class:`blastscope.training.module.CellClassifierModule`.

    ``forward_features`` returns exactly what the head consumes, so phase 1 can cache it once and train the head on
    the cached tensors.

    Attributes
    ----------
    backbone : nn.Module
        Every layer before the head; pretrained when the model has ImageNet weights.
    head : nn.Module
        The layers trained from scratch on the cell classes; maps features to ``(batch, num_classes)`` logits.
    """

    backbone: nn.Module
    head: nn.Module
    input_channels: tuple[str, ...] | None = None
    """The ``--channels`` (:data:`~blastscope.data.preprocessing.CHANNELS`) the network can read, or None for any."""
    unmapped_evidence: str = ""
    """What else, besides the feature map Grad-CAM weighs, the output rests on, in words for an empty heat map's note;
    empty when the map is the only route from the image to the call."""
    float_modules: tuple[str, ...] = ()
    """Paths of submodules that an int8 or bf16 export keeps in float32, with everything computed from their outputs:
    those whose values' range or precision 8-bit integers or bf16 weights would lose (cell areas of 10^5 px, colour
    matrices)."""

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head consumes.

        Parameters
        ----------
        images : torch.Tensor
            ``(batch, 3, height, width)``, resized and normalised as the model's
            :class:`~blastscope.data.preprocessing.Preprocessing` says.

        Returns
        -------
        torch.Tensor
            ``(batch, ...)``: a pooled vector ``(batch, channels)`` or a feature map ``(batch, channels, h, w)``,
            depending on the head.
        """
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` from the output of :meth:`forward_features`."""
        return self.head(features)

    def forward_members(self, features: torch.Tensor) -> list[torch.Tensor]:
        """The logits ``(batch, num_classes)`` that training fits, each on its own loss, from :meth:`forward_features`'s
        output: the head's own, or those of each member a head averages (an ensemble inside one network)."""
        return [self.forward_head(features)]

    def combine_members(self, member_logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The logits ``(batch, num_classes)`` :meth:`forward_head` gives, from :meth:`forward_members`' output: here
        the one member's own."""
        (logits,) = member_logits
        return logits

    def member_temperatures(self) -> tuple[float, ...] | None:
        """Each member's temperature (:meth:`set_member_temperatures`); None for a network with one member."""
        return None

    def set_member_temperatures(self, temperatures: Sequence[float]) -> None:
        """Divide each member's logits by its temperature before :meth:`combine_members` (fitted on the validation
        cells by training, kept in the weights).

        Raises
        ------
        TypeError
            For a network with one member: its calibration is the run's operating point's temperature.
        """
        raise TypeError(f"{type(self).__name__} has one member: its temperature belongs to the operating point")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for images ``(batch, 3, height, width)``."""
        return self.forward_head(self.forward_features(images))

    def linear_head(self) -> tuple[list[nn.Module], nn.Linear] | None:
        """The head as layers that learn nothing by gradient followed by one linear layer with a bias, or None.

        Such a head (dropout, flattening, batch norms without scale or shift, then ``nn.Linear``) gives logits linear in
        its standardised features, so phase 1 can fit it in closed form (:mod:`blastscope.training.head_fit`). Heads
        with hidden layers or attention return None.
        """
        if not isinstance(self.head, nn.Sequential) or len(self.head) == 0:
            return None
        *fixed, linear = self.head
        plain = all(
            isinstance(layer, nn.Dropout | nn.Flatten | nn.Identity)
            or (isinstance(layer, nn.BatchNorm1d) and not layer.affine and layer.track_running_stats)
            for layer in fixed
        )
        return (fixed, linear) if plain and isinstance(linear, nn.Linear) and linear.bias is not None else None

    def stages(self) -> list[nn.Module]:
        """The backbone's stages from input to output; fine-tuning unfreezes the last N of them.

        Returns
        -------
        list of nn.Module
            Disjoint modules that together hold every backbone parameter, ordered from input to output.
        """
        raise NotImplementedError

    def gradcam_layer(self) -> nn.Module:
        """The layer whose activations Grad-CAM weighs by preference: the backbone's last spatial feature map
        ``(batch, channels, h, w)``."""
        raise NotImplementedError

    def gradcam_layers(self) -> list[tuple[str, nn.Module]]:
        """Grad-CAM's candidate layers with their names, deepest first, the first being :meth:`gradcam_layer`.

        A small input can shrink the deepest map to 1x1, where Grad-CAM cannot localise anything; the explainer
        (``blastscope.inference.gradcam``) then takes the deepest candidate whose map is large enough at that input
        size. Networks list a few shallower maps (e.g. stride 16 and 8) after their last one; the default offers only
        :meth:`gradcam_layer`.
        """
        return [(type(self).__name__ + ".gradcam_layer", self.gradcam_layer())]
