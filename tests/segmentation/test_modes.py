"""``--segment auto|always|never`` on one decoded image: cut-outs on black stay as they are under ``auto``, crops with
a natural background are cut out, and an image without a findable cell raises with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.data.synth import smear_field, synthesize
from blastscope.errors import BlastscopeError
from blastscope.segmentation import (
    CNMC_CANVAS,
    CellNotFoundError,
    cell_for_model,
    is_on_black,
    segment_cell,
    segmenting_bytes,
)
from blastscope.segmentation.modes import (
    GREY_ON_BLACK_REASON,
    GREY_REASON,
    MAX_SEGMENT_PIXELS,
    SEGMENT_PEAK_BYTES_PER_PIXEL,
    is_grey,
)


def crop_around_cell(seed: int, side: int = 180) -> np.ndarray:
    field = smear_field(seed, height=320, width=320, white_cells=1)
    ys, xs = np.nonzero(field.white_cells == 1)
    top, left = (min(max(0, int(c.mean()) - side // 2), 320 - side) for c in (ys, xs))
    return field.image[top : top + side, left : left + side]


@pytest.fixture(scope="module")
def on_black(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("synth")
    synthesize(folder, subjects_per_class=1, cells_per_subject=1, image_size=96, seed=0)
    return np.asarray(Image.open(sorted(folder.rglob("*.png"))[0]).convert("RGB"))


@pytest.mark.parametrize("seed", range(3))
def test_auto_cuts_out_a_crop_with_a_natural_background(seed: int) -> None:
    crop = crop_around_cell(seed)
    assert not is_on_black(crop)
    cell = cell_for_model(crop, "auto")
    assert cell.segmented and cell.image.shape == (CNMC_CANVAS, CNMC_CANVAS, 3)
    assert is_on_black(cell.image) and cell.image.max() > 100
    assert np.array_equal(cell_for_model(crop, "always").image, cell.image)


@pytest.mark.parametrize("frame", ["eyepiece circle", "black border"])
def test_a_smear_field_in_a_black_frame_is_a_photograph_not_a_cut_out(frame: str, on_black: np.ndarray) -> None:
    """Dark at its border like a C-NMC cell, but what is lit is mostly pale background."""
    field = smear_field(0, height=240, width=320).image.copy()
    y, x = np.mgrid[:240, :320]
    if frame == "eyepiece circle":
        field[np.hypot(y - 120, x - 160) > 120] = 0  # 41% of the picture black
    else:
        field[:40], field[-40:], field[:, :40], field[:, -40:] = 0, 0, 0, 0  # 58% of it black
    assert not is_on_black(field)
    assert is_on_black(on_black)


def test_auto_leaves_a_cut_out_on_black_as_it_is(on_black: np.ndarray) -> None:
    cell = cell_for_model(on_black, "auto")
    assert not cell.segmented and cell.image is on_black


def test_always_only_recentres_a_cut_out_on_black_at_its_own_size(on_black: np.ndarray) -> None:
    shifted = np.zeros_like(on_black)
    shifted[10:, 12:] = on_black[:-10, :-12]
    cell = cell_for_model(shifted, "always")
    assert cell.segmented and cell.image.shape == on_black.shape  # re-centred, never zoomed
    rows, cols = np.nonzero(cell.image.max(axis=2) >= 12)
    centre = (on_black.shape[0] - 1) / 2
    assert abs((rows.min() + rows.max()) / 2 - centre) <= 1 and abs((cols.min() + cols.max()) / 2 - centre) <= 1


def test_never_changes_nothing() -> None:
    blank = np.full((120, 120, 3), 215, np.uint8)
    crop = crop_around_cell(0)
    assert cell_for_model(blank, "never").image is blank and cell_for_model(crop, "never").image is crop
    assert not cell_for_model(crop, "never").segmented


@pytest.mark.parametrize("mode", ["auto", "always"])
@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.full((120, 120, 3), (226, 214, 222), np.uint8), "no white cell found"),  # a bright field, nothing in it
        (smear_field(7, white_cells=0).image, "no white cell found"),  # red cells and platelets only
        (np.zeros((120, 120, 3), np.uint8), "the image is black"),
        (np.full((10, 10, 3), 215, np.uint8), "too small"),
    ],
    ids=["blank", "no-white-cell", "black", "tiny"],
)
def test_a_cell_that_cannot_be_found_raises_with_the_reason(mode: str, image: np.ndarray, reason: str) -> None:
    with pytest.raises(CellNotFoundError, match=reason) as raised:
        cell_for_model(image, mode)
    assert reason in raised.value.reason


def grey(image: np.ndarray, jitter: int = 0) -> np.ndarray:
    """``image`` in grey levels, its red channel off by ``jitter`` levels (JPEG chroma noise)."""
    level = image.mean(axis=2).astype(np.int16)
    out = np.stack([level + jitter, level, level], axis=2)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", ["auto", "always"])
@pytest.mark.parametrize("jitter", [0, 2])
def test_a_grey_image_that_needs_segmenting_is_refused_not_guessed(mode: str, jitter: int) -> None:
    image = grey(crop_around_cell(0), jitter)
    assert not is_on_black(image) and is_grey(image)
    with pytest.raises(CellNotFoundError) as raised:
        cell_for_model(image, mode)
    assert raised.value.cause == GREY_REASON and raised.value.reason.startswith(f"{GREY_REASON}, or --segment never")


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_a_grey_image_on_black_holds_no_stained_cell_and_is_refused(mode: str, on_black: np.ndarray) -> None:
    """Something grey on black is no cell of a stained smear (a white square was called HEM at p = 0.91)."""
    white_square = np.zeros((450, 450, 3), np.uint8)
    white_square[199:221, 199:221] = (255, 200, 150)  # a warm one-pixel edge
    white_square[200:220, 200:220] = 255
    scale_bar = grey(on_black)
    scale_bar[-8:-4, 4:60] = (255, 0, 0)
    noisy = np.random.default_rng(0).integers(-3, 4, on_black.shape)
    for image in (
        grey(on_black),
        grey(on_black, jitter=4),
        scale_bar,
        white_square,
        np.clip(grey(on_black) + noisy, 0, 255).astype(np.uint8),
    ):
        assert is_on_black(image)
        with pytest.raises(CellNotFoundError) as raised:
            cell_for_model(image, mode)
        assert raised.value.reason == f"{GREY_ON_BLACK_REASON}, or --segment never to classify it as it is"
    assert cell_for_model(on_black, mode).image.std(axis=2).max() > 10  # the coloured cell itself passes


def test_never_classifies_a_grey_image_as_it_is(on_black: np.ndarray) -> None:
    assert not is_grey(grey(crop_around_cell(0), 3))
    for image in (grey(on_black), grey(crop_around_cell(0))):
        assert cell_for_model(image, "never").image is image


def test_images_too_large_for_one_cell_are_refused_before_segmenting() -> None:
    side = int(np.sqrt(MAX_SEGMENT_PIXELS)) + 1
    large = np.full((side, side, 3), 215, np.uint8)
    with pytest.raises(CellNotFoundError, match="too large to cut one cell out of"):
        cell_for_model(large, "auto")
    assert segmenting_bytes(side * side, "auto") == MAX_SEGMENT_PIXELS * SEGMENT_PEAK_BYTES_PER_PIXEL
    assert segmenting_bytes(100, "always") == 100 * SEGMENT_PEAK_BYTES_PER_PIXEL and segmenting_bytes(100, "never") == 0


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(BlastscopeError, match="segment mode 'sometimes' is unknown"):
        cell_for_model(crop_around_cell(0), "sometimes")


@pytest.mark.integration
def test_real_cnmc_cells_are_left_as_they_are(cnmc_sample: Path) -> None:
    for path in sorted(cnmc_sample.rglob("*.png"))[:12]:
        image = np.asarray(Image.open(path).convert("RGB"))
        cell = cell_for_model(image, "auto")
        assert not cell.segmented and cell.image is image, path


def cut_by_the_border(cell: np.ndarray, sides: int) -> np.ndarray:
    """A C-NMC cut-out cropped so its cell is cut by the bottom border (``sides=1``) or bottom and right (2)."""
    rows, cols = np.nonzero(cell.max(axis=2) >= 12)
    bottom = (rows.min() + rows.max()) // 2 + 20  # through the cell, below its centre
    right = (cols.min() + cols.max()) // 2 + 20 if sides == 2 else cell.shape[1]
    return cell[max(0, rows.min() - 30) : bottom, max(0, cols.min() - 30) : right]


@pytest.mark.integration
@pytest.mark.parametrize("sides", [1, 2])
def test_a_cnmc_cut_out_whose_cell_reaches_the_border_stays_as_it_is(cnmc_sample: Path, sides: int) -> None:
    # Once read as a natural background, its black canvas had the highest optical density of the image and was cut
    # out as "the cell": a black canvas the model then classified.
    for path in sorted(cnmc_sample.rglob("*.png"))[:6]:
        crop = cut_by_the_border(np.asarray(Image.open(path).convert("RGB")), sides)
        cell = cell_for_model(crop, "auto")
        assert not cell.segmented and cell.image is crop, path


def test_the_exif_case_is_a_cut_out_on_black(cases: Path) -> None:
    for name in ("exif_upright.jpg", "exif_orient6.jpg"):
        image = np.asarray(Image.open(cases / "decode" / name).convert("RGB"))
        assert is_on_black(image), name


@pytest.mark.parametrize("seed", range(3))
def test_a_black_vignette_is_never_taken_for_the_cell(seed: int) -> None:
    crop = crop_around_cell(seed)
    vignetted = crop.copy()
    vignetted[:45, :45] = 0  # the dark corner of a field photographed through an eyepiece
    assert not is_on_black(vignetted)
    assert cell_for_model(vignetted, "auto").segmented
    clean, found = segment_cell(crop), segment_cell(vignetted)
    assert found.found and found.box is not None and clean.box is not None
    assert np.abs(np.subtract(found.box, clean.box)).max() <= 3, (found.box, clean.box)  # the same white cell
