"""The exported files state every preprocessing step in order, exactly enough for an ONNX Runtime user to reproduce
blastscope's model input from the metadata alone: crop, stain normalisation, denoising and stain channels."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from PIL import Image
from scipy.ndimage import median_filter
from skimage.color import lab2rgb, rgb2hed, rgb2lab
from skimage.restoration import denoise_bilateral, denoise_nl_means

import blastscope.export.onnx as export
from blastscope.data.augment import AugmentConfig
from blastscope.data.preprocessing import CHANNEL_SCALE, Preprocessing
from blastscope.data.stain import DEFAULT_MACENKO, fit_lab
from blastscope.data.transforms import denoise, eval_transform
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.predict import batches
from blastscope.runs import load_run

POINT = OperatingPoint.default(("all", "hem"))


def _follow(image: Image.Image, record: dict) -> np.ndarray:
    """An outside user's preprocessing: the ``blastscope.preprocessing`` record's fields alone (the ``blastscope.input``
    text's rules), numpy, scipy, skimage and Pillow; images already on black, so ``segment=auto`` leaves them."""
    assert record["colour_norm"] == "none" and record["stain_norm"] in (None, "reinhard")
    width, height = image.size
    if record["crop_fraction"] < 1:
        side = max(1, round(record["crop_fraction"] * min(width, height)))
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    size = record["input_size"]
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    if image.size != (size, size):
        image = image.resize((size, size), filters[record["interpolation"]])
    rgb = np.asarray(image, dtype=np.uint8)
    if record["denoise"] == "median":
        rgb = median_filter(rgb, size=(3, 3, 1), mode="reflect")
    cell = rgb.max(axis=2) >= record["cell_level"]
    if record["stain_norm"] == "reinhard" and cell.sum() >= 64:
        lab = rgb2lab(rgb[cell] / 255.0)
        reference = record["stain_reference"]
        matched = (lab - lab.mean(axis=0)) * (
            np.array(reference["lab_std"]) / np.maximum(lab.std(axis=0), 1e-6)
        ) + np.array(reference["lab_mean"])
        rgb = rgb.copy()
        rgb[cell] = np.clip(np.rint(lab2rgb(matched) * 255.0), 0, 255).astype(np.uint8)
        cell = rgb.max(axis=2) >= record["cell_level"]
    if record["channels"] == "rgb":
        values = rgb.astype(np.float32) / np.float32(255)
    else:
        raw = -np.log((rgb.astype(np.float64) + 1) / 256) if record["channels"] == "od" else rgb2hed(rgb / 255.0)
        raw = raw * np.array(record["channel_scale"])
        raw[~cell] = 0.0
        values = raw.astype(np.float32)
    mean, std = (np.array(record[key], dtype=np.float32) for key in ("mean", "std"))
    return ((values - mean) / std).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def preprocessed_export(tiny_cnn_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_cnn_run`` re-recorded as trained with --augment stain_norm=reinhard, denoise=median, --channels od and
    --crop-fraction 0.9, then exported (the network does not matter to what its files say about their input)."""
    run_dir = Path(shutil.copytree(tiny_cnn_run, tmp_path_factory.mktemp("preprocessed") / tiny_cnn_run.name))
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["augmentation"].update(stain_norm="reinhard", denoise="median")
    config["preprocessing"].update(channels="od", channel_scale=list(CHANNEL_SCALE["od"]), crop_fraction=0.9)
    config.update(channels="od", crop_fraction=0.9)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    export.export_run(load_run(run_dir), log=lambda _: None)
    return run_dir


def _props(run_dir: Path) -> dict[str, str]:
    model = onnx.load(str(run_dir / "export" / "model.onnx"))
    return {prop.key: prop.value for prop in model.metadata_props}


def test_the_metadata_names_every_step_in_order(preprocessed_export: Path) -> None:
    props = _props(preprocessed_export)
    record = json.loads(props["blastscope.preprocessing"])
    assert (record["stain_norm"], record["denoise"], record["channels"], record["crop_fraction"]) == (
        "reinhard",
        "median",
        "od",
        0.9,
    )
    assert record["stain_reference"] == {"lab_mean": [18.0, 27.7, -22.6], "lab_std": [4.0, 2.8, 3.2], "fitted_on": None}
    assert record["steps"] == ["decode", "segment", "crop", "resize", "denoise", "stain_norm", "channels", "normalise"]
    text = props["blastscope.input"]
    marks = [
        "(segment=auto)",
        "round(0.9 x min(W, H))",
        "resize to 32x32 with Pillow's bilinear filter",
        "median_filter(x, size=(3, 3, 1)), mode 'reflect'",
        "Reinhard stain normalisation",
        "mean_ref = [18, 27.7, -22.6] and std_ref = [4, 2.8, 3.2]",
        "optical density -ln((v + 1) / 256)",
        "< 12 of 255",
        "(x - mean) / std",
    ]
    assert all(mark in text for mark in marks), text
    assert [text.index(mark) for mark in marks] == sorted(text.index(mark) for mark in marks)
    assert "no stand-alone rule" in text  # segmentation is named as the step outside users cannot reproduce
    saved = json.loads((preprocessed_export / "export" / export.RECORD_NAME).read_text())["preprocessing"]
    assert saved == record


def test_following_the_metadata_reproduces_blastscopes_model_input(
    preprocessed_export: Path, cell_images: list[Path], tmp_path: Path
) -> None:
    record = json.loads(_props(preprocessed_export)["blastscope.preprocessing"])
    trained = load_run(preprocessed_export)
    wide = tmp_path / "wide.png"  # not square, so the crop's min(W, H) and floor((W - s) / 2) both show
    canvas = Image.new("RGB", (75, 61))
    canvas.paste(Image.open(cell_images[-1]).convert("RGB"), (7, -1))
    canvas.save(wide)
    files = [cell_images[0], wide]
    expected = next(batches(files, trained.preprocessing, trained.transform)).numpy()
    followed = np.stack([_follow(Image.open(path).convert("RGB"), record) for path in files])
    np.testing.assert_allclose(followed, expected, atol=1e-6, rtol=0)
    plain = dict(record, stain_norm=None, denoise=None)  # the steps matter: leaving them out is no reproduction
    assert np.abs(np.stack([_follow(Image.open(p).convert("RGB"), plain) for p in files]) - expected).max() > 1e-3


@pytest.mark.parametrize("channels", ["rgb", "hed"])
def test_other_channels_follow_their_statement(channels: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    rgb[:4] = rng.integers(0, 12, size=(4, 16, 3))  # a stretch of canvas, zeroed by the stain channels
    pre = Preprocessing(16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), channels=channels)
    record = json.loads(export.model_metadata(pre, POINT, "m", "fp32")["blastscope.preprocessing"])
    np.testing.assert_allclose(_follow(Image.fromarray(rgb), record), eval_transform(pre)(rgb).numpy(), atol=1e-6)


@pytest.mark.parametrize("method", ["median", "bilateral", "nl_means"])
def test_each_denoise_statement_is_what_blastscope_does(method: str) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    pre = Preprocessing(12, (0.5,) * 3, (0.5,) * 3, segment="never")
    text = export.model_metadata(pre, POINT, "m", "fp32", AugmentConfig.off(denoise=method))["blastscope.input"]
    assert export.DENOISE_TEXT[method] in text
    stated = {
        "median": lambda x: median_filter(x, size=(3, 3, 1), mode="reflect"),
        "bilateral": lambda x: denoise_bilateral(x / 255, sigma_color=0.05, sigma_spatial=1.5, channel_axis=-1),
        "nl_means": lambda x: denoise_nl_means(
            x / 255, h=0.04, fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1
        ),
    }[method](rgb)
    if method != "median":
        stated = np.clip(np.rint(stated * 255.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(stated, denoise(rgb, method))


def test_macenko_and_a_fitted_reference_carry_their_numbers(cell_images: list[Path]) -> None:
    pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    macenko = export.model_metadata(pre, POINT, "m", "fp32", AugmentConfig.off(stain_norm="macenko"))
    assert "[[0.5237, 0.4259], [0.7598, 0.7935], [0.3854, 0.4347]]" in macenko["blastscope.input"]
    reference = json.loads(macenko["blastscope.preprocessing"])["stain_reference"]
    assert reference["max_concentrations"] == list(DEFAULT_MACENKO.max_concentrations)
    fitted = AugmentConfig.off(stain_norm="reinhard", stain_reference=str(cell_images[0]))
    metadata = export.model_metadata(pre, POINT, "m", "fp32", fitted)
    lab = fit_lab(np.asarray(Image.open(cell_images[0]).convert("RGB")))
    reference = json.loads(metadata["blastscope.preprocessing"])["stain_reference"]
    assert all(map(math.isclose, reference["lab_mean"], lab.mean)) and reference["fitted_on"] == cell_images[0].name
    assert f"fitted on {cell_images[0].name}" in metadata["blastscope.input"]
