"""Training: ``train(config) -> run_dir`` and ``resume(run_dir)``; ``blastscope.runs.load_run`` loads the result.

The engine (torch, Lightning) loads on first use, so the CLI can read the recipe's choices without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from blastscope.training.config import TrainConfig

if TYPE_CHECKING:
    from blastscope.training.engine import resume, train

__all__ = ["TrainConfig", "resume", "train"]

_LAZY = {"resume": "engine", "train": "engine"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
