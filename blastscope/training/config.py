"""The training recipe as one YAML-serialisable dataclass, so every run can be repeated from its config.yaml."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from blastscope.data.augment import augment_config
from blastscope.data.preprocessing import (
    Preprocessing,
    check_channels,
    check_colour_norm,
    check_crop_fraction,
    check_red_cell_diameter,
    check_segment_mode,
)
from blastscope.data.split import SPLIT_BY
from blastscope.errors import BlastscopeError, DataError
from blastscope.hardware import cpu_has_native_bf16
from blastscope.storage import write_atomically

MONITORS = {"val_loss": "min", "val_weighted_f1": "max"}
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard", "mlflow")
CLASS_BALANCE = ("loss", "sampler", "none")
HEAD_FITS = ("adam", "logistic")
MAX_CHECKPOINT_MINUTES = timedelta.max / timedelta(minutes=1)  # the longest interval Lightning's timer can hold
RATIOS_HINT = "give three fractions >= 0 for train,val,test summing to 1, e.g. 0.6,0.2,0.2"

# Keys that a run adds to its config.yaml on top of the recipe; a re-run reads past them.
RESOLVED_KEYS = (
    "classes",
    "attribution",
    "preprocessing",
    "weights_source",
    "weights_pretrained",
    "weights_sha256",
    "split_hash",
    "split_content_hash",
    "split_subject_level",
    "resolved_precision",
    "resolved_positive_class",
    "versions",
    "run_dir",
)


@dataclass
class SplitConfig:
    """How cells are divided into train/val/test: ratios, a saved split.csv, or one fold of k-fold CV.

    ``by`` None splits by subject when every cell has one, else by image.
    """

    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2)
    csv: str | None = None
    by: str | None = None
    folds: int | None = None
    fold: int = 0


@dataclass
class TrainConfig:
    """Everything that decides a training run; defaults follow the two-phase transfer-learning recipe.

    ``positive_class`` names the class whose sensitivity and threshold the run is about (``--positive-class``, matched
    ignoring case and saved in the class's own spelling). Left ``None``, training reads it from the class names (ALL
    of ALL/HEM; see :func:`blastscope.data.classes.positive_class`). Either way the run records the class it resolved
    to as ``resolved_positive_class`` in its config.yaml and in its operating point, and ``resume`` keeps it.
    Multi-class data has none.

    ``segment`` (``auto``, ``always`` or ``never``) says whether cells are cut out of their background before
    resizing (:func:`blastscope.segmentation.cell_for_model`); the run records it in its preprocessing, and every
    later ``evaluate``, ``predict``, ``serve`` and export applies it the same way. ``red_cell_diameter`` (px of the
    input images; None measures it on each image) is the scale segmentation cuts cells out at, recorded with it.

    ``crop_fraction`` (the centred square window kept before resizing, a share of the shorter side; 1 keeps the whole
    image) and ``channels`` (``rgb``, ``od`` or ``hed``: what the network is fed) are recorded in the preprocessing
    the same way.

    ``colour_norm`` (``none`` or ``subject``) says whether each cell's colours are normalised by the statistics of all
    cells of its person (:data:`~blastscope.data.preprocessing.COLOUR_NORMS`), recorded in the preprocessing too. It
    needs a split by subject (each person's cells in one part, so a part holds all of them) and replaces
    ``augmentation.stain_norm``: the two normalisations are refused together.

    ``label_smoothing`` ε mixes the training targets with the uniform distribution, (1 - ε) one-hot + ε / k
    (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision", section 7); 0 trains on the
    one-hot labels. ``class_balance`` says how the training split's class imbalance is evened out: ``loss`` weights
    the loss by inverse class frequency, ``sampler`` draws the classes equally often with an unweighted loss,
    ``none`` does neither. Recipes recorded before these settings read as 0 and ``loss``, which is how they trained.

    ``head_fit`` says how phase 1 fits the head on the frozen backbone: ``adam`` trains it for ``epochs_frozen``
    epochs at ``lr_head``; ``logistic`` fits it once, in closed form, as an L2-regularised logistic regression whose
    strength is chosen on the validation cells (:mod:`blastscope.training.head_fit`), in a frozen phase of one epoch
    (``epochs_frozen`` 1, its default then) on cached features. Recipes recorded before it read as ``adam``.
    """

    data: str | None = None
    positive_class: str | None = None
    model: str = "efficientnet_lite0"
    pretrained: str = "auto"
    image_size: int | None = None
    epochs_frozen: int | None = None
    epochs_finetune: int | None = None
    lr_head: float | None = None
    lr_finetune: float | None = None
    unfreeze_stages: int | str | None = None
    batch_size: int = 32
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    class_balance: str = "loss"
    head_fit: str = "adam"
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    augmentation: dict[str, Any] = field(default_factory=dict)
    segment: str = "auto"
    red_cell_diameter: float | None = None
    crop_fraction: float = 1.0
    channels: str = "rgb"
    colour_norm: str = "none"
    precision: str = "auto"
    channels_last: bool = True
    folded_frozen_stages: bool = True
    num_workers: int = 2
    cached_features: bool = True
    monitor: str = "val_loss"
    patience: int = 5
    checkpoint_minutes: float = 10.0
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "auto"
    logger: str = "csv"
    out: str = "runs"
    progress: bool = True

    def with_absolute_paths(self) -> TrainConfig:
        """The recipe with ``data`` and ``split.csv`` as absolute paths: config.yaml must name the files the run read
        wherever it is re-run (``--config``) or resumed from, not whatever those names mean in another folder."""
        split = dataclasses.replace(self.split, csv=_absolute(self.split.csv))
        return dataclasses.replace(self, data=_absolute(self.data), split=split)

    @property
    def total_epochs(self) -> int:
        return (self.epochs_frozen or 0) + (self.epochs_finetune or 0)

    def with_defaults(self, defaults: dict[str, Any]) -> TrainConfig:
        """Fill the recipe fields left unset (None) from the model's own training defaults."""
        unset = {key: value for key, value in defaults.items() if getattr(self, key, 0) is None}
        return dataclasses.replace(self, **unset)

    def validate(self) -> TrainConfig:
        """Reject a recipe that cannot run, before any data is read."""
        if self.data is None:
            raise DataError("no dataset given: pass --data DIR (or run `blastscope synth OUT` to make a synthetic one)")
        if self.positive_class is not None and (not isinstance(self.positive_class, str) or not self.positive_class):
            raise BlastscopeError(f"positive class {self.positive_class!r} is invalid: name one of the data's classes")
        if self.monitor not in MONITORS:
            raise BlastscopeError(f"monitor {self.monitor!r} is unknown: use one of {', '.join(MONITORS)}")
        if self.precision not in PRECISIONS:
            raise BlastscopeError(f"precision {self.precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
        if self.logger not in LOGGERS:
            raise BlastscopeError(f"logger {self.logger!r} is unknown: use one of {', '.join(LOGGERS)}")
        if not valid_split_ratios(self.split.ratios):
            ratios = ",".join(f"{ratio:g}" for ratio in self.split.ratios)
            raise BlastscopeError(f"split ratios {ratios} are invalid: {RATIOS_HINT} (--split-ratios)")
        if self.split.by not in (None, *SPLIT_BY):
            raise BlastscopeError(f"split by {self.split.by!r} is unknown: use subject or image")
        if None in (self.epochs_frozen, self.epochs_finetune, self.lr_head, self.lr_finetune, self.unfreeze_stages):
            raise BlastscopeError("recipe incomplete: fill it from the model's defaults (with_defaults) first")
        if self.seed < 0:
            raise BlastscopeError(f"seed {self.seed} is invalid: use 0 or more")
        if self.batch_size < 1:
            raise BlastscopeError(f"batch size {self.batch_size} is invalid: use 1 or more")
        if self.patience < 0:  # Lightning's early stopping reads a negative patience as 0 unsaid
            raise BlastscopeError(
                f"patience {self.patience} is invalid: use --patience 0 (stop at the first epoch "
                "without improvement) or more"
            )
        if not 0 <= self.checkpoint_minutes < MAX_CHECKPOINT_MINUTES:  # nan fails; a negative one turned it off unsaid
            raise BlastscopeError(
                f"checkpoint minutes {self.checkpoint_minutes} is invalid: use --checkpoint-minutes 0 (no mid-epoch "
                f"checkpoint) or more, below {MAX_CHECKPOINT_MINUTES:.3g}"
            )
        if self.num_workers < 0:
            raise BlastscopeError(f"num_workers {self.num_workers} is invalid: use 0 (the main process) or more")
        if self.epochs_frozen < 0 or self.epochs_finetune < 0:
            raise BlastscopeError(
                f"epochs cannot be negative (frozen {self.epochs_frozen}, finetune {self.epochs_finetune}): "
                "check --epochs-frozen and --epochs-finetune"
            )
        augment_config(self.augmentation)  # unknown or bad switches fail here, not after the data is scanned
        check_segment_mode(self.segment)
        check_red_cell_diameter(self.red_cell_diameter)
        check_crop_fraction(self.crop_fraction)
        check_channels(self.channels)
        self._check_colour_norm()
        if not (0 < self.lr_head < math.inf and 0 < self.lr_finetune < math.inf):  # nan fails too
            raise BlastscopeError("learning rates must be above 0: check --lr-head and --lr-finetune")
        if not 0 <= self.weight_decay < math.inf:
            raise BlastscopeError(f"weight decay {self.weight_decay} is invalid: use --weight-decay 0 (none) or more")
        if self.total_epochs < 1:
            raise BlastscopeError("no epochs to train: set --epochs-frozen and/or --epochs-finetune to 1 or more")
        if self.unfreeze_stages != "all" and (not isinstance(self.unfreeze_stages, int) or self.unfreeze_stages < 0):
            raise BlastscopeError(f"unfreeze_stages {self.unfreeze_stages!r} is invalid: use a count >= 0 or 'all'")
        if isinstance(self.label_smoothing, bool) or not (
            isinstance(self.label_smoothing, int | float) and 0 <= self.label_smoothing < 1
        ):
            raise BlastscopeError(
                f"label smoothing {self.label_smoothing!r} is invalid: use --label-smoothing from 0 (none) to below 1"
            )
        if self.class_balance not in CLASS_BALANCE:
            raise BlastscopeError(
                f"class balance {self.class_balance!r} is unknown: use --class-balance {'|'.join(CLASS_BALANCE)}"
            )
        self._check_head_fit()
        if self.split.folds is not None and not 0 <= self.split.fold < self.split.folds:
            raise BlastscopeError(f"fold {self.split.fold} does not exist: use 0..{self.split.folds - 1}")
        if self.split.folds is not None and (self.split.csv or tuple(self.split.ratios) != SplitConfig().ratios):
            flag = "--split-csv" if self.split.csv else "--split-ratios"
            raise BlastscopeError(
                f"{flag} has no effect with --folds {self.split.folds}: each fold tests on its own subjects and "
                f"validates on the next fold's; drop {flag} or --folds"
            )
        if self.split.folds is None and self.split.fold != 0:
            raise BlastscopeError(
                f"fold {self.split.fold} needs --folds K (k-fold cross-validation by subject); without it the run "
                "would use the train/val/test split, not a fold"
            )
        return self

    def _check_head_fit(self) -> None:
        """``--head-fit logistic`` fits the head once, on the cached features of one frozen epoch."""
        if self.head_fit not in HEAD_FITS:
            raise BlastscopeError(f"head fit {self.head_fit!r} is unknown: use --head-fit {'|'.join(HEAD_FITS)}")
        if self.head_fit != "logistic":
            return
        if self.epochs_frozen != 1:
            raise BlastscopeError(
                f"--head-fit logistic fits the head once, in one frozen epoch, not {self.epochs_frozen}: drop "
                "--epochs-frozen (or give 1), or use --head-fit adam"
            )
        if not self.cached_features:
            raise BlastscopeError(
                "--head-fit logistic fits the head to the frozen backbone's cached features: drop "
                "--no-cached-features, or use --head-fit adam"
            )

    def _check_colour_norm(self) -> None:
        """``--colour-norm subject`` fits each person's colours over their cells in one part of the split, so it
        refuses a split by image; and it is one colour normalisation, so it refuses ``stain_norm`` beside it."""
        check_colour_norm(self.colour_norm)
        if self.colour_norm != "subject":
            return
        if self.split.by == "image":
            raise BlastscopeError(
                "--colour-norm subject normalises each person's cells together, so it needs a split by subject: drop "
                "--split-by image, or train with --colour-norm none"
            )
        stain = augment_config(self.augmentation).stain_norm
        if stain is not None:
            raise BlastscopeError(
                f"--colour-norm subject and --augment stain_norm={stain} would normalise colours twice: drop "
                "--augment stain_norm (and stain_reference), or train with --colour-norm none"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["split"]["ratios"] = list(self.split.ratios)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a config.yaml mapping; the keys a run added are read past, unknown ones are refused."""
        if "segment" not in data and isinstance(data.get("preprocessing"), dict):
            # A run recorded before --segment existed: it trained on images as decoded, and repeats or resumes so.
            data = {**data, "segment": Preprocessing.from_dict(data["preprocessing"]).segment}
        if "bf16_frozen_stages" in data:  # its name until the copies also ran in fp32 on CPUs without bf16 units
            data = {**data, "folded_frozen_stages": data["bf16_frozen_stages"]}
            del data["bf16_frozen_stages"]
        data = {key: value for key, value in data.items() if key not in RESOLVED_KEYS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BlastscopeError(
                f"unknown config keys {', '.join(unknown)}: remove them (known: {', '.join(sorted(known))})"
            )
        split = dict(data.pop("split", None) or {})
        split_known = {f.name for f in dataclasses.fields(SplitConfig)}
        if set(split) - split_known:
            raise BlastscopeError(
                f"unknown split keys {', '.join(sorted(set(split) - split_known))}: "
                f"use {', '.join(sorted(split_known))}"
            )
        if "ratios" in split:
            split["ratios"] = tuple(float(r) for r in split["ratios"])
        if data.get("positive_class") is not None:
            data["positive_class"] = str(data["positive_class"])  # a class folder named 1 reads back as an int
        return cls(split=SplitConfig(**split), **data)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise BlastscopeError(
                f"{path}: cannot read the config ({error}); pass a config.yaml written by a run"
            ) from error
        if not isinstance(data, dict):
            raise BlastscopeError(f"{path}: not a mapping of settings; pass a config.yaml written by a run")
        return cls.from_dict(data)


def valid_split_ratios(ratios: Sequence[float]) -> bool:
    """Whether ``ratios`` are three shares >= 0 of train, val and test that sum to 1. Each must be finite: NaN
    compares false with everything, so it passed ``< 0`` and ``> 1e-6`` checks and then split into no part at all."""
    return (
        len(ratios) == 3
        and all(math.isfinite(ratio) and ratio >= 0 for ratio in ratios)
        and abs(sum(ratios) - 1) <= 1e-6
    )


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def write_yaml(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as YAML atomically: a full disk leaves the previous file (or none), never a truncated one."""
    text = yaml.safe_dump(data, sort_keys=False).encode()
    write_atomically(Path(path), lambda handle: handle.write(text))


def lightning_precision(precision: str, accelerator: str, cpu_bf16: bool = True) -> str:
    """Lightning's ``precision`` for training. 'auto' is the fastest precision the hardware runs natively: fp16 on
    CUDA; bf16 on CPUs with AMX/AVX512-BF16 for models whose training it speeds up (``cpu_bf16``, from the model's
    registry entry), else fp32."""
    if precision != "auto":
        return precision
    import torch

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "16-mixed"
    return "bf16-mixed" if cpu_bf16 and cpu_has_native_bf16() else "32-true"
