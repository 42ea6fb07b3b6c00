"""The Python API on a real tiny run: predictions agree with `blastscope evaluate`, bad files say which and why."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import blastscope
from blastscope.api import ImageScan, load
from blastscope.data.synth import smear_field
from blastscope.errors import BlastscopeError, ImageError
from blastscope.inference.decision import OperatingPoint, decide, uncertain
from blastscope.inference.predict import predict_logits, probabilities
from blastscope.inference.runners import TorchRunner
from blastscope.runs import load_run
from blastscope.segmentation import segment_cell
from blastscope.workflows.scan.photograph import ON_BLACK_REASON


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
        predictions = classifier.predict(cell_images, tta=tta)
        assert all(prediction.tta is tta and prediction.to_dict()["tta"] is tta for prediction in predictions)
        labels = [prediction.label for prediction in predictions]
        positive = run.classes.index(run.operating_point.positive_class)
        assert labels == [
            run.operating_point.positive_class if p[positive] >= 0.4 else run.classes[1 - positive] for p in expected
        ]


def test_single_image_and_package_level_load(tiny_run: Path, cell_images: list[Path]) -> None:
    loader = getattr(blastscope, "load", load)  # the lead re-exports it as blastscope.load
    predictions = loader(tiny_run).predict(cell_images[0])
    assert len(predictions) == 1 and predictions[0].file == str(cell_images[0])


def test_misuse_is_refused_by_what_was_passed(tiny_run: Path, cell_images: list[Path]) -> None:
    classifier = load(tiny_run)
    with pytest.raises(TypeError, match="got the bytes of a file: pass its path"):
        classifier.predict(cell_images[0].read_bytes())
    with pytest.raises(TypeError, match="expected an image path, a PIL image, or a list of them, got int"):
        classifier.predict(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tta must be True or False, got 'no'"):
        classifier.predict(cell_images[0], tta="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_dir must be the path of a run folder"):
        load(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_refused_before_any_image_is_read(
    tiny_run: Path, tmp_path: Path, batch_size: int
) -> None:
    with pytest.raises(ValueError, match=f"^batch_size must be at least 1, not {batch_size}$"):
        load(tiny_run).predict([tmp_path / "missing.png"], batch_size=batch_size)


def test_a_threshold_for_a_multi_class_run_is_refused_at_load_and_at_predict(
    tiny_three_class_run: Path, cell_images: list[Path]
) -> None:
    """A multi-class run decides by its most probable class: a threshold given to it would be ignored while every
    prediction said it had decided, so it is refused, naming who gave it."""
    refusal = "needs a two-class run; {} has 3 classes (all, hem, other), decided by the most probable class"
    with pytest.raises(BlastscopeError, match=re.escape("load(threshold=...) " + refusal.format(tiny_three_class_run))):
        load(tiny_three_class_run, threshold=0.3)
    classifier = load(tiny_three_class_run)
    with pytest.raises(BlastscopeError, match=re.escape("predict(threshold=...) needs a two-class run")):
        classifier.predict(cell_images, threshold=0.3)
    predictions = classifier.predict(cell_images)
    assert {(p.positive_class, p.threshold, p.decided_by) for p in predictions} == {(None, None, "by train")}
    assert all(p.to_dict()["positive_class"] is None for p in predictions)
    assert classifier.operating_point.describe() == "the most probable class (multi-class: no threshold; by train)"


def test_a_prediction_names_the_class_its_threshold_is_on(tiny_run: Path, cell_images: list[Path]) -> None:
    """A saved row with a threshold but not its class would leave open whether 0.35 is on p(ALL) or on p(HEM)."""
    point = load_run(tiny_run).operating_point
    for prediction in load(tiny_run).predict(cell_images):
        assert (prediction.positive_class, prediction.threshold) == (point.positive_class, point.threshold)
        assert list(prediction.to_dict())[3:5] == ["positive_class", "threshold"]


@pytest.mark.parametrize("threshold", [True, False, np.True_, "0.3"])
def test_a_threshold_that_is_not_a_number_is_refused_naming_its_type(
    tiny_run: Path, cell_images: list[Path], threshold: object
) -> None:
    """``True`` once decided at 1.0 (every cell HEM) and ``"0.3"`` at 0.3, each without a word."""
    said = f"must be a number, a probability in [0, 1]; got {type(threshold).__name__} {threshold!r}"
    with pytest.raises(BlastscopeError, match=re.escape(f"load(threshold=...) {said}")):
        load(tiny_run, threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(BlastscopeError, match=re.escape(f"predict(threshold=...) {said}")):
        load(tiny_run).predict(cell_images, threshold=threshold)  # type: ignore[arg-type]


def test_a_threshold_of_any_numeric_type_is_taken(tiny_run: Path) -> None:
    assert load(tiny_run, threshold=np.float32(0.25)).operating_point.threshold == pytest.approx(0.25)
    assert load(tiny_run, threshold=1).operating_point.threshold == 1.0  # an int is a number: positive only at p = 1


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


def test_explain_takes_a_class_spelled_as_the_doors_show_it(tiny_run: Path, cell_images: list[Path]) -> None:
    classifier = load(tiny_run)  # classes ("hem", "all"); predict, serve and the page show them as HEM and ALL
    assert classifier.explain(cell_images[0], target="ALL").label == "all"
    assert classifier.explain(cell_images[0], target="Hem").label == "hem"


def test_a_variant_is_refused_with_the_torch_backend_it_would_not_run_on(tiny_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="variant 'int8' names an ONNX export") as caught:
        load(tiny_run, backend="torch", variant="int8")  # it answered with the PyTorch fp32 network
    assert "\n" not in str(caught.value)


def test_onnx_backend_needs_an_export(tiny_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="blastscope export"):
        load(tiny_run, backend="onnx")


def test_scan_classifies_each_cut_out_as_predict_does(tiny_run: Path, tmp_path: Path) -> None:
    """clf.scan finds the white cells of a smear photograph and classifies their cut-outs on black through the same
    path as clf.predict: the same probabilities, the same labels at the run's operating point."""
    classifier = load(tiny_run)
    field = smear_field(0, height=480, width=640, white_cells=3, cut_cells=1)
    path = tmp_path / "field.png"
    Image.fromarray(field.image).save(path)
    scan = classifier.scan(path)
    assert isinstance(scan, ImageScan) and scan.file == str(path)
    assert len(scan.cells) == 3 and scan.n_cut_by_border == 1
    cutouts = [Image.fromarray(cell.canvas) for cell in scan.cells]
    probabilities = np.array([[cell.probabilities[name] for name in classifier.classes] for cell in scan.cells])
    np.testing.assert_allclose(probabilities, classifier.predict_proba(cutouts), atol=1e-6)
    assert [cell.label for cell in scan.cells] == [prediction.label for prediction in classifier.predict(cutouts)]
    assert scan.threshold == classifier.operating_point.threshold and scan.overlay.mode == "RGB"
    again = classifier.scan(Image.open(path), name="upload.png")
    assert again.file == "upload.png" and [cell.box for cell in again.cells] == [cell.box for cell in scan.cells]
    with pytest.raises(ImageError):
        classifier.scan(tmp_path / "missing.png")
    with pytest.raises(BlastscopeError, match="red cell diameter"):
        classifier.scan(path, red_cell_diameter=-1)


def test_scan_refuses_a_cell_already_on_black_as_it_refuses_a_grey_photograph(
    tiny_run: Path, cell_images: list[Path], tmp_path: Path
) -> None:
    """clf.scan and clf.scan_together answer a C-NMC-like cut-out with its ImageError (the reason says to predict
    it), as they answer a grey photograph; scan_together scans the others."""
    classifier = load(tiny_run)
    with pytest.raises(ImageError) as raised:
        classifier.scan(cell_images[0], name="cell.png")
    assert raised.value.reason == ON_BLACK_REASON and str(raised.value).startswith("cell.png: ")
    field = tmp_path / "field.png"
    Image.fromarray(smear_field(0, height=480, width=640, white_cells=3).image).save(field)
    scanned, refused = classifier.scan_together([field, cell_images[0]], names=["field", "cell"])
    assert isinstance(scanned, ImageScan) and len(scanned.cells) == 3
    assert isinstance(refused, ImageError) and refused.reason == ON_BLACK_REASON


def test_crops_with_a_background_are_cut_out_and_say_so(tiny_run: Path, cell_images, natural_crops, caplog) -> None:
    """The run was trained with ``--segment auto``: a crop with its natural background is classified as its cell cut
    out onto black (the same pixels as the cut-out given directly), a C-NMC-like cell as it is."""
    classifier = load(tiny_run)
    assert classifier.preprocessing.segment == "auto"
    predictions = classifier.predict([*natural_crops, cell_images[0]])
    assert [p.segmented for p in predictions] == [True, True, True, False]
    assert predictions[0].to_dict()["segmented"] is True
    prepared = classifier.prepare(natural_crops[0])
    assert prepared.segmented and prepared.pixels[0, 0].max() == 0
    cut_out = segment_cell(np.asarray(Image.open(natural_crops[0]).convert("RGB"))).canvas
    np.testing.assert_allclose(
        classifier.predict_proba(Image.fromarray(cut_out)), classifier.predict_proba(natural_crops[0]), atol=1e-6
    )
    never = load(tiny_run, segment="never")
    assert "the run was trained with --segment auto" in caplog.text
    assert not never.predict(natural_crops[0])[0].segmented


def test_a_cell_that_cannot_be_found_is_an_error_naming_the_image(tiny_run: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (215, 205, 210)).save(blank)
    classifier = load(tiny_run)
    with pytest.raises(ImageError, match=r"blank\.png: no white cell found"):
        classifier.prepare(blank)
    with pytest.raises(ImageError, match=r"blank\.png: no white cell found"):
        classifier.predict([blank])
    with pytest.raises(BlastscopeError, match="segment mode 'sometimes' is unknown"):
        load(tiny_run, segment="sometimes")


def test_a_given_red_cell_diameter_reaches_the_segmentation_in_both_backends(
    exported_run: Path, natural_crops: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """``load(red_cell_diameter=PX)`` cuts cells out at that scale: the same pixels as :func:`segment_cell` given it,
    through PyTorch and ONNX alike; a diameter far too large for the crop leaves its nucleus too small to be one."""
    crop = np.asarray(Image.open(natural_crops[0]).convert("RGB"))
    for backend in ("torch", "onnx"):
        classifier = load(exported_run, backend=backend, red_cell_diameter=30)
        assert classifier.preprocessing.red_cell_diameter == 30.0
        expected = classifier.prepare(Image.fromarray(segment_cell(crop, red_cell_diameter=30).canvas)).pixels
        np.testing.assert_array_equal(classifier.prepare(natural_crops[0]).pixels, expected)
        with pytest.raises(ImageError, match="no haematoxylin-stained nucleus of at least"):
            load(exported_run, backend=backend, red_cell_diameter=2000).prepare(natural_crops[0])
    assert "red-cell diameter of 30 px for this call" in caplog.text
    with pytest.raises(BlastscopeError, match="red-cell diameter 0 is invalid"):
        load(exported_run, red_cell_diameter=0)


def test_onnx_and_pytorch_segment_and_classify_alike(exported_run: Path, natural_crops, cell_images) -> None:
    """The segmentation is the shared Python step before either runner: same flags, same probabilities."""
    images = [*natural_crops, *cell_images[:2]]
    torch_predictions = load(exported_run, backend="torch").predict(images)
    onnx_classifier = load(exported_run, backend="onnx", variant="fp32")
    assert onnx_classifier.backend.startswith("onnx") and onnx_classifier.preprocessing.segment == "auto"
    onnx_predictions = onnx_classifier.predict(images)
    assert (
        [p.segmented for p in onnx_predictions] == [p.segmented for p in torch_predictions] == [True] * 3 + [False] * 2
    )
    for from_torch, from_onnx in zip(torch_predictions, onnx_predictions, strict=True):
        assert from_torch.label == from_onnx.label
        np.testing.assert_allclose(
            list(from_torch.probabilities.values()), list(from_onnx.probabilities.values()), atol=1e-5
        )


def banded(point: OperatingPoint, p_positive: np.ndarray) -> OperatingPoint:
    """``point`` with a threshold inside the cells' p(positive) and a refer band holding all but the lowest and the
    highest: its edges lie between two cells' values, so which cells are inside does not hang on rounding."""
    values = np.unique(p_positive)
    assert len(values) >= 3, "the band needs three distinct probabilities"
    between = (values[:-1] + values[1:]) / 2
    threshold = float(between[max(0, len(values) // 2 - 1)])
    return replace(point.with_threshold(threshold, "test"), refer_band=(float(between[0]), float(between[-1])))


def test_cells_inside_the_refer_band_are_referred_and_a_given_threshold_drops_it(
    tiny_run_copy: Path, synth_small: Path
) -> None:
    """A run whose operating point has a refer band: each prediction is ``referred`` exactly where
    :func:`uncertain` says, keeping the threshold's label; a threshold given to ``load`` or ``predict`` refers none
    and says "no refer band"."""
    files = sorted(synth_small.rglob("*.png"))[:12]
    run = load_run(tiny_run_copy)
    positive = run.classes.index(run.operating_point.positive_class)
    p_positive = load(tiny_run_copy).predict_proba(files)[:, positive]
    point = replace(banded(run.operating_point, p_positive), refer_target=0.05)
    run.save_operating_point(point)

    classifier = load(tiny_run_copy)
    assert classifier.operating_point == point
    predictions = classifier.predict(files)
    rows = classifier.predict_proba(files)
    referred = [prediction.referred for prediction in predictions]
    assert referred == list(uncertain(rows, point)) and 0 < sum(referred) < len(files)
    assert [prediction.label for prediction in predictions] == [run.classes[i] for i in decide(rows, point)]
    assert {p.label for p in predictions if p.referred} == set(run.classes)  # on both sides of the threshold
    assert [prediction.to_dict()["referred"] for prediction in predictions] == referred
    assert classifier.describe_referral() == point.describe_referral()
    assert classifier.describe_referral().startswith(f"uncertain — refer when {point.refer_band[0]:.4f} < p(ALL) <")

    given = load(tiny_run_copy, threshold=point.threshold)
    assert given.operating_point.refer_band is None and not any(p.referred for p in given.predict(files))
    assert not any(prediction.referred for prediction in classifier.predict(files, threshold=point.threshold))
    for line in (given.describe_referral(), classifier.describe_referral(threshold=point.threshold)):
        assert line.startswith("no refer band with a given threshold")


def test_a_smear_photograph_given_as_one_cell_says_how_many_white_cells_it_held(
    tiny_run: Path, smear_photo: Path, natural_crops: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Only the cell nearest its centre is classified: the prediction counts the photograph's white cells, and one
    warning names it and points to scan; a crop of one cell says one and warns of nothing."""
    classifier = load(tiny_run)
    photo, crop = classifier.predict([smear_photo, natural_crops[0]])
    assert (photo.white_cells, crop.white_cells) == (2, 1) and photo.to_dict()["white_cells"] == 2
    (warning,) = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warning.startswith(f"{smear_photo} holds 2 whole white cells, not one") and "Classifier.scan" in warning
    caplog.clear()
    assert classifier.predict(natural_crops[0])[0].white_cells == 1 and not caplog.records
