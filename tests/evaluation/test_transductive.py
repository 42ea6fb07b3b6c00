"""The transductive neighbourhood correction (Pan et al. 2019): the pure function on hand-made features, and the
labelled section it adds to evaluate_run on the suite's tiny run, apart from the plain numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from blastscope.errors import BlastscopeError
from blastscope.evaluation.evaluate import evaluate_run, format_summary, write_evaluation
from blastscope.evaluation.transductive import neighbourhood_correction, transductive_label


def _p(p_all: list[float]) -> np.ndarray:
    """Probabilities (N, 2) in (hem, all) order."""
    p = np.asarray(p_all, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def test_a_cell_whose_neighbours_all_say_all_moves_towards_all() -> None:
    # cells 0-2 point one way, 3-5 another (orthogonal): cell 0's two nearest are 1 and 2, never the HEM group
    features = np.array([[1, 0.1, 0], [1, 0, 0.1], [1, 0.8, 0], [0, 0, 1], [0, 0.1, 1], [0.05, 0, 1]])
    p = _p([0.3, 0.9, 0.8, 0.1, 0.2, 0.15])
    corrected = neighbourhood_correction(features, p, k=2, self_weight=0.5)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    s1, s2 = unit[0] @ unit[1], unit[0] @ unit[2]
    expected = 0.5 * 0.3 + 0.5 * (s1 * 0.9 + s2 * 0.8) / (s1 + s2)  # similarity-weighted mean of the neighbours
    assert corrected[0, 1] == pytest.approx(expected) and corrected[0, 1] > 0.5 > p[0, 1]
    assert corrected[3:, 1].max() < 0.25  # the HEM group stays HEM
    np.testing.assert_allclose(corrected.sum(axis=1), 1.0)


def test_the_default_self_weight_gives_the_cell_one_vote_among_k_plus_one() -> None:
    features = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # one direction: cosine ignores the length
    corrected = neighbourhood_correction(features, _p([0.0, 0.6, 0.9]), k=2)
    np.testing.assert_allclose(corrected[:, 1], [0.5, 0.5, 0.5])


def test_k_zero_or_self_weight_one_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    features, p = rng.normal(size=(6, 4)), _p(list(rng.uniform(size=6)))
    np.testing.assert_array_equal(neighbourhood_correction(features, p, k=0), p)
    np.testing.assert_array_equal(neighbourhood_correction(features, p, k=3, self_weight=1.0), p)
    assert not np.allclose(neighbourhood_correction(features, p, k=3), p)


def test_dissimilar_neighbours_get_no_weight() -> None:
    features = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # opposite and orthogonal: cosine <= 0
    p = _p([0.2, 0.9, 0.7])
    np.testing.assert_allclose(neighbourhood_correction(features, p, k=2, self_weight=0.0)[0], p[0])  # keeps its own
    features = np.array([[1.0, 0.0], [1.0, 0.1], [-0.5, 1.0]])  # one similar neighbour, one of negative cosine
    np.testing.assert_allclose(neighbourhood_correction(features, p, k=2, self_weight=0.0)[0], p[1])


@pytest.mark.parametrize(
    ("features", "p", "k", "self_weight", "message"),
    [
        (np.ones((3, 2)), _p([0.1, 0.2, 0.3]), 3, None, "0 <= k < N"),
        (np.ones((3, 2)), _p([0.1, 0.2, 0.3]), -1, None, "0 <= k < N"),
        (np.ones((3, 2)), _p([0.1, 0.2, 0.3]), 1.5, None, "0 <= k < N"),
        (np.ones((4, 2)), _p([0.1, 0.2, 0.3]), 1, None, "same N"),
        (np.ones(3), _p([0.1, 0.2, 0.3]), 1, None, "same N"),
        (np.array([[1.0, np.nan]] * 3), _p([0.1, 0.2, 0.3]), 1, None, "non-finite"),
        (np.ones((3, 2)), np.array([[0.5, 0.6]] * 3), 1, None, "sum to 1"),
        (np.ones((3, 2)), _p([0.1, 0.2, 0.3]), 1, 1.5, "self_weight"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    features: np.ndarray, p: np.ndarray, k: int, self_weight: float | None, message: str
) -> None:
    with pytest.raises(BlastscopeError, match=message) as caught:
        neighbourhood_correction(features, p, k, self_weight)
    assert "\n" not in str(caught.value)


def test_evaluate_adds_a_labelled_section_and_columns_and_leaves_the_plain_numbers(
    tiny_run: Path, tmp_path: Path
) -> None:
    stored = (tiny_run / "operating_point.json").read_bytes()
    plain = evaluate_run(tiny_run, bootstrap=20)
    result = evaluate_run(tiny_run, bootstrap=20, transductive_neighbours=3)
    assert plain.transductive is None and result.plain == plain.plain
    assert (tiny_run / "operating_point.json").read_bytes() == stored
    section = result.transductive
    assert section["label"] == transductive_label(3) and section["neighbours"] == 3
    assert section["operating_point"] == result.operating_point and section["bootstrap"]["n_resamples"] == 20
    assert section["metrics"]["weighted_f1"] is not None and section["subjects"]["subject_level"]["n"] > 0
    threshold = result.point.threshold
    moved = 0
    for row, before in zip(result.predictions, plain.predictions, strict=True):
        assert {key: row[key] for key in before} == before
        assert row["p_hem_transductive"] + row["p_all_transductive"] == pytest.approx(1.0)
        assert row["decided_label_transductive"] == ("all" if row["p_all_transductive"] >= threshold else "hem")
        moved += row["p_all_transductive"] != pytest.approx(row["p_all"], abs=1e-6)
    assert moved > 0
    summary = format_summary(result)
    assert transductive_label(3) in summary and "transductive weighted F1" in summary
    assert "\ntransductive (plain view, K=3)\n" + transductive_label(3) + "\n" in summary
    assert "transductive" not in format_summary(plain)
    out = write_evaluation(result, tmp_path / "eval")
    assert json.loads(out.read_text())["transductive"]["label"] == transductive_label(3)
    with (tmp_path / "eval" / "predictions.csv").open() as handle:
        header = next(csv.reader(handle))
    assert {"p_all_transductive", "p_hem_transductive", "decided_label_transductive", "referred_transductive"} <= set(
        header
    )


def test_the_neighbours_of_a_run_that_normalises_colours_per_person_are_found_on_normalised_cells(
    tiny_colour_run: Path,
) -> None:
    result = evaluate_run(tiny_colour_run, bootstrap=0, transductive_neighbours=3)
    assert result.transductive["neighbours"] == 3 and result.colour_people > 1
    assert all("p_all_transductive" in row for row in result.predictions)


@pytest.mark.parametrize("k", [0, 10_000])
def test_evaluate_refuses_too_few_or_too_many_neighbours(tiny_run: Path, k: int) -> None:
    with pytest.raises(BlastscopeError, match="transductive-neighbours"):
        evaluate_run(tiny_run, bootstrap=0, transductive_neighbours=k)
