"""blastscope: leukemic blast (ALL) vs normal cell (HEM) classification with subject-level honest evaluation.

``blastscope.load(run_dir)`` returns a :class:`~blastscope.api.classifier.Classifier`; it is imported on first use
so that the command line starts without loading PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from blastscope.api import load


def __getattr__(name: str) -> Any:
    if name == "load":
        from blastscope.api import load

        return load
    raise AttributeError(f"module 'blastscope' has no attribute {name!r}")
