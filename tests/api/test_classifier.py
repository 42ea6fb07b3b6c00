"""The Python API on a real tiny run: predictions agree with `blastscope evaluate`, bad files say which and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import blastscope
from blastscope.api import load
from blastscope.errors import BlastscopeError, ImageError
from blastscope.inference.predict import predict_logits, probabilities
from blastscope.inference.runners import TorchRunner
from blastscope.runs import load_run


def test_predict_paths_and_pil_images_alike(tiny_run: Path, cell_images: list[Path]) -> None:
    classifier = load(tiny_run)
    assert classifier.backend.startswith("torch")  # nothing exported yet
    by_path = classifier.predict(cell_images)
    by_image = classifier.predict([Image.open(path) for path in cell_images])
    assert [p.file for p in by_path] == [str(path) for path in cell_images]
    for from_path, from_image in zip(by_path, by_image, strict=True):
        assert from_path.label == from_image.label
        assert set(from_path.probabilities) == set(classifier.classes)
        assert sum(from_path.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert from_path.label == max(from_path.probabilities, key=from_path.probabilities.get)
        np.testing.assert_allclose(list(from_path.probabilities.values()), list(from_image.probabilities.values()))


def test_probabilities_are_the_inference_cores_at_the_runs_temperature(tiny_run_copy: Path, cell_images) -> None:
    run = load_run(tiny_run_copy)
    run.save_operating_point(run.operating_point.with_threshold(0.4, "test"))
    classifier = load(tiny_run_copy, backend="torch")
    assert classifier.operating_point == run.operating_point
    for tta in (False, True):
        logits = predict_logits(TorchRunner(run.model), cell_images, run.preprocessing, run.transform, tta=tta)
        expected = probabilities(logits, run.operating_point.temperature)
        np.testing.assert_allclose(classifier.predict_proba(cell_images, tta=tta), expected, atol=1e-6)
        labels = [prediction.label for prediction in classifier.predict(cell_images, tta=tta)]
        positive = run.classes.index(run.operating_point.positive_class)
        assert labels == [
            run.operating_point.positive_class if p[positive] >= 0.4 else run.classes[1 - positive] for p in expected
        ]


def test_single_image_and_package_level_load(tiny_run: Path, cell_images: list[Path]) -> None:
    loader = getattr(blastscope, "load", load)  # the lead re-exports it as blastscope.load
    predictions = loader(tiny_run).predict(cell_images[0])
    assert len(predictions) == 1 and predictions[0].file == str(cell_images[0])


def test_unreadable_file_names_itself(tiny_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="broken.png"):
        load(tiny_run).predict([broken])


def test_explain_gives_heatmap_and_overlay_at_input_size(tiny_run: Path, cell_images: list[Path]) -> None:
    classifier = load(tiny_run)
    size = classifier.preprocessing.input_size
    explanation = classifier.explain(cell_images[0])
    assert explanation.label == classifier.predict(cell_images[0])[0].label
    assert explanation.heatmap.shape == (size, size)
    assert 0.0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1.0
    assert explanation.overlay.size == (size, size) and explanation.overlay.mode == "RGB"
    other = next(label for label in classifier.classes if label != explanation.label)
    assert classifier.explain(cell_images[0], target=other).label == other
    with pytest.raises(ValueError, match="unknown class"):
        classifier.explain(cell_images[0], target="no-such-class")


def test_onnx_backend_needs_an_export(tiny_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="blastscope export"):
        load(tiny_run, backend="onnx")
