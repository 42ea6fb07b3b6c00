"""The service with a run that normalises colours per person: a request's images are one person's, and too few of
them are warned about, on /health and in the answer the page shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from blastscope.api import load
from blastscope.inference.predict import FEW_CELLS
from blastscope.serving.app import create_app


@pytest.fixture(scope="module")
def classifier(tiny_colour_run: Path):
    return load(tiny_colour_run)


def upload(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (path.name, path.read_bytes(), "application/octet-stream")) for path in paths]


def test_a_requests_images_are_one_person_and_too_few_are_warned_about(classifier, synth_small: Path) -> None:
    cells = sorted(synth_small.rglob("UID_*.png"))[:4]
    api = TestClient(create_app(classifier))
    health = api.get("/health").json()
    assert health["colour_norm"]["mode"] == "subject" and "one person's" in health["colour_norm"]["description"]
    body = api.post("/predict?explain=true", files=upload(cells)).json()
    assert body["warning"] == (
        f"colour normalised over 4 images of one person; upload all of a person's cells together (at least {FEW_CELLS})"
    )
    expected = classifier.predict_proba(cells, people="all")
    got = [[entry["probabilities"][label] for label in classifier.classes] for entry in body["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert all(entry["gradcam_png"] for entry in body["predictions"])


def test_a_run_without_it_says_colours_as_decoded_and_never_warns(tiny_run: Path, cell_images: list[Path]) -> None:
    api = TestClient(create_app(load(tiny_run)))
    assert api.get("/health").json()["colour_norm"] == {"mode": "none", "description": "colours as decoded"}
    assert api.post("/predict", files=upload(cell_images[:2])).json()["warning"] is None


def test_the_page_shows_the_warning_and_the_runs_grouping() -> None:
    static = Path(__file__).parents[2] / "blastscope" / "serving" / "static"
    script, page = (static / "app.js").read_text(), (static / "index.html").read_text()
    assert "body.warning" in script and "health.colour_norm" in script and 'id="model-colour"' in page
