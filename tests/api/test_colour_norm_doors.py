"""A run that normalises colours per person (``--colour-norm subject``) through the Python API: predict, the colour
statistics fitted once for chunks, Grad-CAM of the normalised image, and the cells of several smears as one person's."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.api import load
from blastscope.data.cnmc import parse_name
from blastscope.data.people import ONE_PERSON
from blastscope.data.synth import smear_field
from blastscope.errors import BlastscopeError
from blastscope.inference.predict import by_person, predict_logits, probabilities
from blastscope.inference.runners import TorchRunner
from blastscope.runs import load_run


@pytest.fixture(scope="module")
def cells(synth_small: Path) -> list[Path]:
    """Cells of four subjects, two classes, C-NMC names."""
    files = sorted(synth_small.rglob("UID_*.png"))
    return [path for path in files if parse_name(path.name).subject in {"1", "2", "H1", "H2"}]  # type: ignore[union-attr]


def expected(run_dir: Path, items: list, people: list[str]) -> np.ndarray:
    run = load_run(run_dir)
    logits = predict_logits(TorchRunner(run.model), items, run.preprocessing, run.transform, people=people)
    return probabilities(logits, run.operating_point.temperature)


def test_predict_groups_files_by_their_cnmc_subject(tiny_colour_run: Path, cells: list[Path]) -> None:
    classifier = load(tiny_colour_run)
    assert classifier.per_person
    subjects = [parse_name(path.name).subject for path in cells]  # type: ignore[union-attr]
    by_subject = expected(tiny_colour_run, cells, subjects)
    np.testing.assert_allclose(classifier.predict_proba(cells), by_subject, atol=1e-6)
    as_one = classifier.predict_proba(cells, people="all")
    np.testing.assert_allclose(as_one, expected(tiny_colour_run, cells, [ONE_PERSON] * len(cells)), atol=1e-6)
    assert not np.allclose(as_one, by_subject, atol=1e-4)  # the grouping changes what the network is fed


def test_statistics_fitted_once_give_chunks_the_answer_of_one_call(tiny_colour_run: Path, cells: list[Path]) -> None:
    classifier = load(tiny_colour_run)
    whole = classifier.predict_proba(cells)
    colour = classifier.fit_colour(cells)
    subjects = [parse_name(path.name).subject for path in cells]  # type: ignore[union-attr]
    chunks = [
        classifier.predict_proba(
            [classifier.prepare(path) for path in cells[i : i + 5]], people=subjects[i : i + 5], colour=colour
        )
        for i in range(0, len(cells), 5)
    ]
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-6)


def test_gradcam_explains_the_normalised_image(tiny_colour_run: Path, cells: list[Path], monkeypatch) -> None:
    import blastscope.api.classifier as module

    seen = []
    real = module.explain_gradcam
    monkeypatch.setattr(module, "explain_gradcam", lambda *args, **kw: seen.append(args[2]) or real(*args, **kw))
    classifier = load(tiny_colour_run)
    colour = classifier.fit_colour(cells, people="all")
    explanation = classifier.explain(cells[0], person=ONE_PERSON, colour=colour)
    normalised = by_person([cells[0]], classifier.preprocessing, people=[ONE_PERSON], colour=colour)[0].pixels
    np.testing.assert_array_equal(seen[0], normalised)
    assert not np.array_equal(seen[0], classifier.prepare(cells[0]).pixels)
    label = classifier.predict(cells[0], people=[ONE_PERSON], colour=colour)[0].label
    assert explanation.label == label
    classifier.explain(cells[0])  # one person per call by default: the image alone
    alone = by_person([cells[0]], classifier.preprocessing, people=[ONE_PERSON])[0].pixels
    np.testing.assert_array_equal(seen[1], alone)


def test_the_cells_of_several_smears_are_classified_as_one_persons(tiny_colour_run: Path) -> None:
    classifier = load(tiny_colour_run)
    photos = [Image.fromarray(smear_field(seed, height=320, width=320, white_cells=2).image) for seed in (0, 1)]
    together = classifier.scan_together(photos, names=["a", "b"])
    alone = [classifier.scan(photo, name=name) for photo, name in zip(photos, ["a", "b"], strict=True)]
    canvases = [cell.canvas for scan in alone for cell in scan.cells]
    assert canvases and [scan.file for scan in together] == ["a", "b"]  # type: ignore[union-attr]
    pooled = classifier._classify_cutouts(canvases, tta=False)
    got = [list(cell.probabilities.values()) for scan in together for cell in scan.cells]  # type: ignore[union-attr]
    np.testing.assert_allclose(got, pooled, atol=1e-6)
    each = [list(cell.probabilities.values()) for scan in alone for cell in scan.cells]
    assert len(alone[0].cells) and not np.allclose(got, each, atol=1e-5)


def test_a_grouping_is_logged_in_one_line_and_refusals_name_the_apis_options(
    tiny_colour_run: Path, cells: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    classifier = load(tiny_colour_run)
    plain = Path(shutil.copy(cells[0], tmp_path / "cell.png"))
    with caplog.at_level(logging.INFO, logger="blastscope.api.classifier"):
        classifier.predict_proba(cells)
        classifier.predict(plain)
    assert [record.getMessage() for record in caplog.records if record.name == "blastscope.api.classifier"] == [
        "colours normalised per person: 4 subjects from C-NMC names",
        "all 1 image taken as one person's: predict once per person",
    ]
    mixed = r"cell\.png: .*give subject .*; rename it, or use people='folder' or 'all'$"
    with pytest.raises(BlastscopeError, match=mixed):
        classifier.predict([cells[0], plain])
    with pytest.raises(BlastscopeError, match=r"cell\.png: not a C-NMC cell name.*people='folder' or 'all'$"):
        classifier.predict([plain], people="name")
