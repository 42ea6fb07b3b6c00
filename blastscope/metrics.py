"""Classification metrics as plain JSON-able dicts, computed by scikit-learn and torchmetrics.

Class index order follows the cell table: for binary data the positive class (ALL for C-NMC) is the last one, so
``y_prob[:, -1]`` is p(positive). Binary predictions are ``p(positive) >= threshold``; with more than two classes the
prediction is the argmax, the threshold is ignored (stored as ``None``), sensitivity and specificity are ``None``, and
ROC-AUC / PR-AUC are one-vs-rest macro averages.
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


def display_name(label: str) -> str:
    """The name a person reads: C-NMC's folder names are the upper-case cell types of the challenge."""
    return DISPLAY_NAMES.get(label.lower(), label)


def predict_labels(y_prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices: positive when p(positive) >= threshold for binary data, else the most probable class."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.shape[1] == 2:
        return (y_prob[:, 1] >= threshold).astype(np.int64)
    return y_prob.argmax(axis=1).astype(np.int64)


def accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean(predict_labels(y_prob, threshold) == np.asarray(y_true)))


def weighted_f1(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    """The C-NMC 2019 challenge metric: per-class F1 weighted by class support."""
    num_classes = np.asarray(y_prob).shape[1]
    predicted, target = _tensors(predict_labels(y_prob, threshold), y_true)
    return float(tmf.multiclass_f1_score(predicted, target, num_classes, average="weighted", validate_args=False))


def sensitivity(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float | None:
    """Recall of the positive class (blasts found among blasts); ``None`` without positives or for multi-class."""
    if np.asarray(y_prob).shape[1] != 2 or not (np.asarray(y_true) == 1).any():
        return None
    predicted, target = _tensors(predict_labels(y_prob, threshold), y_true)
    return float(tmf.binary_recall(predicted, target, validate_args=False))


def specificity(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float | None:
    """Recall of the negative class (normal cells cleared among normal cells)."""
    if np.asarray(y_prob).shape[1] != 2 or not (np.asarray(y_true) == 0).any():
        return None
    predicted, target = _tensors(predict_labels(y_prob, threshold), y_true)
    return float(tmf.binary_specificity(predicted, target, validate_args=False))


def roc_auc(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float | None:
    """Threshold-free ranking quality (one-vs-rest macro for multi-class); ``None`` when a class is missing."""
    del threshold  # accepted so every metric function has the same signature
    y_prob = np.asarray(y_prob, dtype=np.float64)
    num_classes = y_prob.shape[1]
    if len(np.unique(y_true)) < num_classes:
        return None
    probabilities, target = _tensors(y_prob, y_true)
    if num_classes == 2:
        return float(tmf.binary_auroc(probabilities[:, 1], target, validate_args=False))
    return float(tmf.multiclass_auroc(probabilities, target, num_classes, average="macro", validate_args=False))


def pr_auc(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float | None:
    """Average precision of the positive class (one-vs-rest macro for multi-class); ``None`` when undefined."""
    del threshold
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    num_classes = y_prob.shape[1]
    if num_classes == 2:
        return float(skm.average_precision_score(y_true, y_prob[:, 1])) if (y_true == 1).any() else None
    if len(np.unique(y_true)) < num_classes:
        return None
    one_hot = np.eye(num_classes, dtype=np.int64)[y_true]
    return float(skm.average_precision_score(one_hot, y_prob, average="macro"))


SCALAR_METRICS: dict[str, Callable[..., float | None]] = {
    "weighted_f1": weighted_f1,
    "accuracy": accuracy,
    "roc_auc": roc_auc,
    "sensitivity": sensitivity,
    "specificity": specificity,
}
"""The metrics that get bootstrap confidence intervals, each ``fn(y_true, y_prob, threshold) -> float | None``.

They call torchmetrics without argument validation: a thousand resamples then take a second, not minutes of
scikit-learn's per-call input checks. The tests hold them equal to scikit-learn's values.
"""


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, classes: Sequence[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Every headline metric of one set of predictions, as plain Python types ready for ``json.dump``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_shapes(y_true, y_prob, classes)
    binary = len(classes) == 2
    labels = np.arange(len(classes))
    y_pred = predict_labels(y_prob, threshold)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    names = [display_name(label) for label in classes]
    return {
        "n": int(len(y_true)),
        "threshold": float(threshold) if binary else None,
        "classes": list(classes),
        "positive_class": classes[-1] if binary else None,
        "accuracy": accuracy(y_true, y_prob, threshold),
        "loss": float(skm.log_loss(y_true, _normalised(y_prob), labels=labels)),
        "weighted_f1": weighted_f1(y_true, y_prob, threshold),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "sensitivity": sensitivity(y_true, y_prob, threshold),
        "specificity": specificity(y_true, y_prob, threshold),
        "roc_auc": roc_auc(y_true, y_prob),
        "pr_auc": pr_auc(y_true, y_prob),
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
        "report": skm.classification_report(
            y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0
        ),
    }


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
