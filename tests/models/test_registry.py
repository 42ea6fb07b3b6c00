"""The registry: names, per-model preprocessing from timm, size limits and training defaults."""

from __future__ import annotations

import pytest
from torch import nn

from blastscope.errors import BlastscopeError
from blastscope.models import (
    CellClassifier,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    model_display_name,
    parameter_count,
    register_model,
    registry,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)


def test_the_models_of_the_study_and_the_lite_variants_are_registered():
    assert sorted(list_models()) == sorted(
        [
            "cnn",
            "vgg16",
            "resnet50",
            "inception_v3",
            "xception",
            "efficientnet_b0",
            "efficientnet_b0_attention",
            "efficientnet_lite0",
            "efficientnet_lite1",
            "efficientnet_lite2",
            "efficientnet_lite0_multiscale",
            "efficientnet_lite0_measured",
        ]
    )


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(BlastscopeError, match=r"unknown model 'resnet18': choose one of .*efficientnet_lite0"):
        get_spec("resnet18")


@pytest.mark.parametrize(
    ("name", "mean", "size", "interpolation"),
    [
        ("resnet50", IMAGENET_MEAN, 224, "bicubic"),
        ("vgg16", IMAGENET_MEAN, 224, "bilinear"),
        ("efficientnet_b0", IMAGENET_MEAN, 224, "bicubic"),
        ("efficientnet_b0_attention", IMAGENET_MEAN, 224, "bicubic"),
        ("inception_v3", (0.5, 0.5, 0.5), 299, "bicubic"),
        ("xception", (0.5, 0.5, 0.5), 299, "bicubic"),
        ("efficientnet_lite0", (0.5, 0.5, 0.5), 224, "bicubic"),
        ("efficientnet_lite1", (0.5, 0.5, 0.5), 240, "bicubic"),
        ("efficientnet_lite2", (0.5, 0.5, 0.5), 260, "bicubic"),
        ("efficientnet_lite0_multiscale", (0.5, 0.5, 0.5), 224, "bicubic"),
        ("cnn", (0.5, 0.5, 0.5), 128, "bilinear"),
    ],
)
def test_each_model_brings_the_preprocessing_its_weights_were_trained_with(name, mean, size, interpolation):
    preprocessing = get_spec(name).preprocessing()
    assert preprocessing.mean == pytest.approx(mean)
    assert (preprocessing.input_size, preprocessing.interpolation) == (size, interpolation)


def test_image_size_overrides_only_the_input_size():
    default, small = get_spec("resnet50").preprocessing(), get_spec("resnet50").preprocessing(48)
    assert small.input_size == 48 and (small.mean, small.std, small.interpolation) == (
        default.mean,
        default.std,
        default.interpolation,
    )


@pytest.mark.parametrize("name", list_models())
def test_sizes_below_the_minimum_are_refused_before_building(name):
    minimum = get_spec(name).min_input_size
    with pytest.raises(BlastscopeError, match=f"too small for {name}: it needs at least {minimum} px"):
        create_model(name, pretrained="none", image_size=minimum - 1)


def test_inception_runs_at_its_minimum(bundle_of, images_for):
    assert get_spec("inception_v3").min_input_size == 75
    assert bundle_of("inception_v3").model(images_for("inception_v3", batch=1)).shape == (1, 2)


@pytest.mark.parametrize("name", list_models())
def test_training_defaults_are_usable(name):
    spec = get_spec(name)
    defaults = spec.defaults.to_dict()
    assert defaults["lr_finetune"] <= defaults["lr_head"]
    assert defaults["epochs_frozen"] + defaults["epochs_finetune"] > 0
    assert (spec.timm_name is not None) == (name != "cnn")
    assert (defaults["epochs_frozen"] == 0) == (name == "cnn"), "only the scratch model skips the frozen phase"


def test_parameter_count_on_meta_device_matches_the_built_model(bundle_of):
    for name in ("cnn", "efficientnet_b0_attention"):
        bundle = bundle_of(name)
        expected = sum(p.numel() for p in bundle.model.parameters())
        assert parameter_count(name, image_size=bundle.preprocessing.input_size) == expected


def test_register_model_adds_a_spec_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Tiny(CellClassifier):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.backbone = nn.Flatten()
            self.head = nn.Linear(3 * 8 * 8, num_classes)

        def forward_features(self, images):
            return self.backbone(images)

    decorate = register_model(
        "tiny", description="test", min_input_size=8, preprocessing=get_spec("cnn").default_preprocessing
    )
    decorate(lambda backbone, num_classes, image_size: Tiny(num_classes))
    assert isinstance(get_spec("tiny"), ModelSpec) and "tiny" in list_models()
    bundle = create_model("tiny", num_classes=3, image_size=8)
    assert bundle.model.head.out_features == 3 and bundle.weights_source == "random init"
    with pytest.raises(ValueError, match="registered twice"):
        decorate(lambda backbone, num_classes, image_size: Tiny(num_classes))


def test_display_names_tell_pretrained_from_random_init(bundle_of):
    assert model_display_name("resnet50", pretrained=False) == "resnet50 (random init)"
    assert model_display_name("resnet50", pretrained=True) == "resnet50 (pretrained)"
    bundle = bundle_of("cnn")
    assert bundle.display_name == model_display_name("cnn", bundle.pretrained) == "cnn (random init)"
