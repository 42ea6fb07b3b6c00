"""Every registered network: shapes, the backbone/head split, stages, Grad-CAM layer.

What is frozen in which phase is the training module's to decide: tests/training/test_module.py checks it for every
network.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blastscope.models import get_spec, list_models
from blastscope.models.attention import EfficientNetAttention
from blastscope.models.timm_classifiers import MultiScaleTimmClassifier
from blastscope.training.module import CellClassifierModule

ALL = list_models()


@pytest.mark.parametrize("name", ALL)
def test_forward_is_features_then_head_and_shows_gradcam_a_spatial_map(name, bundle_of, images_for):
    model = bundle_of(name).model
    images = images_for(name, batch=2)
    layer = model.gradcam_layer()
    assert any(module is layer for module in model.backbone.modules())
    maps = []
    handle = layer.register_forward_hook(lambda module, inputs, output: maps.append(output))
    with torch.no_grad():
        logits = model(images)
        split = model.forward_head(model.forward_features(images))
    handle.remove()
    assert logits.shape == (2, 2)
    torch.testing.assert_close(split, logits)
    assert maps[0].ndim == 4 and maps[0].shape[0] == 2


@pytest.mark.parametrize("name", ALL)
def test_stages_partition_the_backbone_in_order(name, bundle_of, images_for):
    model = bundle_of(name).model
    stage_params = [id(p) for stage in model.stages() for p in stage.parameters()]
    backbone_params = [id(p) for p in model.backbone.parameters()]
    assert len(stage_params) == len(set(stage_params)), "a parameter sits in two stages"
    assert set(stage_params) == set(backbone_params)
    order = {pid: index for index, pid in enumerate(backbone_params)}
    firsts = [order[id(next(stage.parameters()))] for stage in model.stages()]
    assert firsts == sorted(firsts), "stages are not listed from input to output"


@pytest.mark.parametrize("name", ALL)
def test_a_linear_head_is_offered_exactly_where_it_computes_the_logits(name, bundle_of, images_for):
    """``--head-fit logistic`` writes into what ``linear_head`` returns: its layers must give the head's logits."""
    model = bundle_of(name).model.eval()
    parts = model.linear_head()
    if name in ("efficientnet_b0_attention", "efficientnet_lite0_measured"):
        assert parts is None
        return
    fixed, linear = parts
    with torch.no_grad():
        features = model.forward_features(images_for(name, batch=2))
        through = nn.Sequential(*fixed, linear)(features)
        torch.testing.assert_close(through, model.forward_head(features))


@pytest.mark.parametrize("name", ALL)
def test_default_unfreeze_stages_fit_the_backbone(name, bundle_of):
    """The training module refuses a count above the stage count, so every model's own default must fit."""
    count = get_spec(name).defaults.unfreeze_stages
    assert count == "all" or 1 <= count <= len(bundle_of(name).model.stages())


def test_attention_head_resamples_positions_for_another_input_size(bundle_of):
    model = bundle_of("efficientnet_b0_attention").model
    assert isinstance(model, EfficientNetAttention) and model.head.pos_embed is not None
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_attention_head_runs_without_positions_and_trains_its_batchnorm(bundle_of):
    backbone = bundle_of("efficientnet_b0_attention").model.backbone
    model = EfficientNetAttention(backbone, num_classes=3, image_size=64, positional="none")
    assert model.head.pos_embed is None
    module = CellClassifierModule(
        model, classes=["a", "b", "c"], class_counts=[1, 1, 1], pretrained=True, frozen_epochs=1, finetune_epochs=1,
        unfreeze_stages=2, lr_head=1e-3, lr_backbone=1e-4, weight_decay=0.0,
    )  # fmt: skip
    module.train()
    module.apply_phase(0)  # phase 1: the backbone is frozen, the head learns
    logits = model(torch.randn(2, 3, 64, 64))
    logits.sum().backward()
    assert logits.shape == (2, 3)
    assert all(m.training for m in model.head.modules() if isinstance(m, nn.BatchNorm1d))
    assert model.head.attention.in_proj_weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())


def test_multiscale_features_are_the_stages_pooled_maps_then_lite0s_own_features(bundle_of, images_for):
    multiscale = bundle_of("efficientnet_lite0_multiscale").model
    assert isinstance(multiscale, MultiScaleTimmClassifier)
    plain = bundle_of("efficientnet_lite0").model
    plain.backbone.load_state_dict(multiscale.backbone.state_dict())
    images = images_for("efficientnet_lite0_multiscale", batch=2)
    with torch.no_grad():
        features = multiscale.forward_features(images)
        final = plain.forward_features(images)
    assert features.shape == (2, 40 + 112 + 320 + 1280)  # lite0's stages at strides 8, 16, 32, then its final map
    torch.testing.assert_close(features[:, -1280:], final)


def test_multiscale_head_standardises_every_feature_from_training_statistics(bundle_of, images_for):
    model = bundle_of("efficientnet_lite0_multiscale").model
    norm = model.head[0]
    assert isinstance(norm, nn.BatchNorm1d) and not norm.affine
    with torch.no_grad():
        features = model.forward_features(images_for("efficientnet_lite0_multiscale", batch=3)) * 50 + 7
        before = norm.running_mean.clone()
        model.head.train()
        model.forward_head(features)
        model.head.eval()
    assert not torch.equal(norm.running_mean, before)  # learned while the head trains, used as it is afterwards
