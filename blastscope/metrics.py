"""Classification metrics as plain JSON-able dicts, computed by scikit-learn and torchmetrics.

Metrics score decisions already made (``y_pred``, from ``blastscope.inference.decision.decide``: nothing here turns
probabilities into labels) and, for the ranking metrics and log loss, the probabilities behind them. For binary data
sensitivity, ROC-AUC and PR-AUC are about the positive class; with more than two classes sensitivity and specificity
are ``None`` and ROC-AUC / PR-AUC are one-vs-rest macro averages.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torchmetrics.functional.classification as tmf
from sklearn import metrics as skm

DISPLAY_NAMES = {"all": "ALL", "hem": "HEM"}


def class_display_name(label: str) -> str:
    """The name a person reads: C-NMC's folder names are the upper-case cell types of the challenge."""
    return DISPLAY_NAMES.get(label.lower(), label)


def format_threshold(threshold: float, decimals: int = 3) -> str:
    """A threshold as a person reads it: ``decimals`` places, more where those would round it to 0 or 1.

    ``p(ALL) ≥ 0.000`` reads as every cell called ALL and ``≥ 1.000`` as none, which a threshold of 0.0004 or 0.9996
    does not do; below the rounding it gets three significant digits (``0.000428``, ``4.28e-05``), above it as many
    places as keep it under 1 (``0.9996``). Only 0 and 1 themselves read ``0.000`` and ``1.000``.
    """
    text = f"{threshold:.{decimals}f}"
    if not 0.0 < threshold < 1.0 or 0.0 < float(text) < 1.0:
        return text
    if float(text) == 0.0:
        return f"{threshold:.3g}"
    while float(text) == 1.0:  # ends by 17 places: a float below 1 is at most 1 - 2**-53
        decimals += 1
        text = f"{threshold:.{decimals}f}"
    return text


def format_band(low: float, high: float, decimals: int = 3) -> tuple[str, str]:
    """A refer band's edges as :func:`format_threshold` writes thresholds, with places added until the two read apart:
    a band 0.4898-0.4903 read ``0.49 < p(ALL) < 0.49``, as if it referred nothing."""
    while (edges := (format_threshold(low, decimals), format_threshold(high, decimals)))[0] == edges[1] and low != high:
        decimals += 1  # ends: distinct floats differ by 17 places
    return edges


def metric_value(value: torch.Tensor) -> float:
    """A torchmetrics result as the number it stands for, without float32 noise in the JSON it is written to.

    torchmetrics divides in float32 whatever the inputs, and ``float()`` of a float32 spells out its binary error
    (0.800000011920929 for 4/5). The shortest decimal that reads back as the same float32 (numpy's repr, Steele &
    White / Dragon4) is the value to the precision it was computed at: 0.8.
    """
    return float(np.format_float_positional(value.numpy(force=True)[()], unique=True))


def accuracy(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float:
    """Share of cells whose decided class is their true class."""
    del y_prob, positive  # every scalar metric has the same signature (see ``SCALAR_METRICS``)
    return float(np.mean(np.asarray(y_pred) == np.asarray(y_true)))


def weighted_f1(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float:
    """The C-NMC 2019 challenge metric: per-class F1 weighted by class support (Gupta & Gupta, ISBI 2019)."""
    del positive
    num_classes = np.asarray(y_prob).shape[1]
    predicted, target = _tensors(y_pred, y_true)
    return metric_value(
        tmf.multiclass_f1_score(predicted, target, num_classes, average="weighted", validate_args=False)
    )


def sensitivity(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float | None:
    """Recall of the positive class (blasts found among blasts); ``None`` without positives or for multi-class."""
    del y_prob
    if positive is None or not (np.asarray(y_true) == positive).any():
        return None
    return _recall(y_true, y_pred, positive)


def specificity(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float | None:
    """Recall of the negative class (normal cells cleared among normal cells); ``None`` without negatives."""
    del y_prob
    if positive is None or not (np.asarray(y_true) == 1 - positive).any():
        return None
    return _recall(y_true, y_pred, 1 - positive)


def roc_auc(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float | None:
    """Threshold-free ranking quality of p(positive) (one-vs-rest macro for multi-class); ``None`` when a class is
    missing."""
    del y_pred
    y_prob = np.asarray(y_prob, dtype=np.float64)
    num_classes = y_prob.shape[1]
    if len(np.unique(y_true)) < num_classes:
        return None
    probabilities, target = _tensors(y_prob, y_true)
    if positive is not None:
        return metric_value(
            tmf.binary_auroc(probabilities[:, positive], (target == positive).long(), validate_args=False)
        )
    return metric_value(tmf.multiclass_auroc(probabilities, target, num_classes, average="macro", validate_args=False))


def pr_auc(y_true: np.ndarray, y_prob: np.ndarray, y_pred: np.ndarray, positive: int | None = 1) -> float | None:
    """Average precision of the positive class (one-vs-rest macro for multi-class); ``None`` when a class is missing
    (with positives alone every ranking scores 1.0, which says nothing)."""
    del y_pred
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    num_classes = y_prob.shape[1]
    if positive is not None:
        hits = y_true == positive
        return float(skm.average_precision_score(hits, y_prob[:, positive])) if 0 < hits.sum() < len(hits) else None
    if len(np.unique(y_true)) < num_classes:
        return None
    one_hot = np.eye(num_classes, dtype=np.int64)[y_true]
    return float(skm.average_precision_score(one_hot, y_prob, average="macro"))


MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray, "int | None"], "float | None"]

SCALAR_METRICS: dict[str, MetricFn] = {
    "weighted_f1": weighted_f1,
    "accuracy": accuracy,
    "roc_auc": roc_auc,
    "sensitivity": sensitivity,
    "specificity": specificity,
}
"""The metrics that get bootstrap confidence intervals, each ``fn(y_true, y_prob, y_pred, positive)``.

``y_true`` and ``y_pred`` are class indices (N,), ``y_prob`` probabilities (N, C), ``positive`` the positive class's
index (``None`` for multi-class). They call torchmetrics without argument validation: a thousand resamples then take a
second, not minutes of scikit-learn's per-call input checks. The tests hold them equal to scikit-learn's values.
"""


def decision_arrays(
    y_true: Sequence[int], y_prob: Sequence[Sequence[float]], y_pred: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and decisions as int64, probabilities as float64, one row per cell.

    Raises
    ------
    ValueError
        For arrays of different lengths.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if not len(y_true) == len(y_prob) == len(y_pred):
        raise ValueError(f"{len(y_true)} labels, {len(y_prob)} probability rows and {len(y_pred)} decisions differ")
    return y_true, y_prob, y_pred


def classification_metrics(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    positive_class: str | None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Every headline metric of one set of decisions, as plain Python types ready for ``json.dump``.

    Parameters
    ----------
    y_true, y_pred : arrays of int, shape (N,)
        True and decided class indices into ``classes`` (decisions come from ``inference.decision.decide``).
    y_prob : array of shape (N, C)
        The probabilities the decisions were made from (for log loss, ROC-AUC and PR-AUC).
    positive_class : str or None
        The class sensitivity, ROC-AUC and PR-AUC are about; ``None`` for multi-class data.
    threshold : float, optional
        The threshold that decided, recorded with the numbers.

    Raises
    ------
    ValueError
        For mismatched shapes, no predictions, or class indices outside ``classes``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_shapes(y_true, y_prob, classes)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has shape {y_pred.shape}, expected {y_true.shape}")
    positive = list(classes).index(positive_class) if positive_class is not None else None
    labels = np.arange(len(classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    names = [class_display_name(label) for label in classes]
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold) if positive is not None and threshold is not None else None,
        "classes": list(classes),
        "positive_class": positive_class,
        "accuracy": accuracy(y_true, y_prob, y_pred, positive),
        "loss": float(skm.log_loss(y_true, _normalised(y_prob), labels=labels)),
        "weighted_f1": weighted_f1(y_true, y_prob, y_pred, positive),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "sensitivity": sensitivity(y_true, y_prob, y_pred, positive),
        "specificity": specificity(y_true, y_prob, y_pred, positive),
        "roc_auc": roc_auc(y_true, y_prob, y_pred, positive),
        "pr_auc": pr_auc(y_true, y_prob, y_pred, positive),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "single_predicted_class": single_predicted_class(y_pred, classes),
        "report": skm.classification_report(
            y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0
        ),
    }


def single_predicted_class(y_pred: np.ndarray, classes: Sequence[str]) -> str | None:
    """The class every cell was decided as, when all decisions are alike (with more than one class to choose from).

    Such a model's accuracy and F1 only restate the class balance of the scored cells; reports must say so.
    """
    decided = np.unique(np.asarray(y_pred))
    return classes[int(decided[0])] if len(classes) > 1 and len(decided) == 1 else None


def one_class_warning(label: str, where: str = "cell") -> str:
    """The plain words every report uses for a model that calls every cell one class."""
    name = class_display_name(label)
    return (
        f"the model calls every {where} {name}: its accuracy and F1 only restate how many {where}s are {name}; "
        "it does not tell the classes apart at this operating point"
    )


def _recall(y_true: np.ndarray, y_pred: np.ndarray, label: int) -> float:
    predicted, target = _tensors(np.asarray(y_pred) == label, np.asarray(y_true) == label)
    return metric_value(tmf.binary_recall(predicted.long(), target.long(), validate_args=False))


def _tensors(values: np.ndarray, y_true: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(values)), torch.as_tensor(np.asarray(y_true, dtype=np.int64))


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``; a predicted class absent from them is no error here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def _normalised(y_prob: np.ndarray) -> np.ndarray:
    """Rows summing to one exactly: float32 softmax output is off by ~1e-7, which scikit-learn's log loss rejects."""
    clipped = np.clip(y_prob, 1e-15, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def _check_shapes(y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> None:
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), len(classes)):
        raise ValueError(
            f"y_prob has shape {y_prob.shape}, expected ({len(y_true)}, {len(classes)}) for classes {list(classes)}"
        )
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    if y_true.min() < 0 or y_true.max() >= len(classes):
        raise ValueError(f"y_true holds class indices outside 0..{len(classes) - 1}")
