"""The closed-form head fit: a logistic regression chosen on validation, written into the network's linear head."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import TensorDataset

from blastscope.cli.train import result_lines
from blastscope.errors import BlastscopeError
from blastscope.models.base import CellClassifier
from blastscope.runs import load_run
from blastscope.training import TrainConfig, resume, train
from blastscope.training.head_fit import STRENGTHS, fit_logistic_head


class FeatureHead(CellClassifier):
    """A network that is only its head: features in, logits out."""

    def __init__(self, head: nn.Sequential) -> None:
        super().__init__()
        self.backbone = nn.Identity()
        self.head = head

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return images


def _features(seed: int, n: int, classes: int = 2, d: int = 12) -> TensorDataset:
    """Overlapping Gaussian classes with features on very different scales (as pooled stage maps are)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    means = torch.randn(classes, d, generator=torch.Generator().manual_seed(99))
    scale = torch.logspace(-2, 2, d)
    features = (means[labels] + 1.5 * torch.randn(n, d, generator=generator)) * scale + 3.0
    return TensorDataset(features, labels)


def _weights(labels: torch.Tensor, classes: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=classes).float()
    return counts.sum() / (classes * counts)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_head_computes_the_chosen_regressions_probabilities(classes: int) -> None:
    train_set, val_set = _features(0, 90, classes), _features(1, 60, classes)
    model = FeatureHead(nn.Sequential(nn.Dropout(0.5), nn.Linear(12, classes)))
    weights = _weights(train_set.tensors[1][:80], classes)  # uneven counts: the class weights are not all 1
    train_set = TensorDataset(*(t[:80] for t in train_set.tensors))
    fit = fit_logistic_head(model, train_set, val_set, class_weights=weights, batches=3)

    assert fit.C in STRENGTHS and fit.val_loss == min(fit.val_losses) and fit.converged
    scaler = StandardScaler().fit(train_set.tensors[0].double().numpy())
    scaler.scale_ = np.maximum(scaler.scale_, np.median(scaler.scale_))  # no feature scaled up beyond the median
    reference = LogisticRegression(C=fit.C, class_weight=dict(enumerate(weights.tolist())), max_iter=5000)
    reference.fit(scaler.transform(train_set.tensors[0].double().numpy()), train_set.tensors[1].numpy())
    expected = reference.predict_proba(scaler.transform(val_set.tensors[0].double().numpy()))
    with torch.no_grad():
        got = model.eval().forward_head(val_set.tensors[0]).softmax(1).double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)
    sample_weight = weights.double().numpy()[val_set.tensors[1].numpy()]
    assert fit.val_loss == pytest.approx(log_loss(val_set.tensors[1].numpy(), expected, sample_weight=sample_weight))


def test_the_C_is_the_one_validation_scores_best_not_the_weakest() -> None:
    """Few training cells and many noisy features: the weakest L2 overfits, so validation picks a stronger one."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    features = torch.randn(200, 80, generator=generator)
    features[:, 0] += 1.0 * labels  # one informative feature among 80
    train_set = TensorDataset(features[:40], labels[:40])
    val_set = TensorDataset(features[40:], labels[40:])
    fit = fit_logistic_head(
        FeatureHead(nn.Sequential(nn.Linear(80, 2))), train_set, val_set, class_weights=None, batches=1
    )
    assert fit.C < STRENGTHS[-1] and fit.val_losses[-1] > fit.val_loss


def test_a_feature_that_hardly_varies_is_not_amplified(caplog: pytest.LogCaptureFixture) -> None:
    """Pooled channels that almost never fire vary by ~1e-6: standardised, their weight (and with it any noise
    between training's bf16 features and prediction's fp32 ones) grew a million-fold."""
    train_set, val_set = _features(0, 80), _features(1, 40)
    for part in (train_set, val_set):
        part.tensors[0][:, 0] = 1.0 + 1e-6 * part.tensors[1]  # separates the classes perfectly, by a hair
    model = FeatureHead(nn.Sequential(nn.Linear(12, 2)))
    fit = fit_logistic_head(model, train_set, val_set, class_weights=None, batches=1)
    median_spread = train_set.tensors[0].std(0).median()
    weights = model.head[0].weight.detach()
    assert weights.abs().max() < 50 / median_spread  # at most a typical feature's weight, not 1e6 times it
    assert fit.C in STRENGTHS


def test_a_C_at_the_end_of_the_range_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """Validation people unlike the training ones (the cue reversed): the strongest regularisation scores best, and
    the run says what that means."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 2
    features = torch.randn(60, 12, generator=generator)
    train_set = TensorDataset(features + 2.0 * labels[:, None], labels)
    reversed_cue = TensorDataset(features + 2.0 * (1 - labels[:, None]), labels)
    with caplog.at_level("WARNING"):
        fit = fit_logistic_head(
            FeatureHead(nn.Sequential(nn.Linear(12, 2))), train_set, reversed_cue, class_weights=None, batches=1
        )
    assert fit.C == STRENGTHS[0]
    assert "kept C=0.0001, the strongest L2 regularisation tried" in caplog.text
    assert "hardly separate the validation cells" in caplog.text


def test_a_batch_norm_in_the_head_takes_the_training_statistics_and_predictions_still_match() -> None:
    """The multi-scale head standardises with a batch norm before its linear layer: the fit gives that norm the
    training features' statistics (so fine-tuning afterwards averages on from them) and fits what comes out of it."""
    train_set, val_set = _features(0, 80), _features(1, 40)
    norm = nn.BatchNorm1d(12, momentum=None, affine=False)
    model = FeatureHead(nn.Sequential(norm, nn.Dropout(0.2), nn.Linear(12, 2)))
    fit_logistic_head(model, train_set, val_set, class_weights=None, batches=7)
    torch.testing.assert_close(norm.running_mean, train_set.tensors[0].mean(0))
    torch.testing.assert_close(norm.running_var, train_set.tensors[0].var(0))
    assert int(norm.num_batches_tracked) == 7 and model.head.training  # modes are left as they were

    with torch.no_grad():  # the same regression as one fitted to the batch norm's output
        standardised = [TensorDataset(norm.eval()(part.tensors[0]), part.tensors[1]) for part in (train_set, val_set)]
        plain = FeatureHead(nn.Sequential(nn.Linear(12, 2)))
        fit_logistic_head(plain, *standardised, class_weights=None, batches=7)
        torch.testing.assert_close(
            model.eval().forward_head(val_set.tensors[0]).softmax(1),
            plain.forward_head(standardised[1].tensors[0]).softmax(1),
            atol=1e-4,
            rtol=0,
        )


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2)), "not one linear layer.*--head-fit adam"),
        (nn.Sequential(nn.BatchNorm1d(12), nn.Linear(12, 2)), "not one linear layer"),  # a scale and shift that learn
        (nn.Sequential(nn.Linear(12, 2, bias=False)), "not one linear layer"),
    ],
)
def test_heads_that_are_not_a_linear_layer_are_refused(head: nn.Sequential, message: str) -> None:
    with pytest.raises(BlastscopeError, match=message):
        fit_logistic_head(FeatureHead(head), _features(0, 20), _features(1, 20), class_weights=None, batches=1)


def test_a_training_part_without_one_class_is_refused_in_one_line() -> None:
    one_class = TensorDataset(_features(0, 20).tensors[0], torch.zeros(20, dtype=torch.long))
    with pytest.raises(BlastscopeError, match="no cells of class index 1.*--head-fit adam") as caught:
        fit_logistic_head(
            FeatureHead(nn.Sequential(nn.Linear(12, 2))), one_class, _features(1, 20), class_weights=None, batches=1
        )
    assert "\n" not in str(caught.value)


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_logistic_head_run_fits_once_and_records_its_choice(tiny_config: Callable[..., TrainConfig]) -> None:
    """One frozen epoch at learning rate 0, the head exactly the regression fitted to the cached features."""
    from blastscope.data.datamodule import CellDataModule
    from blastscope.models import create_model
    from blastscope.training.features import extract_features

    recipe = {"head_fit": "logistic", "epochs_finetune": 0, "folded_frozen_stages": False}  # fp32 features here too
    run_dir = train(tiny_config(**recipe))
    rows = _history(run_dir)
    assert [(row["phase"], float(row["lr"])) for row in rows] == [("frozen", 0.0)]
    record = json.loads((run_dir / "metrics.json").read_text())["training"]["head_fit"]
    assert record["method"] == "logistic" and record["C"] in STRENGTHS
    assert float(rows[0]["val_loss"]) == pytest.approx(record["val_loss"], abs=1e-4)  # scored what it fitted
    said = f"its head was fitted as a logistic regression, C={record['C']:g} kept for the lowest validation loss"
    assert any(said in line for line in result_lines(run_dir))  # what `train` ends with

    trained = load_run(run_dir)
    bundle = create_model("efficientnet_lite0", image_size=32)
    datamodule = CellDataModule(
        trained.split.parts, ["hem", "all"], bundle.preprocessing, {}, batch_size=8, num_workers=0, seed=0
    )
    parts = {
        part: extract_features(bundle.model, datamodule.dataset(part, False), batch_size=8) for part in ("train", "val")
    }
    weights = _weights(parts["train"].tensors[1], 2)
    again = fit_logistic_head(bundle.model, parts["train"], parts["val"], class_weights=weights, batches=1)
    assert again.C == record["C"]
    torch.testing.assert_close(trained.model.head[-1].weight, bundle.model.head[-1].weight, atol=1e-4, rtol=1e-3)


def test_fine_tuning_starts_from_the_fitted_head_and_a_resumed_run_keeps_its_record(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    run_dir = train(tiny_config(head_fit="logistic", epochs_finetune=1))
    rows = _history(run_dir)
    assert [row["phase"] for row in rows] == ["frozen", "finetune"] and float(rows[0]["lr"]) == 0.0
    assert float(rows[1]["lr"]) > 0
    recorded = json.loads((run_dir / "metrics.json").read_text())["training"]["head_fit"]
    (run_dir / "metrics.json").unlink()  # stopped while scoring: resuming re-scores from the checkpoints
    resume(run_dir)
    assert json.loads((run_dir / "metrics.json").read_text())["training"]["head_fit"] == recorded


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pretrained": "none"}, "--head-fit logistic .* random weights.*--head-fit adam"),
        ({"model": "efficientnet_b0_attention"}, "efficientnet_b0_attention's is not: use --head-fit adam"),
    ],
    ids=["random-weights", "attention-head-by-its-registered-name"],
)
def test_a_model_it_cannot_fit_is_refused_before_a_run_folder_is_made(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    out = tmp_path / "refused"
    with pytest.raises(BlastscopeError, match=message):
        train(tiny_config(head_fit="logistic", out=str(out), **overrides))
    assert not out.exists() or not any(out.iterdir())
