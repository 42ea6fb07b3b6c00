"""The C-NMC 2019 winner's neighbourhood correction, as an explicitly transductive evaluation mode.

Pan et al. corrected each test cell's label by the labels of its most similar *test* cells. A cell's result then
depends on which other cells are evaluated with it, so it is not a per-cell prediction: blastscope reports it only in a
separate, labelled section of ``evaluate`` (never the default, never used by ``predict``, ``serve`` or the export).

Source: Y. Pan, M. Liu, Y. Xia, D. Shen, "Neighborhood-correction algorithm for classification of normal and
malignant cells", in A. Gupta, R. Gupta (eds.), *ISBI 2019 C-NMC Challenge: Classification in Cancer Cell Imaging*,
Lecture Notes in Bioengineering, Springer, 2019, pp. 73-82; code: https://github.com/YongshengPan/ISBI-NMC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from blastscope.errors import BlastscopeError
from blastscope.evaluation.calibration import calibration_report
from blastscope.evaluation.scoring import evaluate_predictions
from blastscope.inference.decision import OperatingPoint
from blastscope.inference.predict import probabilities as scaled_probabilities

FEATURES = "the network's pooled penultimate features (CellClassifier.forward_features), cosine similarity"
SUFFIX = "_transductive"
"""Appended to the per-cell columns of ``predictions.csv``: ``p_<class>_transductive``, ``decided_label_...``."""


def transductive_label(k: int) -> str:
    """The line that labels every transductive number wherever it is shown."""
    return (
        f"transductive: each cell's probability mixed with its {k} most similar cells of this evaluation set "
        "(Pan et al. 2019); not a per-cell prediction, never the default"
    )


def neighbourhood_correction(
    features: np.ndarray, probabilities: np.ndarray, k: int, self_weight: float | None = None
) -> np.ndarray:
    """Each cell's class probabilities mixed with those of its ``k`` most similar other cells of the same set.

    ``corrected[i] = w * p[i] + (1 - w) * sum_j s_ij p[j] / sum_j s_ij`` over the ``k`` nearest other cells ``j`` by
    cosine similarity ``s_ij`` of the L2-normalised features (scikit-learn ``NearestNeighbors``, brute force). A
    neighbour with ``s_ij <= 0`` gets no weight; a cell with no positively similar neighbour keeps its own
    probabilities. Rows stay probability distributions (convex combinations).

    Follows Pan et al. (2019, module docstring), step 3 of their neighbourhood-correction algorithm, as far as the
    features blastscope has allow. Departures:

    - features: the paper encodes the fine-tuned ResNet's ``res5c_branch2a`` local descriptors of rotated and
      flipped views (72 in its public code) as improved Fisher vectors (8-component GMM fitted on the test
      descriptors) and compares them by inner product; here the evaluated network's own pooled penultimate features
      of the plain view, by cosine;
    - voting: the paper relabels hard labels by "weighted majority voting" of the most similar test cells (in its
      public code, counts over the 7 most similar, the cell itself included, with class-specific thresholds),
      repeated over several passes and two networks (ResNet-50 and -101); here one pass over
      probabilities, weighted by similarity, with the cell's own weight ``w`` (default ``1 / (k + 1)``: one vote
      among ``k + 1``, as the paper's vote counts the cell), so the operating point's threshold, ROC-AUC and
      subject-level scores apply unchanged.

    Parameters
    ----------
    features : array of shape (N, D)
        One feature vector per cell; finite.
    probabilities : array of shape (N, C)
        Each cell's class probabilities (temperature-scaled, as decided on); rows in [0, 1] summing to 1.
    k : int
        Neighbours per cell, 0 <= k < N; 0 returns the probabilities unchanged.
    self_weight : float in [0, 1], optional
        The cell's own share ``w``; 1 returns the probabilities unchanged. Default ``1 / (k + 1)``.

    Returns
    -------
    numpy.ndarray
        float64, shape (N, C): the corrected probabilities.

    Raises
    ------
    BlastscopeError
        For arrays of the wrong shape or with non-finite values, rows that are not probabilities, ``k`` outside
        [0, N), or ``self_weight`` outside [0, 1].
    """
    features = np.asarray(features, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if features.ndim != 2 or p.ndim != 2 or len(features) != len(p) or not len(p):
        raise BlastscopeError(
            f"neighbourhood correction needs features (N, D) and probabilities (N, C) of the same N >= 1 cells, not "
            f"{features.shape} and {p.shape}"
        )
    if not (np.isfinite(features).all() and np.isfinite(p).all()):
        raise BlastscopeError("neighbourhood correction got non-finite features or probabilities (NaN or inf)")
    if (p < 0).any() or (p > 1).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise BlastscopeError("neighbourhood correction needs probabilities in [0, 1] whose rows sum to 1")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < len(p):
        raise BlastscopeError(
            f"neighbourhood correction needs 0 <= k < N other cells: k={k!r} with N={len(p)} cells; give a smaller k"
        )
    weight = 1.0 / (k + 1) if self_weight is None else float(self_weight)
    if not 0.0 <= weight <= 1.0:
        raise BlastscopeError(f"neighbourhood correction needs self_weight in [0, 1], not {self_weight!r}")
    if k == 0 or weight == 1.0:
        return p.copy()
    index = NearestNeighbors(n_neighbors=int(k), metric="cosine", algorithm="brute").fit(normalize(features))
    distance, neighbours = index.kneighbors()  # without a query, each cell's k nearest *other* cells
    similarity = np.clip(1.0 - distance, 0.0, None)  # (N, k); cosine distance is 1 - cosine similarity
    total = similarity.sum(axis=1)
    similar = total > 0
    mean = np.einsum("nk,nkc->nc", similarity[similar], p[neighbours[similar]]) / total[similar, None]
    corrected = p.copy()
    corrected[similar] = weight * p[similar] + (1.0 - weight) * mean
    return corrected


def transductive_section(
    y_true: np.ndarray,
    features: np.ndarray,
    logits: np.ndarray,
    subjects: Sequence[str | None] | None,
    point: OperatingPoint,
    k: int,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], np.ndarray]:
    """Score the neighbourhood-corrected probabilities at ``point``, as the plain ones are scored.

    Parameters
    ----------
    y_true : array of int, shape (N,)
    features : array of shape (N, D)
        The cells' features (:func:`~blastscope.inference.predict.predict_features`).
    logits : array of shape (N, C) or (N, V, C)
        The cells' plain logits; corrected after temperature scaling at ``point``.
    subjects : sequence of str or None, length N, or None
    point : OperatingPoint
        Where the plain cells were decided; its threshold decides the corrected ones too.
    k : int
        Neighbours per cell (:func:`neighbourhood_correction`, default self weight).
    bootstrap, seed : int

    Returns
    -------
    section : dict
        ``label`` (:func:`transductive_label`), ``neighbours``, ``self_weight``, ``features`` and what
        :func:`~blastscope.evaluation.scoring.evaluate_predictions` gives, with ``calibration`` that of the corrected
        probabilities (no temperature applies to them again).
    logits : float64 array of shape (N, C)
        ``T * log(corrected)``: logits whose softmax at the point's temperature ``T`` is the corrected probabilities,
        for :func:`~blastscope.evaluation.run_evaluation.prediction_rows`.

    Raises
    ------
    BlastscopeError
        As :func:`neighbourhood_correction`.
    """
    corrected = neighbourhood_correction(features, scaled_probabilities(logits, point.temperature), k)
    as_logits = point.temperature * np.log(np.clip(corrected, np.finfo(np.float64).tiny, None))
    section = evaluate_predictions(y_true, as_logits, subjects, point, bootstrap, seed)
    section["calibration"] = calibration_report(np.asarray(y_true, dtype=np.int64), corrected)
    described = {"label": transductive_label(k), "neighbours": k, "self_weight": 1.0 / (k + 1), "features": FEATURES}
    return {**described, **section}, as_logits
