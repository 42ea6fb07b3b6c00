"""predict_proba: same answer for images and files, any batch size, with or without TTA, fp32 or bf16."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.inference.predict import predict_proba, resolve_precision
from blastscope.inference.tta import dihedral_views
from blastscope.models.base import CellClassifier

PRE = Preprocessing(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class TinyNet(CellClassifier):
    """Orientation-sensitive on purpose (a linear layer over raw pixels), with dropout to catch train mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4 * 16 * 16, 2))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for _ in range(5)]


def test_probabilities_for_images_and_files_agree(images: list[Image.Image], tmp_path: Path) -> None:
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"cell{i}.png")
        image.save(paths[-1])
    model = TinyNet().train()  # predict_proba must switch to eval mode itself
    from_images = predict_proba(model, PRE, images, batch_size=2, precision="fp32")
    from_files = predict_proba(model, PRE, paths, batch_size=32, precision="fp32")
    assert from_images.shape == (5, 2)
    np.testing.assert_allclose(from_images.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(from_images, from_files, atol=1e-6)
    assert not model.training


def test_cells_through_the_decoded_cache_match_their_files(images: list[Image.Image], tmp_path: Path) -> None:
    from blastscope.data.cache import DecodedCache
    from blastscope.data.table import Cell

    cells = []
    for i, image in enumerate(images):
        path = tmp_path / f"cell{i}.png"
        image.save(path)
        cells.append(Cell(path, "all", "7", hashlib.sha256(path.read_bytes()).hexdigest()))
    model = TinyNet()
    cache = DecodedCache(tmp_path / "cache")
    from_cells = predict_proba(model, PRE, cells, cache=cache, precision="fp32")
    again = predict_proba(model, PRE, cells, cache=cache, precision="fp32")  # now read back from the cache
    from_files = predict_proba(model, PRE, [cell.path for cell in cells], precision="fp32")
    np.testing.assert_allclose(from_cells, from_files, atol=1e-6)
    np.testing.assert_array_equal(from_cells, again)


def test_logits_are_returned_for_temperature_scaling(images: list[Image.Image]) -> None:
    probabilities, logits = predict_proba(TinyNet(), PRE, images, precision="fp32", return_logits=True)
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(-1).numpy(), probabilities, atol=1e-6)


def test_tta_is_the_mean_probability_over_the_eight_views(images: list[Image.Image]) -> None:
    from blastscope.data.transforms import eval_transform
    from blastscope.inference.predict import resize_image

    model = TinyNet().eval()
    batch = torch.stack([eval_transform(PRE)(resize_image(image, PRE)) for image in images])
    with torch.no_grad():
        expected = torch.stack([model(view).softmax(-1) for view in dihedral_views(batch)]).mean(0).numpy()
    with_tta = predict_proba(model, PRE, images, tta=True, precision="fp32")
    plain = predict_proba(model, PRE, images, tta=False, precision="fp32")
    np.testing.assert_allclose(with_tta, expected, atol=1e-5)
    assert not np.allclose(with_tta, plain, atol=1e-4)  # the model is orientation-sensitive, so TTA changes it


def test_bf16_autocast_stays_close_to_fp32(images: list[Image.Image]) -> None:
    model = TinyNet()
    fp32 = predict_proba(model, PRE, images, precision="fp32")
    bf16 = predict_proba(model, PRE, images, precision="bf16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)  # type: ignore[arg-type]


def test_nothing_to_predict_is_refused() -> None:
    with pytest.raises(ValueError, match="no images"):
        predict_proba(TinyNet(), PRE, [])
