"""The service with a run that normalises colours per person: a request's images are grouped into people as
``predict --person-by auto`` groups files, the answer says how, and too few of a person's are warned about, on /health
and in the answer the page shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from blastscope.api import load
from blastscope.data.cnmc import parse_name
from blastscope.inference.predict import FEW_CELLS
from blastscope.serving.app import create_app


@pytest.fixture(scope="module")
def classifier(tiny_colour_run: Path):
    return load(tiny_colour_run)


def upload(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]


@pytest.fixture(scope="module")
def two_subjects(synth_small: Path) -> list[Path]:
    """Three cells each of subjects 1 and H1, C-NMC names."""
    files = sorted(synth_small.rglob("UID_*.png"))
    of = {subject: [path for path in files if parse_name(path.name).subject == subject] for subject in ("1", "H1")}  # type: ignore[union-attr]
    return [*of["1"][:3], *of["H1"][:3]]


def probabilities_of(body: dict, classes: tuple[str, ...]) -> list[list[float]]:
    return [[entry["probabilities"][label] for label in classes] for entry in body["predictions"]]


def test_a_requests_cells_are_grouped_by_subject_as_predict_groups_them(classifier, two_subjects: list[Path]) -> None:
    assert len({parse_name(path.name).subject for path in two_subjects}) == 2  # type: ignore[union-attr]
    api = TestClient(create_app(classifier))
    health = api.get("/health").json()
    assert health["colour_norm"]["mode"] == "subject"
    assert "C-NMC names" in health["colour_norm"]["description"]
    assert "up to 32 of a person's cells per request" in health["colour_norm"]["description"]
    body = api.post("/predict?explain=true", files=upload(two_subjects)).json()
    assert body["people"] == "colours normalised per person: 2 subjects from C-NMC names"
    assert body["warning"].startswith(f"2 of 2 subjects have under {FEW_CELLS} images here (e.g. ")
    assert body["warning"].endswith(
        "upload up to 32 of a person's cells per request, and for more use `blastscope predict` on the person's folder"
    )
    assert [entry["person"] for entry in body["predictions"]] == [parse_name(p.name).subject for p in two_subjects]  # type: ignore[union-attr]
    got = probabilities_of(body, classifier.classes)
    np.testing.assert_allclose(got, classifier.predict_proba(two_subjects), atol=1e-6)  # predict's --person-by auto
    assert not np.allclose(got, classifier.predict_proba(two_subjects, people="all"), atol=1e-4)
    # each cell explained, or said in one line why its map is empty (a tiny random-init model's can be, on some CPUs)
    assert all(entry["gradcam_png"] or entry["gradcam_note"].startswith("no Grad-CAM") for entry in body["predictions"])
    assert any(entry["gradcam_png"] for entry in body["predictions"])


def test_a_request_without_cnmc_names_is_one_person_and_a_mix_is_refused(classifier, two_subjects: list[Path]) -> None:
    api = TestClient(create_app(classifier))
    plain = [("files", (f"cell{i}.png", path.read_bytes(), "image/png")) for i, path in enumerate(two_subjects[:4])]
    body = api.post("/predict", files=plain).json()
    assert body["people"] == "all 4 images taken as one person's: upload one person's cells per request"
    assert body["warning"].startswith("colour normalised over 4 images of one person, too few for steady colour ")
    expected = classifier.predict_proba(two_subjects[:4], people="all")
    np.testing.assert_allclose(probabilities_of(body, classifier.classes), expected, atol=1e-6)
    mixed = api.post("/predict", files=[*upload(two_subjects[:2]), plain[0]])
    assert mixed.status_code == 422
    assert mixed.json()["detail"].startswith("cell0.png: not a C-NMC cell name UID_<subject>_..., while the names of 2")


def test_a_run_without_it_says_colours_as_decoded_and_never_warns(tiny_run: Path, cell_images: list[Path]) -> None:
    api = TestClient(create_app(load(tiny_run)))
    assert api.get("/health").json()["colour_norm"] == {"mode": "none", "description": "colours as decoded"}
    body = api.post("/predict", files=upload(cell_images[:2])).json()
    assert body["warning"] is None and body["people"] is None
    assert all("person" not in entry for entry in body["predictions"])


def test_the_page_shows_the_warning_and_the_runs_grouping() -> None:
    static = Path(__file__).parents[2] / "blastscope" / "serving" / "static"
    script, page = (static / "app.js").read_text(), (static / "index.html").read_text()
    assert (
        "body.warning" in script
        and "body.people" in script
        and "health.colour_norm" in script
        and 'id="model-colour"' in page
    )
