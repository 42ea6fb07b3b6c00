"""The metrics must be scikit-learn's numbers, keyed and typed so they can be written as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from blastscope.inference.decision import OperatingPoint, decide
from blastscope.metrics import (
    SCALAR_METRICS,
    class_display_name,
    classification_metrics,
    format_band,
    format_threshold,
    one_class_warning,
)

CLASSES = ("hem", "all")
POINT = OperatingPoint.default(CLASSES)  # positive class "all", threshold 0.5


def _decided(y_prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return decide(y_prob, POINT.with_threshold(threshold, "test"))


@pytest.fixture
def binary_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, size=200)
    p_all = np.clip(0.35 * y_true + rng.uniform(0, 0.65, size=200), 0, 1)
    return y_true, np.stack([1 - p_all, p_all], axis=1)


def test_binary_metrics_agree_with_sklearn(binary_case: tuple[np.ndarray, np.ndarray]) -> None:
    y_true, y_prob = binary_case
    threshold = 0.4
    y_pred = (y_prob[:, 1] >= threshold).astype(int)  # the rule by hand, independent of decide()
    np.testing.assert_array_equal(_decided(y_prob, threshold), y_pred)
    result = classification_metrics(y_true, y_prob, y_pred, CLASSES, "all", threshold=threshold)

    assert result["n"] == 200 and result["threshold"] == threshold and result["positive_class"] == "all"
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["loss"] == pytest.approx(skm.log_loss(y_true, y_prob))
    assert result["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert result["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert result["sensitivity"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=1))
    assert result["specificity"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=0))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_prob[:, 1]))
    assert result["pr_auc"] == pytest.approx(skm.average_precision_score(y_true, y_prob[:, 1]))
    assert result["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred).tolist()
    assert result["per_class"]["all"]["precision"] == pytest.approx(skm.precision_score(y_true, y_pred))
    assert result["per_class"]["hem"]["support"] == int((y_true == 0).sum())
    assert "ALL" in result["report"] and "HEM" in result["report"]
    json.dumps(result)  # plain types only


@pytest.mark.parametrize("seed", range(5))
def test_fast_bootstrap_metrics_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 300)
    p_all = np.round(rng.uniform(0, 1, 300), 1)  # many ties, and values exactly at the threshold
    y_prob = np.stack([1 - p_all, p_all], 1)
    y_pred = (p_all >= 0.5).astype(int)
    np.testing.assert_array_equal(_decided(y_prob), y_pred)  # ties at 0.5 go to the positive class
    assert SCALAR_METRICS["accuracy"](y_true, y_prob, y_pred, 1) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert SCALAR_METRICS["weighted_f1"](y_true, y_prob, y_pred, 1) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="weighted")
    )
    assert SCALAR_METRICS["sensitivity"](y_true, y_prob, y_pred, 1) == pytest.approx(skm.recall_score(y_true, y_pred))
    assert SCALAR_METRICS["specificity"](y_true, y_prob, y_pred, 1) == pytest.approx(
        skm.recall_score(y_true, y_pred, pos_label=0)
    )
    assert SCALAR_METRICS["roc_auc"](y_true, y_prob, y_pred, 1) == pytest.approx(skm.roc_auc_score(y_true, p_all))


def test_weighted_f1_when_one_class_is_never_predicted() -> None:
    y_true, y_prob = np.array([0, 0, 1, 1, 1]), np.tile([0.2, 0.8], (5, 1))
    expected = skm.f1_score(y_true, np.ones(5, dtype=int), average="weighted", zero_division=0)
    assert SCALAR_METRICS["weighted_f1"](y_true, y_prob, _decided(y_prob), 1) == pytest.approx(expected)


def test_known_confusion_matrix_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1, 1])
    p_all = np.array([0.1, 0.6, 0.2, 0.9, 0.8, 0.3, 0.5])
    y_prob = np.stack([1 - p_all, p_all], 1)
    result = classification_metrics(y_true, y_prob, _decided(y_prob), CLASSES, "all")
    # rows are the truth: 2 HEM cleared, 1 HEM flagged; 1 ALL missed, 3 ALL found (0.5 counts as ALL)
    assert result["confusion_matrix"] == [[2, 1], [1, 3]]
    assert result["sensitivity"] == pytest.approx(3 / 4)
    assert result["specificity"] == pytest.approx(2 / 3)


def test_metrics_are_written_as_the_numbers_they_stand_for_not_float32_noise() -> None:
    """torchmetrics computes in float32: 4/5 must reach the JSON as 0.8, not 0.800000011920929."""
    y_true = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p_all = np.array([0.8, 0.7, 0.9, 0.6, 0.4, 0.1, 0.3, 0.2, 0.35, 0.55])
    y_prob = np.stack([1 - p_all, p_all], 1)
    result = classification_metrics(y_true, y_prob, _decided(y_prob), CLASSES, "all")
    assert [result[key] for key in ("weighted_f1", "sensitivity", "specificity")] == [0.8, 0.8, 0.8]
    assert '"weighted_f1": 0.8,' in json.dumps(result)


def test_single_class_labels_leave_undefined_metrics_empty() -> None:
    y_prob = np.array([[0.2, 0.8], [0.7, 0.3]])
    result = classification_metrics(np.array([1, 1]), y_prob, _decided(y_prob), CLASSES, "all")
    assert result["roc_auc"] is None and result["specificity"] is None
    assert result["pr_auc"] is None  # positives alone: every ranking would score 1.0
    assert result["sensitivity"] == pytest.approx(0.5)


def test_multiclass_uses_argmax_and_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    y_true = np.repeat([0, 1, 2], 20)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[y_true]
    y_prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y_pred = decide(y_prob, OperatingPoint.default(("a", "b", "c")))
    np.testing.assert_array_equal(y_pred, y_prob.argmax(1))
    result = classification_metrics(y_true, y_prob, y_pred, ("a", "b", "c"), None, threshold=0.9)

    assert result["threshold"] is None and result["sensitivity"] is None
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_prob.argmax(1)))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_prob, multi_class="ovr"))
    assert len(result["confusion_matrix"]) == 3


def test_threshold_moves_binary_predictions() -> None:
    y_prob = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert _decided(y_prob, 0.5).tolist() == [0, 1]
    assert _decided(y_prob, 0.25).tolist() == [1, 1]
    y_true = np.array([0, 1])
    assert classification_metrics(y_true, y_prob, _decided(y_prob, 0.25), CLASSES, "all", 0.25)["accuracy"] == 0.5


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.array([0, 1]), np.ones((3, 2)) / 2, np.array([0, 1]), CLASSES, "all")
    with pytest.raises(ValueError, match="y_pred"):
        classification_metrics(np.array([0, 1]), np.ones((2, 2)) / 2, np.array([0, 1, 1]), CLASSES, "all")


def test_display_names() -> None:
    assert class_display_name("all") == "ALL" and class_display_name("hem") == "HEM"
    assert class_display_name("Tumour") == "Tumour"


def test_a_threshold_reads_zero_or_one_only_when_it_is() -> None:
    """A threshold of 0.0004 read 'p(ALL) ≥ 0.000', as if every cell were called ALL."""
    assert [format_threshold(t) for t in (0.0, 0.5, 0.427797, 1.0)] == ["0.000", "0.500", "0.428", "1.000"]
    assert [format_threshold(t) for t in (0.0004, 0.000123456, 4.28e-5)] == ["0.0004", "0.000123", "4.28e-05"]
    assert [format_threshold(t) for t in (0.9996, 0.99996, 1 - 2**-53)] == ["0.9996", "0.99996", "0.9999999999999999"]
    assert format_threshold(0.42779, 4) == "0.4278" and format_threshold(0.00004, 4) == "4e-05"


def test_a_refer_band_reads_as_two_edges_apart_wherever_it_is_shown() -> None:
    """A band 0.4898-0.4903 read '0.49 < p(ALL) < 0.49' on the model card, as if it referred nothing."""
    assert format_band(0.4898, 0.4903) == ("0.4898", "0.4903")
    assert format_band(0.31, 0.72) == ("0.310", "0.720") and format_band(0.31, 0.72, 4) == ("0.3100", "0.7200")
    assert format_band(0.5, 0.5) == ("0.500", "0.500")  # the empty band ends at once
    assert format_band(0.00001, 0.00002) == ("1e-05", "2e-05")


def test_a_model_that_calls_every_cell_one_class_is_named() -> None:
    y_true = np.array([0, 1, 1, 0, 1])
    y_prob = np.tile([0.3, 0.7], (5, 1))
    result = classification_metrics(y_true, y_prob, np.ones(5, dtype=int), CLASSES, "all", 0.5)
    assert result["single_predicted_class"] == "all"
    mixed = classification_metrics(y_true, y_prob, np.array([0, 1, 1, 1, 1]), CLASSES, "all", 0.5)
    assert mixed["single_predicted_class"] is None
    assert "calls every cell ALL" in one_class_warning("all")
