"""Every registered network: shapes, the backbone/head split, stages, Grad-CAM layer, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from blastscope.errors import BlastscopeError
from blastscope.models import list_models
from blastscope.models.attention import EfficientNetAttention

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
def test_freeze_backbone_trains_the_head_only_and_keeps_batchnorm_statistics(name, bundle_of, images_for):
    model = bundle_of(name).model
    model.freeze_backbone()
    model.train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"head.{n}" for n, _ in model.head.named_parameters()}
    before = {n: b.clone() for n, b in model.backbone.named_buffers() if "running" in n}
    model(images_for(name, batch=2))
    after = dict(model.backbone.named_buffers())
    assert all(torch.equal(value, after[n]) for n, value in before.items())
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))
    assert model.head.training


@pytest.mark.parametrize("name", ALL)
def test_unfreeze_stages_unfreezes_exactly_the_last_n(name, bundle_of, images_for):
    model = bundle_of(name).model
    stages = model.stages()
    for count in (1, 2):
        model.unfreeze_stages(count)
        model.train()
        for index, stage in enumerate(stages):
            unfrozen = index >= len(stages) - count
            assert all(p.requires_grad == unfrozen for p in stage.parameters()), (count, index)
            batchnorms = [m for m in stage.modules() if isinstance(m, _BatchNorm)]
            assert all(m.training == unfrozen for m in batchnorms), (count, index)
    model.unfreeze_stages("all")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(BlastscopeError, match=f"has {len(stages)}"):
        model.unfreeze_stages(len(stages) + 1)


def test_attention_head_resamples_positions_for_another_input_size(bundle_of):
    model = bundle_of("efficientnet_b0_attention").model
    assert isinstance(model, EfficientNetAttention) and model.head.pos_embed is not None
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_attention_head_runs_without_positions_and_trains_its_batchnorm(bundle_of):
    backbone = bundle_of("efficientnet_b0_attention").model.backbone
    model = EfficientNetAttention(backbone, num_classes=3, image_size=64, positional="none")
    assert model.head.pos_embed is None
    model.freeze_backbone()
    model.train()
    logits = model(torch.randn(2, 3, 64, 64))
    logits.sum().backward()
    assert logits.shape == (2, 3)
    assert all(m.training for m in model.head.modules() if isinstance(m, nn.BatchNorm1d))
    assert model.head.attention.in_proj_weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
