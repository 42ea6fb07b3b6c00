"""The run folder: where ``blastscope train`` writes a run and how its files are read back.

Layout of ``runs/<YYYYmmdd-HHMMSS>-<model>/``: ``config.yaml`` (the recipe plus what it resolved to), ``split.csv``,
``history.csv``, ``checkpoints/{best,last}.ckpt``, ``metrics.json`` (test split), ``operating_point.json`` (where the
classifier decides: written by ``train``, replaced by ``evaluate``/``compare`` when they choose a threshold) and
``logs/``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint
from blastscope.models.base import CellClassifier
from blastscope.storage import write_text_atomically

CHECKPOINTS = ("best", "last")
OPERATING_POINT_FILE = "operating_point.json"
RUN_DIR_ENV = "BLASTSCOPE_RUN_DIR"


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


def finished(run_dir: Path) -> bool:
    """Whether the run trained to its end: ``metrics.json`` is written only then, after its best checkpoint."""
    return (Path(run_dir) / "metrics.json").is_file() and (Path(run_dir) / "checkpoints" / "best.ckpt").is_file()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint's contents (``state_dict``, ``epoch``, ...), loading only plain tensors and values.

    Raises
    ------
    BlastscopeError
        If the file holds Python objects the safe loader refuses, is truncated, or is no checkpoint (no
        ``state_dict``).
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # refused by the safe loader: say so without PyTorch's advice to load it
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))  # with weights_only=False
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        held = f": it holds a Python object ({found[1]}), not only tensors and plain values" if found else ""
        why = held or (f" ({reason[1].strip()})" if reason else "")
        raise BlastscopeError(
            f"{path}: not a blastscope checkpoint, or unsafe to load{why}; use the run's own checkpoint or retrain it"
        ) from None
    except Exception as error:  # a truncated or foreign file: name it instead of a pickle traceback
        raise BlastscopeError(f"{path}: cannot read the checkpoint ({error}); resume or retrain the run") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise BlastscopeError(f"{path}: cannot read the checkpoint (it holds no state_dict); resume or retrain the run")
    return checkpoint


def load_network_weights(model: CellClassifier, path: Path) -> CellClassifier:
    """Copy the network of the Lightning checkpoint at ``path`` into ``model`` (:func:`copy_network_weights`)."""
    return copy_network_weights(model, read_checkpoint(path), path)


def copy_network_weights(model: CellClassifier, checkpoint: dict[str, Any], path: Path) -> CellClassifier:
    """Copy the network (keys ``model.*``) of ``checkpoint`` (:func:`read_checkpoint`'s), read from ``path``, into
    ``model``.

    Raises
    ------
    BlastscopeError
        If the tensors do not fit ``model`` (another model, class count or image size), naming ``path``.
    """
    state = checkpoint["state_dict"]
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


def read_operating_point(run_dir: Path, classes: tuple[str, ...], positive_class: str | None = None) -> OperatingPoint:
    """The run's stored operating point; without ``operating_point.json`` the default on ``positive_class``.

    ``positive_class`` is the one recorded in the run's config.yaml as ``resolved_positive_class`` (every run trained
    since it is recorded has one, and its operating_point.json). Only a run written before that, without either,
    falls back to the last class, which is how it was trained and scored.

    Raises ``BlastscopeError`` if the file is unreadable or was written for other classes.
    """
    path = Path(run_dir) / OPERATING_POINT_FILE
    if not path.is_file():
        return OperatingPoint.default(classes, positive_class)
    try:
        point = OperatingPoint.from_dict(json.loads(path.read_text()))
    except (OSError, KeyError, TypeError, ValueError, BlastscopeError) as error:
        raise BlastscopeError(
            f"{path}: unreadable operating point ({type(error).__name__}: {error}); delete it to go back to the "
            "default threshold, or choose one again with `blastscope evaluate --threshold val`"
        ) from None
    if point.classes != tuple(classes):
        raise BlastscopeError(
            f"{path}: written for classes {', '.join(point.classes)}, the run has {', '.join(classes)}; delete it or "
            "choose the threshold again with `blastscope evaluate`"
        )
    return point


def write_operating_point(run_dir: Path, point: OperatingPoint) -> Path:
    """Store ``point`` as the run's operating point, atomically (a temporary file renamed into place)."""
    path = Path(run_dir) / OPERATING_POINT_FILE
    write_text_atomically(path, json.dumps(point.to_dict(), indent=2) + "\n")
    return path
