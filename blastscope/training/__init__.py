"""Training: ``train(config) -> run_dir`` and ``load_run(run_dir)`` to get a trained network back.

The engine (torch, Lightning) loads on first use, so the CLI can read the recipe's choices without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blastscope.training.config import TrainConfig

if TYPE_CHECKING:
    from blastscope.training.engine import resume, train
    from blastscope.training.run import TrainedRun, load_run

__all__ = ["TrainConfig", "TrainedRun", "load_run", "resume", "train"]

_LAZY = {"resume": "engine", "train": "engine", "TrainedRun": "run", "load_run": "run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
