"""The one prediction path: same answer for images, files and cached cells, any batch size, with or without TTA,
fp32 or bf16; probabilities are the (temperature-scaled) softmax of the logits, averaged over views."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import MIN_CELL_PIXELS
from blastscope.data.transforms import eval_transform
from blastscope.errors import BlastscopeError, ImageError
from blastscope.inference.predict import (
    FEW_CELLS,
    batches,
    fit_colour,
    predict_features,
    predict_items,
    predict_logits,
    probabilities,
    readable,
    resized_pixels,
)
from blastscope.inference.runners import TorchRunner
from blastscope.inference.tta import dihedral_views
from blastscope.models.base import CellClassifier

PRE = Preprocessing(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), segment="never")  # noise images
TRANSFORM = eval_transform(PRE)


class TinyNet(CellClassifier):
    """Orientation-sensitive on purpose (a linear layer over raw pixels), with dropout to catch train mode."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(4 * 16 * 16, 2))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def predict_proba(model: nn.Module, items: list, **options: object) -> np.ndarray:
    precision = options.pop("precision", "fp32")
    return probabilities(predict_logits(TorchRunner(model, precision), items, PRE, TRANSFORM, **options))


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for _ in range(5)]


def test_probabilities_for_images_and_files_agree(images: list[Image.Image], tmp_path: Path) -> None:
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"cell{i}.png")
        image.save(paths[-1])
    model = TinyNet().train()  # the runner must switch to eval mode itself
    from_images = predict_proba(model, images, batch_size=2)
    assert not model.training
    from_files = predict_proba(model, paths, batch_size=32)
    assert from_images.shape == (5, 2)
    np.testing.assert_allclose(from_images.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(from_images, from_files, atol=1e-6)


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
    from_cells = predict_proba(model, cells, cache=cache)
    again = predict_proba(model, cells, cache=cache)  # now read back from the cache
    from_files = predict_proba(model, [cell.path for cell in cells])
    np.testing.assert_allclose(from_cells, from_files, atol=1e-6)
    np.testing.assert_array_equal(from_cells, again)


def test_batches_are_normalised_model_inputs_in_item_order(images: list[Image.Image]) -> None:
    chunks = list(batches(images, PRE, TRANSFORM, batch_size=2))
    assert [tuple(chunk.shape) for chunk in chunks] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    assert all(chunk.dtype == torch.float32 for chunk in chunks)
    torch.testing.assert_close(chunks[2][0], TRANSFORM(resized_pixels(images[4], PRE).pixels))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(images, PRE, TRANSFORM, batch_size=0))


def test_probabilities_are_the_temperature_scaled_softmax_of_the_logits(images: list[Image.Image]) -> None:
    logits = predict_logits(TorchRunner(TinyNet()), images, PRE, TRANSFORM)
    assert logits.shape == (5, 1, 2) and logits.dtype == np.float32
    assert probabilities(logits).dtype == np.float64  # no probability rounds to exactly 1 at a small temperature
    np.testing.assert_allclose(probabilities(logits), torch.from_numpy(logits[:, 0]).softmax(-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(probabilities(logits), probabilities(logits[:, 0]), atol=1e-7)  # (N, C) alike
    scaled = probabilities(logits, temperature=2.0)
    np.testing.assert_allclose(scaled, torch.from_numpy(logits[:, 0] / 2).softmax(-1).numpy(), atol=1e-6)
    assert np.abs(scaled - 0.5).max() < np.abs(probabilities(logits) - 0.5).max()  # a higher temperature softens


def test_tta_is_the_mean_probability_over_the_eight_views(images: list[Image.Image]) -> None:
    model = TinyNet().eval()
    batch = torch.stack([TRANSFORM(resized_pixels(image, PRE).pixels) for image in images])
    with torch.no_grad():
        expected = torch.stack([model(view).softmax(-1) for view in dihedral_views(batch)]).mean(0).numpy()
    assert predict_logits(TorchRunner(model), images, PRE, TRANSFORM, tta=True).shape == (5, 8, 2)
    with_tta = predict_proba(model, images, tta=True)
    plain = predict_proba(model, images, tta=False)
    np.testing.assert_allclose(with_tta, expected, atol=1e-5)
    assert not np.allclose(with_tta, plain, atol=1e-4)  # the model is orientation-sensitive, so TTA changes it


def test_bf16_autocast_stays_close_to_fp32(images: list[Image.Image]) -> None:
    model = TinyNet()
    assert predict_logits(TorchRunner(model, "bf16"), images, PRE, TRANSFORM).dtype == np.float32
    fp32 = predict_proba(model, images, precision="fp32")
    bf16 = predict_proba(model, images, precision="bf16")
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_nothing_to_predict_is_refused() -> None:
    with pytest.raises(ValueError, match="no images"):
        predict_logits(TorchRunner(TinyNet()), [], PRE, TRANSFORM)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_refused_in_one_line(images: list[Image.Image], batch_size: int) -> None:
    with pytest.raises(ValueError, match=f"^batch_size must be at least 1, not {batch_size}$"):
        predict_logits(TorchRunner(TinyNet()), images, PRE, TRANSFORM, batch_size=batch_size)


def test_segmented_flags_come_with_the_logits_and_unreadable_items_are_set_aside(
    natural_crops: list[Path], tmp_path: Path
) -> None:
    auto = replace(PRE, segment="auto")
    on_black = Image.new("RGB", (40, 40))
    on_black.paste((200, 120, 220), (12, 12, 28, 28))
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (215, 205, 210)).save(blank)
    items = [natural_crops[0], on_black, natural_crops[1]]
    predicted = predict_items(TorchRunner(TinyNet()), items, auto, TRANSFORM, batch_size=2)
    assert predicted.logits.shape == (3, 1, 2) and predicted.segmented.tolist() == [True, False, True]
    np.testing.assert_allclose(
        predicted.logits, predict_logits(TorchRunner(TinyNet()), items, auto, TRANSFORM), atol=1e-6
    )
    found = readable([blank, *items], auto)
    assert found.items == items and found.segmented == [True, False, True]
    assert found.skipped[0][0] == blank and "no white cell found" in found.skipped[0][1]
    with pytest.raises(ImageError, match=r"blank\.png: no white cell found"):
        predict_logits(TorchRunner(TinyNet()), [blank], auto, TRANSFORM)


def test_prepared_inputs_pass_through_unchanged_and_must_fit(natural_crops: list[Path]) -> None:
    auto = replace(PRE, segment="auto")
    prepared = resized_pixels(natural_crops[0], auto)
    assert resized_pixels(prepared, auto) is prepared and prepared.segmented
    with pytest.raises(ValueError, match="16x16"):
        resized_pixels(resized_pixels(natural_crops[0], replace(auto, input_size=24)), auto)


class MapNet(TinyNet):
    """Hands its head a feature map (N, 4, 16, 16), as the attention model does."""

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone[:2](images)


def test_features_are_what_the_head_consumes_pooled_when_a_map(images: list[Image.Image]) -> None:
    model = TinyNet()
    features = predict_features(model, images, PRE, TRANSFORM, batch_size=2)
    assert features.shape == (5, 4 * 16 * 16) and features.dtype == np.float32
    with torch.no_grad():
        from_features = model.forward_head(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(
        from_features, predict_logits(TorchRunner(model), images, PRE, TRANSFORM)[:, 0], atol=1e-5
    )
    mapped = MapNet()
    batch = torch.stack([TRANSFORM(resized_pixels(image, PRE).pixels) for image in images])
    with torch.no_grad():
        expected = mapped.forward_features(batch).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(predict_features(mapped, images, PRE, TRANSFORM), expected, atol=1e-6)


def test_features_need_a_pytorch_network_with_features_of_its_own(images: list[Image.Image]) -> None:
    class Averaged(CellClassifier):  # like an ensemble: logits, but no single feature vector
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.net(images)

    with pytest.raises(BlastscopeError, match="ONNX export") as caught:
        predict_features(TorchRunner(TinyNet()), images, PRE, TRANSFORM)  # type: ignore[arg-type]
    assert "TorchRunner" not in str(caught.value) and "CellClassifier" not in str(caught.value)
    with pytest.raises(BlastscopeError, match=r"no penultimate features of its own \(an ensemble run") as caught:
        predict_features(Averaged(), images, PRE, TRANSFORM)
    assert "Averaged" not in str(caught.value)  # the user hears of runs, not of the network's class


def test_fit_colour_announces_a_person_with_too_few_cell_pixels_and_one_with_too_few_cells(caplog) -> None:
    rng = np.random.default_rng(0)
    cell = np.zeros((16, 16, 3), dtype=np.uint8)
    cell[2:14, 2:14] = rng.integers(60, 200, size=(12, 12, 3), dtype=np.uint8)
    speck = np.zeros((16, 16, 3), dtype=np.uint8)
    speck[0, 0] = 200  # one cell pixel: no statistics
    pairs = [("7", cell)] * FEW_CELLS + [("H2", speck)] * FEW_CELLS
    with caplog.at_level("WARNING", logger="blastscope.inference.predict"):
        colour = fit_colour(iter(pairs))
    assert "H2" not in colour.statistics and np.array_equal(colour(speck, "H2"), speck)
    assert [record.getMessage() for record in caplog.records] == [
        f"person H2: not colour-normalised: too few cell pixels (under {MIN_CELL_PIXELS} in all), left as decoded"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="blastscope.inference.predict"):
        fit_colour([("a.jpg", speck)], whose="photograph")
    assert [record.getMessage() for record in caplog.records] == [
        f"colours are normalised per person, and 1 of 1 people have under {FEW_CELLS} cells (e.g. photograph a.jpg: "
        "1), too few for steady statistics: their normalised colours are less reliable (give all of a person's cells "
        "together)",
        f"photograph a.jpg: not colour-normalised: too few cell pixels (under {MIN_CELL_PIXELS} in all), left as "
        "decoded",
    ]
