"""Grad-CAM: where in the cell the network looked when it chose a class.

Always computed with the PyTorch model (ONNX Runtime has no gradients), on the image exactly as the model sees it:
resized to the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from blastscope.models.base import CellClassifier


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM heat map for one class, and the same map blended over the resized input."""

    label: str
    heatmap: np.ndarray
    overlay: Image.Image


def grad_cam(model: CellClassifier, batch: torch.Tensor, target: int) -> np.ndarray:
    """The (H, W) heat map in [0, 1] of class ``target`` for a one-image normalised NCHW batch."""
    with GradCAM(model=model, target_layers=[model.gradcam_layer()]) as cam:
        # Gradients must reach the target layer even when the backbone's weights are frozen.
        cam.compute_input_gradient = True
        with torch.enable_grad():
            heatmap = cam(input_tensor=batch, targets=[ClassifierOutputTarget(target)])
    return heatmap[0].astype(np.float32)


def overlay_heatmap(resized: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """The heat map (jet colours) blended half-and-half over the uint8 HxWx3 image the model saw."""
    blended = show_cam_on_image(resized.astype(np.float32) / 255.0, heatmap, use_rgb=True, image_weight=0.5)
    return Image.fromarray(blended)
