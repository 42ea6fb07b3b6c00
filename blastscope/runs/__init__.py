"""The run folder: what ``blastscope train`` writes, and the typed :class:`TrainedRun` loaded back from it."""

from blastscope.runs.trained import TrainedRun, load_run, run_eval_transform

__all__ = ["TrainedRun", "load_run", "run_eval_transform"]
