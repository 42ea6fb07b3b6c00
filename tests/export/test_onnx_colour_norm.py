"""Exporting a run that normalises colours per person: the files say so, and int8 is calibrated on the colours the
model is fed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

import blastscope.export.onnx as export
from blastscope.data.cache import DecodedCache
from blastscope.inference.predict import by_person, resized_pixels
from blastscope.runs import load_run


def test_metadata_and_calibration_follow_the_runs_colour_norm(
    tiny_cnn_run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ``tiny_cnn_run`` re-recorded as trained with --colour-norm subject: the network does not matter to which
    colours it is fed and calibrated on."""
    run_dir = tiny_cnn_run_copy
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["colour_norm"] = config["preprocessing"]["colour_norm"] = "subject"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trained = load_run(run_dir)
    assert trained.preprocessing.colour_norm == "subject"
    seen: list[np.ndarray] = []
    real = export.quantize_int8

    def quantize(source, target, name, arrays, keep_float=()):
        arrays = list(arrays)
        seen.extend(arrays)
        return real(source, target, name, iter(arrays), keep_float)

    monkeypatch.setattr(export, "quantize_int8", quantize)
    export.export_run(trained, int8=True, log=lambda _: None)
    for path in (run_dir / "export").glob("model*.onnx"):
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["blastscope.preprocessing"])["colour_norm"] == "subject"
        assert "all cells of its person" in props["blastscope.input"]
    pre, cache = trained.preprocessing, DecodedCache()
    calibration = export._usable(trained, "train", lambda _: None, export.CALIBRATION_CELLS)
    train = [cell for cell in trained.split.parts["train"]]
    subjects = {cell.subject for cell in calibration}
    everyone = by_person([cell for cell in train if cell.subject in subjects], pre, cache)
    normalised = {
        cell.path: one.pixels
        for cell, one in zip([cell for cell in train if cell.subject in subjects], everyone, strict=True)
    }
    first = trained.transform(normalised[calibration[0].path]).numpy()
    np.testing.assert_allclose(seen[0][0], first, atol=1e-6)
    raw = trained.transform(resized_pixels(calibration[0], pre, cache).pixels).numpy()
    assert not np.allclose(seen[0][0], raw, atol=1e-3)


def test_the_input_metadata_gives_the_per_person_rule_and_the_reference_numbers(tiny_colour_run: Path) -> None:
    trained = load_run(tiny_colour_run)
    text = export.model_metadata(trained.preprocessing, trained.operating_point, "m", "fp32")["blastscope.input"]
    assert "mean_ref = [18, 27.7, -22.6] and std_ref = [4, 2.8, 3.2]" in text
    assert "(x - m) * std_ref / max(s, 1e-6) + mean_ref" in text and ">= 12 of 255" in text
