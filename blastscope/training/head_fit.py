"""Phase 1 in closed form: the linear head fitted as an L2-regularised logistic regression on the frozen backbone's
features, its strength chosen on the validation people (a linear probe).

Why: on cnmc-dev's subject-grouped folds, a logistic regression on frozen ImageNet features with its strength chosen
on each fold's validation people ranked unseen people's cells better than the same linear head trained with Adam and
stopped early (``benchmarks/RESULTS.md``, "Frozen ImageNet features rank unseen people better than fine-tuning").
Linear probes are fitted this way, the strength chosen on held-out data, in Kornblith, Shlens and Le 2019 ("Do
Better ImageNet Models Transfer Better?", CVPR); fine-tuning from such a head afterwards is LP-FT (Kumar et al. 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import TensorDataset

from blastscope.errors import BlastscopeError
from blastscope.models.base import CellClassifier

log = logging.getLogger(__name__)

STRENGTHS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""Inverse L2 strengths C tried, on standardised features (scikit-learn's ``C``: larger is weaker)."""
MAX_ITERATIONS = 5000


@dataclass(frozen=True)
class LogisticHeadFit:
    """What :func:`fit_logistic_head` chose and how it scored on validation.

    Attributes
    ----------
    C : float
        The inverse L2 strength kept (scikit-learn's ``C``: larger is weaker).
    val_loss : float
        Its validation cross-entropy, class-weighted as the run's ``val_loss`` is.
    Cs, val_losses : tuple of float
        Every C tried and its validation cross-entropy, in the same order.
    converged : bool
        False when lbfgs stopped at its iteration limit for some C (the kept head may then be short of its optimum).
    """

    C: float  # noqa: N815 (scikit-learn's name)
    val_loss: float
    Cs: tuple[float, ...]  # noqa: N815
    val_losses: tuple[float, ...]
    converged: bool

    def to_dict(self) -> dict:
        return {"method": "logistic", **asdict(self), "Cs": list(self.Cs), "val_losses": list(self.val_losses)}


@torch.no_grad()
def fit_logistic_head(
    model: CellClassifier,
    train: TensorDataset,
    val: TensorDataset,
    *,
    class_weights: torch.Tensor | None,
    batches: int,
    strengths: tuple[float, ...] = STRENGTHS,
) -> LogisticHeadFit:
    """Fit ``model``'s linear head to cached features in place, keeping the C with the lowest validation loss.

    The features are standardised over the training cells, one logistic regression (scikit-learn, lbfgs) is fitted
    per C, and the kept one is written into the head's linear layer with the standardisation folded in, so the
    network computes exactly its logits: binary problems as ``±z/2`` for the two classes, whose softmax is the
    regression's sigmoid. No feature is scaled up more than the median feature: a pooled channel that hardly varies
    over the training cells (over 5% of efficientnet_lite0's never fire on C-NMC cells) would otherwise be multiplied
    by up to a million, and with it the arithmetic noise between the bf16 features training caches and the fp32
    features prediction computes, and any drift of the backbone under fine-tuning. A batch norm of the head (without
    scale or shift) first gets the training features' mean and variance as its running statistics, counted as
    ``batches`` batches, as if one epoch had averaged them.

    Parameters
    ----------
    model : CellClassifier
        A network whose :meth:`~blastscope.models.base.CellClassifier.linear_head` is not None.
    train, val : TensorDataset
        ``(features (n, d), labels (n,))`` from :meth:`CellClassifier.forward_features` of the training and
        validation cells.
    class_weights : torch.Tensor or None
        ``(num_classes,)`` weights of each class in the fit and in the validation loss (the run's inverse class
        frequencies when it balances classes), or None for none.
    batches : int
        How many training batches the batch norm's statistics count for, so fine-tuning afterwards averages on.
    strengths : tuple of float
        The Cs to try, strongest regularisation first.

    Returns
    -------
    LogisticHeadFit

    Raises
    ------
    BlastscopeError
        For a head that is not linear, or a training part without cells of every class.
    """
    parts = model.linear_head()
    if parts is None:
        raise BlastscopeError(
            f"{type(model).__name__}'s head is not one linear layer on its features: fit it with --head-fit adam"
        )
    fixed, linear = parts
    classes = linear.out_features
    y_train, y_val = train.tensors[1].numpy(), val.tensors[1].numpy()
    missing = sorted(set(range(classes)) - set(y_train.tolist()))
    if missing:
        raise BlastscopeError(
            f"the training part has no cells of class index {missing[0]}: a logistic head needs every class there; "
            "add cells of it or fit the head with --head-fit adam"
        )
    _set_batch_norm_statistics(fixed, train.tensors[0].float(), batches)
    x_train, x_val = (_through(fixed, part.tensors[0].float()).double().numpy() for part in (train, val))
    scaler = StandardScaler().fit(x_train)
    scaler.scale_ = np.maximum(scaler.scale_, np.median(scaler.scale_))
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    weights = None if class_weights is None else class_weights.double().cpu().numpy()
    val_weight = None if weights is None else weights[y_val]
    fitted, losses, converged = [], [], True
    for strength in strengths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            regression = LogisticRegression(
                C=strength,
                class_weight=None if weights is None else dict(enumerate(weights)),
                max_iter=MAX_ITERATIONS,
            ).fit(x_train, y_train)
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        p_val = regression.predict_proba(x_val)
        losses.append(float(log_loss(y_val, p_val, sample_weight=val_weight, labels=list(range(classes)))))
        fitted.append(regression)
    best = int(np.argmin(losses))  # ties: the first, the strongest regularisation
    _write_linear(linear, fitted[best], scaler)
    if best in (0, len(strengths) - 1):
        log.warning(
            "note: the logistic head kept C=%g, the %s tried (validation loss %.3f): %s",
            strengths[best],
            "strongest L2 regularisation" if best == 0 else "weakest L2 regularisation",
            losses[best],
            "the features hardly separate the validation cells"
            if best == 0
            else "a weaker one might do better on validation",
        )
    if not converged:
        log.warning(
            "note: the logistic head did not converge in %d lbfgs iterations for some C; kept C=%g",
            MAX_ITERATIONS,
            strengths[best],
        )
    return LogisticHeadFit(strengths[best], losses[best], tuple(strengths), tuple(losses), converged)


def _set_batch_norm_statistics(fixed: list[nn.Module], features: torch.Tensor, batches: int) -> None:
    """Give each batch norm of ``fixed`` the statistics of what reaches it, as a cumulative average of ``batches``."""
    for index, layer in enumerate(fixed):
        if isinstance(layer, nn.BatchNorm1d):
            reaching = _through(fixed[:index], features)
            layer.running_mean.copy_(reaching.mean(0))
            layer.running_var.copy_(reaching.var(0) if len(reaching) > 1 else torch.ones_like(layer.running_var))
            layer.num_batches_tracked.fill_(max(batches, 1))


def _through(layers: list[nn.Module], features: torch.Tensor) -> torch.Tensor:
    """``features`` through ``layers`` in inference mode (dropout off, batch norms at their running statistics)."""
    for layer in layers:
        training = layer.training
        layer.eval()
        features = layer(features.to(_device(layer, features)))
        layer.train(training)
    return features.cpu()


def _device(layer: nn.Module, features: torch.Tensor) -> torch.device:
    tensor = next(iter([*layer.parameters(), *layer.buffers()]), None)
    return features.device if tensor is None else tensor.device


def _write_linear(linear: nn.Linear, regression: LogisticRegression, scaler: StandardScaler) -> None:
    """The regression on standardised features as ``linear``'s weight and bias on the raw ones."""
    coef = regression.coef_ / scaler.scale_
    intercept = regression.intercept_ - coef @ scaler.mean_
    if len(coef) == 1:  # binary: one decision function z for the second class; logits -z/2, +z/2
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise BlastscopeError("the logistic head came out non-finite (features with no spread?): use --head-fit adam")
    linear.weight.copy_(torch.as_tensor(coef, dtype=linear.weight.dtype))
    linear.bias.copy_(torch.as_tensor(intercept, dtype=linear.bias.dtype))
