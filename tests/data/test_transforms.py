"""Each augmentation changes what it should and keeps the rest; preprocessing is shared by training and evaluation."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from blastscope.data.augment import AugmentConfig
from blastscope.data.preprocessing import CHANNEL_SCALE, Preprocessing
from blastscope.data.transforms import denoise, eval_transform, train_transform

SIZE = 40
PRE = Preprocessing(SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bilinear")
OFF = AugmentConfig.off()


@pytest.fixture(scope="module")
def cell() -> np.ndarray:
    """An asymmetric stained cell on black: an off-centre dark nucleus in a lighter disc, with a little texture."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[np.hypot(yy, xx) < 12] = (150, 80, 170)
    image[np.hypot(yy - 3, xx + 4) < 7] = (70, 30, 110)
    image[np.hypot(yy, xx) < 12] += np.random.default_rng(0).integers(0, 8, size=(1, 3), dtype=np.uint8)
    return image


def pixels_of(tensor: torch.Tensor) -> np.ndarray:
    """Undo the model normalisation: back to uint8 HxWx3."""
    mean, std = torch.tensor(PRE.mean)[:, None, None], torch.tensor(PRE.std)[:, None, None]
    return (tensor * std + mean).mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def draws(aug: AugmentConfig, image: np.ndarray, count: int = 8) -> list[np.ndarray]:
    transform = train_transform(aug, PRE)
    outputs = []
    for seed in range(count):
        torch.manual_seed(seed)
        outputs.append(pixels_of(transform(image)))
    return outputs


def foreground(image: np.ndarray) -> np.ndarray:
    return image.max(axis=-1) >= 12


def only(**switches: bool) -> AugmentConfig:
    return replace(OFF, **switches)


def test_eval_transform_normalises_with_the_models_mean_and_std(cell: np.ndarray) -> None:
    tensor = eval_transform(PRE)(cell)
    assert tensor.shape == (3, SIZE, SIZE) and tensor.dtype == torch.float32
    expected = (cell[20, 20] / 255.0 - np.array(PRE.mean)) / np.array(PRE.std)
    np.testing.assert_allclose(tensor[:, 20, 20].numpy(), expected, atol=1e-6)


def test_with_every_switch_off_training_equals_evaluation(cell: np.ndarray) -> None:
    evaluated = eval_transform(PRE)(cell)
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.equal(train_transform(OFF, PRE)(cell), evaluated)


def test_defaults_augment_and_are_reproducible_from_torch_seed(cell: np.ndarray) -> None:
    first, second = draws(AugmentConfig(), cell, 2), draws(AugmentConfig(), cell, 2)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], first[1])
    assert all(not np.array_equal(output, cell) for output in first)


@pytest.mark.parametrize(("switch", "flip"), [("hflip", np.fliplr), ("vflip", np.flipud)])
def test_flips_give_the_image_or_its_exact_mirror_and_both_happen(cell: np.ndarray, switch: str, flip) -> None:
    outputs = draws(only(**{switch: True}), cell, 12)
    same = [np.array_equal(output, cell) for output in outputs]
    mirrored = [np.array_equal(output, flip(cell)) for output in outputs]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(same) and any(mirrored)


def test_rotation_turns_the_cell_but_keeps_it_whole(cell: np.ndarray) -> None:
    for output in draws(only(rotation=True), cell, 6):
        assert not np.array_equal(output, cell)
        stain_kept = output.sum(dtype=np.int64) / cell.sum(dtype=np.int64)
        assert 0.95 < stain_kept < 1.05, "no part of the cell left the frame"


def test_shift_moves_the_cell_without_resizing_it(cell: np.ndarray) -> None:
    def centre(image: np.ndarray) -> np.ndarray:
        return np.argwhere(foreground(image)).mean(axis=0)

    moves = [np.abs(centre(output) - centre(cell)).max() for output in draws(only(shift=True), cell)]
    assert max(moves) >= 1.0
    assert max(moves) <= 0.1 * SIZE + 0.5


def test_zoom_scales_the_cell_area_within_the_range(cell: np.ndarray) -> None:
    ratios = [foreground(output).sum() / foreground(cell).sum() for output in draws(only(zoom=True), cell)]
    assert max(abs(r - 1) for r in ratios) > 0.03
    assert all(0.9**2 - 0.05 < r < 1.1**2 + 0.05 for r in ratios)


def test_shear_changes_the_shape(cell: np.ndarray) -> None:
    outputs = draws(only(shear=True), cell)
    assert sum(not np.array_equal(output, cell) for output in outputs) >= 6


@pytest.mark.parametrize("switch", ["color_jitter", "hed_jitter"])
def test_colour_jitters_change_colours_but_not_geometry_or_background(cell: np.ndarray, switch: str) -> None:
    outputs = draws(only(**{switch: True}), cell)
    inside = foreground(cell)
    for output in outputs:
        assert (output[~inside] == 0).all(), "the black background stays black"
        assert np.array_equal(foreground(output), inside)
    assert max(np.abs(output.astype(int) - cell)[inside].mean() for output in outputs) > 3


def test_colour_jitter_matches_torchvisions_tensor_kernels_within_two_grey_levels(cell: np.ndarray) -> None:
    """Training jitters a PIL image for speed; the draws and the result are those of the tensor path."""
    aug = only(color_jitter=True)
    tensor_jitter = v2.ColorJitter(brightness=aug.brightness, saturation=aug.saturation, hue=aug.hue)
    for seed in range(8):
        torch.manual_seed(seed)
        via_pil = pixels_of(train_transform(aug, PRE)(cell))
        torch.manual_seed(seed)
        via_tensor = tensor_jitter(torch.from_numpy(cell).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        assert np.abs(via_pil.astype(int) - via_tensor).max() <= 2


@pytest.mark.parametrize(
    "preprocessing", [{"stain_norm": "macenko"}, {"stain_norm": "reinhard"}, {"denoise": "median"}]
)
def test_preprocessing_runs_identically_in_training_and_evaluation(cell: np.ndarray, preprocessing: dict) -> None:
    aug = AugmentConfig.off(**preprocessing)
    evaluated = eval_transform(PRE, aug)(cell)
    assert torch.equal(train_transform(aug, PRE)(cell), evaluated)
    assert not torch.equal(evaluated, eval_transform(PRE)(cell)), "the preprocessing did nothing"


@pytest.mark.parametrize("method", ["median", "bilateral", "nl_means"])
def test_denoising_brings_a_noisy_cell_closer_to_the_clean_one(cell: np.ndarray, method: str) -> None:
    noise = np.random.default_rng(1).normal(0, 12, size=cell.shape)
    noisy = np.clip(cell + noise, 0, 255).astype(np.uint8)
    cleaned = denoise(noisy, method)

    def error(image: np.ndarray) -> float:
        return float(np.mean((image.astype(float) - cell) ** 2))

    assert cleaned.dtype == np.uint8 and cleaned.shape == cell.shape
    assert error(cleaned) < 0.7 * error(noisy)


def test_wrongly_sized_input_is_refused(cell: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        eval_transform(PRE)(cell[:30])


def test_transforms_pickle_for_dataloader_workers(cell: np.ndarray) -> None:
    aug = AugmentConfig(hed_jitter=True, stain_norm="macenko", denoise="median")
    stains = replace(PRE, channels="hed")
    for transform in (train_transform(aug, PRE), eval_transform(PRE, aug), train_transform(aug, stains)):
        clone = pickle.loads(pickle.dumps(transform))
        torch.manual_seed(0)
        expected = transform(cell)
        torch.manual_seed(0)
        assert torch.equal(clone(cell), expected)


def stain_input(channels: str, image: np.ndarray) -> np.ndarray:
    """The [0, 1]-scale channels the network gets (the model's normalisation undone), HxWx3."""
    pre = replace(PRE, channels=channels)
    mean, std = torch.tensor(pre.mean)[:, None, None], torch.tensor(pre.std)[:, None, None]
    return (eval_transform(pre)(image) * std + mean).permute(1, 2, 0).numpy()


def test_optical_density_of_a_known_pixel_follows_beer_lambert(cell: np.ndarray) -> None:
    image = cell.copy()
    image[20, 20] = (40, 30, 90)
    density = stain_input("od", image)
    expected = [-np.log(41 / 256), -np.log(31 / 256), -np.log(91 / 256)]
    np.testing.assert_allclose(density[20, 20] * np.log(256), expected, rtol=1e-5)
    assert (density[~foreground(image)] == 0).all(), "the black canvas is no stain, not the densest pixel"


def test_hed_channels_of_a_known_pixel_are_ruifrok_johnstons_deconvolution(cell: np.ndarray) -> None:
    image = cell.copy()
    image[20, 20] = (40, 30, 90)
    ruifrok = np.linalg.inv([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])  # OD of pure H, E, DAB
    absorbance = np.log(np.array([40, 30, 90]) / 255) / np.log(1e-6)
    expected = np.maximum(absorbance @ ruifrok, 0) * np.array(CHANNEL_SCALE["hed"])
    hed = stain_input("hed", image)
    np.testing.assert_allclose(hed[20, 20], expected, atol=2e-3)
    assert (hed[~foreground(image)] == 0).all() and hed.max() <= 1.0


@pytest.mark.parametrize("channels", ["od", "hed"])
def test_stain_channels_run_identically_in_training_and_evaluation(cell: np.ndarray, channels: str) -> None:
    pre = replace(PRE, channels=channels)
    evaluated = eval_transform(pre)(cell)
    assert evaluated.dtype == torch.float32 and evaluated.shape == (3, SIZE, SIZE)
    assert torch.equal(train_transform(OFF, pre)(cell), evaluated)
    assert not torch.allclose(evaluated, eval_transform(PRE)(cell))
