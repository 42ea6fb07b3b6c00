"""TrainConfig: YAML round trip, refusal of unusable recipes, precision resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from blastscope.errors import BlastscopeError, DataError
from blastscope.training.config import SplitConfig, TrainConfig, lightning_precision, write_yaml
from blastscope.training.prepare import complete_recipe


def test_yaml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    config = TrainConfig(
        data="cells",
        model="resnet50",
        unfreeze_stages="all",
        split=SplitConfig(ratios=(0.5, 0.25, 0.25), by="image", folds=5, fold=3),
        augmentation={"rotation": False, "zoom_range": [0.8, 1.2]},
        cached_features=False,
        folded_frozen_stages=False,
        label_smoothing=0.1,
        class_balance="sampler",
    )
    path = tmp_path / "config.yaml"
    write_yaml(config.to_dict(), path)
    assert TrainConfig.load(path) == config


def test_run_keys_are_read_past_but_typos_refused(tmp_path: Path) -> None:
    data = {**TrainConfig(data="x").to_dict(), "classes": ["hem", "all"], "split_hash": "abc", "versions": {}}
    assert TrainConfig.from_dict(data).data == "x"
    with pytest.raises(BlastscopeError, match="unknown config keys lr_haed"):
        TrainConfig.from_dict({"lr_haed": 0.1})


def test_segment_defaults_to_auto_except_for_runs_recorded_before_it_existed() -> None:
    assert TrainConfig(data="x").segment == "auto"
    assert TrainConfig.from_dict({"data": "x"}).segment == "auto"  # a recipe written by hand
    recorded = {"data": "x", "preprocessing": {"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}}
    assert TrainConfig.from_dict(recorded).segment == "never"  # a run's config.yaml from before --segment
    assert TrainConfig.from_dict({**recorded, "segment": "always"}).segment == "always"


def test_crop_and_channels_default_to_the_whole_rgb_image_also_for_old_recipes() -> None:
    assert (TrainConfig(data="x").crop_fraction, TrainConfig(data="x").channels) == (1.0, "rgb")
    old = TrainConfig.from_dict({"data": "x", "segment": "never"})  # a config.yaml from before the options
    assert (old.crop_fraction, old.channels) == (1.0, "rgb")


def test_colour_norm_defaults_to_none_also_for_old_recipes() -> None:
    assert TrainConfig(data="x").colour_norm == "none"
    assert TrainConfig.from_dict({"data": "x", "segment": "never"}).colour_norm == "none"


def test_subject_colour_norm_passes_with_a_subject_split() -> None:
    assert _complete(data="x", colour_norm="subject", split=SplitConfig(by="subject")).validate().colour_norm == (
        "subject"
    )


def test_recipes_from_before_label_smoothing_and_class_balance_train_as_they_did() -> None:
    old = TrainConfig.from_dict({"data": "x", "segment": "never", "weight_decay": 1e-4})
    assert (old.label_smoothing, old.class_balance) == (0.0, "loss")
    assert (TrainConfig().label_smoothing, TrainConfig().class_balance) == (0.0, "loss")


def test_recipes_recorded_with_the_bf16_frozen_stages_switch_keep_its_setting() -> None:
    assert not TrainConfig.from_dict({"data": "x", "bf16_frozen_stages": False}).folded_frozen_stages
    assert TrainConfig.from_dict({"data": "x", "bf16_frozen_stages": True}).folded_frozen_stages


def test_a_logistic_head_fit_takes_one_frozen_epoch_whatever_the_models_default() -> None:
    from blastscope.training.prepare import complete_recipe

    assert complete_recipe(TrainConfig(data="x", head_fit="logistic")).epochs_frozen == 1
    assert complete_recipe(TrainConfig(data="x")).epochs_frozen == 10  # efficientnet_lite0's own
    assert TrainConfig.from_dict({"data": "x"}).head_fit == "adam"  # recipes recorded before it trained with Adam


def test_missing_data_tells_how_to_get_some() -> None:
    with pytest.raises(DataError, match="--data.*blastscope synth"):
        TrainConfig().validate()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"monitor": "accuracy"}, "monitor"),
        ({"epochs_frozen": 0, "epochs_finetune": 0}, "no epochs"),
        ({"unfreeze_stages": -1}, "unfreeze_stages"),
        ({"precision": "fp8"}, "precision"),
        ({"seed": -1}, "seed -1"),
        ({"batch_size": 0}, "batch size 0"),
        ({"lr_head": float("nan")}, "learning rates must be above 0"),  # passed `<= 0` and failed in sklearn
        ({"lr_finetune": float("inf")}, "learning rates must be above 0"),
        ({"weight_decay": -1.0}, "weight decay -1.0 is invalid: use --weight-decay 0"),  # a traceback from torch
        ({"weight_decay": float("nan")}, "weight decay nan is invalid"),
        ({"num_workers": -1}, "num_workers -1"),
        ({"patience": -1}, "patience -1 is invalid: use --patience 0"),
        ({"checkpoint_minutes": -1.0}, "checkpoint minutes -1.0 is invalid: use --checkpoint-minutes 0"),
        ({"checkpoint_minutes": float("nan")}, "checkpoint minutes nan is invalid"),
        ({"checkpoint_minutes": 1e300}, "checkpoint minutes 1e.300 is invalid: .* below 1.44e.12"),  # was a traceback
        ({"epochs_frozen": -1}, "negative"),
        ({"epochs_finetune": -2, "epochs_frozen": 3}, "negative"),
        ({"augmentation": {"spin": True}}, "augmentation settings"),
        ({"segment": "sometimes"}, "segment mode 'sometimes' is unknown"),
        ({"crop_fraction": 0.0}, "crop fraction 0.0 is invalid"),
        ({"channels": "lab"}, "input channels 'lab' are unknown"),
        ({"label_smoothing": 1.0}, "label smoothing 1.0 is invalid.*--label-smoothing"),
        ({"label_smoothing": -0.1}, "label smoothing -0.1 is invalid"),
        ({"label_smoothing": float("nan")}, "label smoothing nan is invalid"),
        ({"label_smoothing": True}, "label smoothing True is invalid"),
        ({"label_smoothing": "0.1"}, "label smoothing '0.1' is invalid"),
        ({"class_balance": "oversample"}, "class balance 'oversample' is unknown.*--class-balance loss|sampler|none"),
        ({"colour_norm": "image"}, "colour normalisation 'image' is unknown: use one of none, subject"),
        ({"head_fit": "sgd"}, "head fit 'sgd' is unknown: use --head-fit adam|logistic"),
        (
            {"head_fit": "logistic", "epochs_frozen": 3},
            "--head-fit logistic fits the head once.*not 3.*--epochs-frozen",
        ),
        ({"head_fit": "logistic", "cached_features": False}, "cached features: drop --no-cached-features"),
        ({"split": SplitConfig(ratios=(0.6, 0.2, float("nan")))}, "split ratios 0.6,0.2,nan are invalid"),
        (
            {"split": SplitConfig(ratios=(0.8, 0.1, 0.1), folds=5)},
            "--split-ratios has no effect with --folds 5: .*drop",
        ),
        ({"split": SplitConfig(csv="s.csv", folds=3)}, "--split-csv has no effect with --folds 3"),
        ({"split": SplitConfig(ratios=(0.6, 0.2, float("inf")))}, "split ratios 0.6,0.2,inf are invalid"),
        ({"split": SplitConfig(ratios=(0.7, 0.7, -0.4))}, r"split ratios 0.7,0.7,-0.4 are invalid: .*--split-ratios"),
        (
            {"colour_norm": "subject", "split": SplitConfig(by="image")},
            "--colour-norm subject .* needs a split by subject: drop --split-by image, or train with --colour-norm "
            "none",
        ),
        (
            {"colour_norm": "subject", "augmentation": {"stain_norm": "reinhard"}},
            "--colour-norm subject and --augment stain_norm=reinhard would normalise colours twice: drop --augment "
            "stain_norm",
        ),
    ],
)
def test_unusable_recipes_are_refused_before_training(changes: dict, message: str) -> None:
    with pytest.raises(BlastscopeError, match=message) as caught:
        _complete(data="x", **changes).validate()
    assert "\n" not in str(caught.value)


def test_checkpoint_minutes_0_is_a_recipe_without_the_mid_epoch_checkpoint() -> None:
    assert _complete(data="x", checkpoint_minutes=0).validate().checkpoint_minutes == 0


def _complete(**changes: object) -> TrainConfig:
    recipe = {"epochs_frozen": 1, "epochs_finetune": 1, "lr_head": 1e-3, "lr_finetune": 1e-4, "unfreeze_stages": 2}
    return TrainConfig(**{**recipe, **changes})  # type: ignore[arg-type]


def test_unset_recipe_fields_come_from_the_model_defaults() -> None:
    config = TrainConfig(data="x", lr_head=0.5).with_defaults({"lr_head": 1e-3, "epochs_frozen": 7})
    assert (config.lr_head, config.epochs_frozen) == (0.5, 7)


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.training import config as module

    assert lightning_precision("auto", "gpu") == "16-mixed"
    assert lightning_precision("32-true", "gpu") == "32-true"
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: True)
    assert lightning_precision("auto", "cpu") == "bf16-mixed"
    assert lightning_precision("auto", "cpu", cpu_bf16=False) == "32-true"  # EfficientNets train faster in fp32 on CPU
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: False)
    assert lightning_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert lightning_precision("auto", "auto") == "16-mixed"  # Lightning's accelerator "auto" picks the GPU


def test_a_bare_recipe_is_the_default_cpu_recipe_and_flags_still_win():
    bare = complete_recipe(TrainConfig(data="cells"))
    assert (bare.model, bare.image_size, bare.epochs_frozen, bare.epochs_finetune) == ("efficientnet_lite0", 448, 10, 0)
    given = complete_recipe(TrainConfig(data="cells", image_size=224, epochs_finetune=6))
    assert (given.image_size, given.epochs_frozen, given.epochs_finetune) == (224, 10, 6)
    other = complete_recipe(TrainConfig(data="cells", model="resnet50"))
    assert other.image_size is None  # the size its ImageNet weights were trained at


def test_a_fold_without_folds_is_refused_not_ignored() -> None:
    with pytest.raises(BlastscopeError, match=r"fold 1 needs --folds K .* not a fold$"):
        _complete(data="x", split=SplitConfig(fold=1)).validate()
    with pytest.raises(BlastscopeError, match="fold 3 does not exist: use 0..2"):
        _complete(data="x", split=SplitConfig(folds=3, fold=3)).validate()
    assert _complete(data="x", split=SplitConfig(folds=3, fold=2)).validate().split.fold == 2


def test_data_and_split_csv_are_recorded_absolute_so_a_rerun_elsewhere_reads_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data="cells", split=SplitConfig(csv="../splits/s.csv")).with_absolute_paths()
    assert (config.data, config.split.csv) == (str(tmp_path / "cells"), str(tmp_path.parent / "splits" / "s.csv"))
    assert config.with_absolute_paths() == config
    assert TrainConfig().with_absolute_paths() == TrainConfig()  # no data: validate() says how to get some
