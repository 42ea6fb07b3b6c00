"""A run directory and how to load a trained model back from it.

Layout of ``runs/<YYYYmmdd-HHMMSS>-<model>/``: ``config.yaml`` (the recipe plus what it resolved to), ``split.csv``,
``history.csv``, ``checkpoints/{best,last}.ckpt``, ``metrics.json`` (test split) and ``logs/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from blastscope.errors import BlastscopeError
from blastscope.data.preprocessing import Preprocessing
from blastscope.models.base import CellClassifier

if TYPE_CHECKING:
    from blastscope.data.split import Split

CHECKPOINTS = ("best", "last")
RUN_DIR_ENV = "BLASTSCOPE_RUN_DIR"


@dataclass
class TrainedRun:
    """A finished (or interrupted) run with its network in eval mode, ready to predict."""

    run_dir: Path
    config: dict[str, Any]
    model: CellClassifier
    preprocessing: Preprocessing
    classes: tuple[str, ...]
    split: Split
    weights_source: str
    pretrained: bool

    @property
    def display_name(self) -> str:
        return f"{self.config['model']} ({'pretrained' if self.pretrained else 'random init'})"

    @property
    def transform(self) -> Callable[[Any], torch.Tensor]:
        """The run's deterministic preprocessing (stain normalisation, denoising, if trained with them), then the
        model's normalisation: uint8 HxWx3 at the input size -> float CHW tensor, exactly as validation saw it."""
        return run_eval_transform(self.preprocessing, self.config)


def run_eval_transform(pre: Preprocessing, config: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """The eval transform a run with this config was validated with."""
    from blastscope.data.transforms import AugmentConfig, eval_transform

    return eval_transform(pre, AugmentConfig(**(config.get("augmentation") or {})))


def new_run_dir(out: Path, model: str) -> Path:
    """``out/<UTC timestamp>-<model>``; DDP worker processes reuse the directory their launcher made."""
    if inherited := os.environ.get(RUN_DIR_ENV):
        return Path(inherited)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) / f"{stamp}-{model}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(out) / f"{stamp}-{model}-{suffix}"
    (run_dir / "checkpoints").mkdir(parents=True)
    return run_dir


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise BlastscopeError(
            f"{run_dir}: no config.yaml, so not a training run; pass a directory made by `blastscope train`"
        )
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())
        raise BlastscopeError(f"{path}: cannot be read as YAML ({reason}); restore the run's config.yaml") from error
    if not isinstance(config, dict):
        raise BlastscopeError(
            f"{path}: holds a {type(config).__name__}, not a mapping of settings; restore the run's config.yaml"
        )
    return config


def checkpoint_path(run_dir: Path, checkpoint: str = "best") -> Path:
    """``best``/``last`` name a file in ``checkpoints/``; anything else is taken as a path to a .ckpt file."""
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not path.is_file():
        raise BlastscopeError(f"{path}: checkpoint not found; train the run to at least one epoch end or resume it")
    return path


def load_network_weights(model: CellClassifier, path: Path) -> CellClassifier:
    """Copy the network of a Lightning checkpoint (keys ``model.*``) into ``model``, loading only plain tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as error:  # a truncated or foreign file: name it instead of a pickle traceback
        raise BlastscopeError(f"{path}: cannot read the checkpoint ({error}); resume or retrain the run") from error
    network = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    try:
        model.load_state_dict(network)
    except RuntimeError as error:  # PyTorch lists every key over many lines; count them instead
        expected = model.state_dict()
        missing = len(set(expected) - set(network))
        unexpected = len(set(network) - set(expected))
        shapes = sum(
            1 for key in set(expected) & set(network) if tuple(expected[key].shape) != tuple(network[key].shape)
        )
        raise BlastscopeError(
            f"{path}: the checkpoint does not fit this network ({missing} missing, {unexpected} unexpected, "
            f"{shapes} mis-shaped tensors); it belongs to another model, class count or image size"
        ) from error
    return model


def load_run(run_dir: Path | str, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the run's network (no weight download: architecture only) and load its ``best`` or ``last`` weights."""
    from blastscope.data.split import read_split_csv
    from blastscope.models import create_model

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    classes = tuple(config["classes"])
    bundle = create_model(config["model"], num_classes=len(classes), pretrained="none", image_size=config["image_size"])
    model = load_network_weights(bundle.model, checkpoint_path(run_dir, checkpoint)).eval()
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        preprocessing=Preprocessing.from_dict(config["preprocessing"]),
        classes=classes,
        split=read_split_csv(run_dir / "split.csv"),
        weights_source=str(config["weights_source"]),
        pretrained=bool(config["weights_pretrained"]),
    )
