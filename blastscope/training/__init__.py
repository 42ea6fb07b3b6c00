"""Training: ``train(config) -> run_dir`` and ``load_run(run_dir)`` to get a trained network back."""

from blastscope.training.config import TrainConfig
from blastscope.training.engine import resume, train
from blastscope.training.run import TrainedRun, load_run

__all__ = ["TrainConfig", "TrainedRun", "load_run", "resume", "train"]
