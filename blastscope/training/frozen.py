"""Frozen backbone stages run as folded inference copies: bf16 on CPUs with AMX / AVX512-BF16, else fp32.

A frozen stage of a pretrained backbone (every stage in phase 1, the early ones in phase 2) has fixed weights,
batch norm in inference mode and inputs that need no gradient: whatever the phase, it only does inference. So it can
run as an inference copy: each batch norm folded into the convolution before it (exact in real arithmetic), then cast
to bf16 where the CPU has bf16 matrix units. On this project's 2-core AMX CPU that ran EfficientNet-Lite0's frozen
stages 3-4x faster than fp32 (2x faster than bf16 autocast), while bf16 autocast over the whole network slowed its
training (the backward of depthwise convolutions). Without bf16 units the copy stays fp32: folding alone runs Lite0
at 448 px about 1.3x faster than channels-last fp32 (benchmarks/RESULTS.md, "Inference speed"). The stages that
learn stay in the run's precision; the frozen ones' outputs go back to their input's dtype.

A copy is rebuilt whenever the original's weights change (a checkpoint restore, a weight load), so it never serves
stale weights, and ``release`` hands every module its own forward back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from blastscope.models.folding import fold_batch_norms

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}  # by name: a module's hyper-parameters are plain types

Versions = tuple[tuple[int, int], ...]


class FrozenStages:
    """Swaps the forward of frozen modules for a no-grad call of a folded copy in ``dtype``, built on first use."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, channels_last: bool = False) -> None:
        self.dtype = dtype
        self.channels_last = channels_last
        self._copies: dict[nn.Module, tuple[nn.Module, Versions] | None] = {}

    @property
    def modules(self) -> list[nn.Module]:
        return list(self._copies)

    def follow(self, frozen: Iterable[nn.Module]) -> None:
        """Run exactly ``frozen`` through copies: attach the new ones, release those no longer frozen."""
        wanted = list(dict.fromkeys(frozen))
        for module in self.modules:
            if module not in wanted:
                self._release(module)
        for module in wanted:
            if module not in self._copies:
                self._copies[module] = None
                module.forward = lambda *inputs, module=module: self._forward(module, *inputs)

    def release(self) -> None:
        for module in self.modules:
            self._release(module)

    def _release(self, module: nn.Module) -> None:
        del self._copies[module]
        module.__dict__.pop("forward", None)

    def _forward(self, module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        if module.training or (torch.is_grad_enabled() and any(x.requires_grad for x in inputs)):
            return type(module).forward(module, *inputs)  # it learns, or gradients must pass through it
        built = self._copies[module]
        if built is None or built[1] != _versions(module):
            built = (self._build(module, inputs), _versions(module))
            self._copies[module] = built
        with torch.no_grad():
            output = built[0](*(x.to(self.dtype) for x in inputs))
        return output.to(inputs[0].dtype)

    def _build(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        example = tuple(x[:1].detach().float() for x in inputs)
        fast = copy.deepcopy(module).float().eval().requires_grad_(False)
        fast.__dict__.pop("forward", None)  # the copy runs its class's forward, not this wrapper
        fast = fold_batch_norms(fast, example)
        fast = fast.to(self.dtype)
        return fast.to(memory_format=torch.channels_last) if self.channels_last else fast


def _versions(module: nn.Module) -> Versions:
    """Identity and in-place version counter of every tensor: loading weights changes one or the other."""
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))
