"""Phase-1 feature caching: run the frozen backbone once, then train the head on the stored outputs.

While the backbone is frozen (eval mode, no gradients) its output for an un-augmented image never changes, so
recomputing it every epoch is pure waste. The price is that phase 1 sees no augmentation. That is the default all the
same: phase 1 fits a linear head, which is how linear probes are trained anyway, and the augmentation that guards
against overfitting matters in phase 2, where convolutional stages learn; ``--no-cached-features`` restores it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from blastscope.models.base import CellClassifier


@torch.inference_mode()
def extract_features(
    model: CellClassifier,
    dataset: Dataset,
    *,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager] | None = None,
    channels_last: bool = False,
    num_workers: int = 0,
) -> TensorDataset:
    """``(forward_features(image), label)`` for every sample, computed in eval mode and stored as float32 on the CPU.

    ``num_workers`` read and transform the next batches while the backbone runs, as in every other pass.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features, labels = [], []
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast() if autocast else torch.autocast(device.type, enabled=False):
                output = model.forward_features(images)
            features.append(output.float().cpu())
            labels.append(torch.as_tensor(targets))
    finally:
        model.train(was_training)
    return TensorDataset(torch.cat(features), torch.cat(labels))
