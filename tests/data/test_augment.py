"""AugmentConfig: the augmentation and preprocessing switches of a recipe, as config.yaml records them."""

from __future__ import annotations

import pytest

from blastscope.data.augment import AugmentConfig, augment_config
from blastscope.errors import BlastscopeError


def test_config_round_trips_through_plain_values() -> None:
    config = AugmentConfig(shear=False, stain_norm="reinhard", denoise="median", zoom_range=[0.8, 1.2])
    assert config.zoom_range == (0.8, 1.2)
    assert AugmentConfig(**config.to_dict()) == config


@pytest.mark.parametrize(
    "bad",
    [
        {"stain_norm": "vahadane"},
        {"denoise": "gaussian"},
        {"stain_reference": "ref.png"},
        {"zoom_range": (1.2, 0.8)},
        {"shift_fraction": 0.7},
        {"rotation": "maybe"},  # `--augment rotation=maybe`: a string, truthy, so rotation stayed on unsaid
        {"hflip": 1},
        {"rotation_degrees": -30.0},  # failed deep inside torchvision after the data was read
        {"hed_strength": "abc"},
        {"brightness": float("nan")},
        {"saturation": True},
    ],
)
def test_bad_settings_are_user_errors(bad: dict) -> None:
    with pytest.raises(BlastscopeError):
        AugmentConfig(**bad)


def test_switches_off_keeps_the_preprocessing_asked_for() -> None:
    config = AugmentConfig.off(stain_norm="macenko", denoise="median")
    assert not (config.rotation or config.shift or config.shear or config.zoom or config.hflip or config.vflip)
    assert not (config.color_jitter or config.hed_jitter)
    assert (config.stain_norm, config.denoise) == ("macenko", "median")


def test_unknown_switches_in_a_config_yaml_are_a_one_line_error() -> None:
    assert augment_config({"hue": 0.0, "rotation": False}) == AugmentConfig(hue=0.0, rotation=False)
    with pytest.raises(BlastscopeError, match=r"augmentation settings \['hue', 'spin'\]") as caught:
        augment_config({"hue": 0.0, "spin": True})
    assert "\n" not in str(caught.value)
    assert ": unknown spin; use rotation, shift," in str(caught.value)  # the known ones, no internal class name
    assert "AugmentConfig" not in str(caught.value)
