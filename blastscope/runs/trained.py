"""A trained run loaded back from its folder: the network, its preprocessing, its split and its operating point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blastscope.data.augment import AugmentConfig
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.split import Split, read_split_csv
from blastscope.data.transforms import Transform, eval_transform
from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint, temperature_bound_warning
from blastscope.inference.precision import InferencePrecision
from blastscope.inference.runners import TorchRunner
from blastscope.models import create_model, model_display_name
from blastscope.models.base import CellClassifier
from blastscope.runs.ensemble import ENSEMBLE, build_ensemble, ensemble_name
from blastscope.runs.folder import (
    checkpoint_path,
    finished,
    load_network_weights,
    read_config,
    read_operating_point,
    write_operating_point,
)


@dataclass
class TrainedRun:
    """A finished (or interrupted) run with its network in eval mode, ready to predict.

    Attributes
    ----------
    run_dir : Path
    config : dict
        ``config.yaml`` as written: the recipe plus what it resolved to (classes, preprocessing, weights, versions).
    model : CellClassifier
        The network with the chosen checkpoint's weights, in eval mode.
    preprocessing : Preprocessing
        The one record of the input size, normalisation and interpolation.
    classes : tuple of str
        In the model's output order.
    split : Split
        The run's train/val/test cells.
    weights_source, pretrained : str, bool
        Which weights the network started from.
    operating_point : OperatingPoint
        Where the classifier decides (``operating_point.json``; the default for runs that have none).
    """

    run_dir: Path
    config: dict[str, Any]
    model: CellClassifier
    preprocessing: Preprocessing
    classes: tuple[str, ...]
    split: Split
    weights_source: str
    pretrained: bool
    operating_point: OperatingPoint

    @property
    def is_ensemble(self) -> bool:
        """Whether the run averages several runs' networks (``blastscope ensemble``) rather than training one."""
        return self.config["model"] == ENSEMBLE

    @property
    def model_name(self) -> str:
        """The architecture: a registered model, or e.g. ``ensemble of efficientnet_lite0 + resnet50``."""
        return ensemble_name(self.config) if self.is_ensemble else str(self.config["model"])

    @property
    def image_size(self) -> int:
        """The model's input side in pixels (``preprocessing.input_size``)."""
        return self.preprocessing.input_size

    @property
    def display_name(self) -> str:
        """E.g. ``resnet50 (random init)``; an ensemble names each member's starting weights."""
        if self.is_ensemble:
            return ensemble_name(self.config, weights=True)
        return model_display_name(self.model_name, self.pretrained)

    @property
    def attribution(self) -> str:
        """The credit line of the data the run was trained on ("" when its data asked for none)."""
        return str(self.config.get("attribution") or "")

    @property
    def transform(self) -> Transform:
        """The run's deterministic preprocessing (stain normalisation, denoising, if trained with them), then the
        model's normalisation: uint8 HxWx3 at the input size -> float CHW tensor, exactly as validation saw it."""
        return run_eval_transform(self.preprocessing, self.config)

    def runner(self, precision: InferencePrecision = "fp32") -> TorchRunner:
        """The PyTorch runner of this run's network."""
        return TorchRunner(self.model, precision)

    def save_operating_point(self, point: OperatingPoint) -> Path:
        """Store ``point`` as the run's operating point (every later ``predict``/``serve``/``load`` uses it)."""
        path = write_operating_point(self.run_dir, point)
        self.operating_point = point
        return path


def temperature_warnings(config: dict[str, Any], point: OperatingPoint) -> list[str]:
    """Lines saying which temperatures a run's probabilities are scaled by sit at a bound of their fit
    (:func:`~blastscope.inference.decision.temperature_bound_warning`): the point's own and, for an ensemble, each
    member's, since each member's probabilities enter the ensemble's mean scaled by its own. Empty when none does.

    Parameters
    ----------
    config : dict
        The run's ``config.yaml``.
    point : OperatingPoint
        The operating point it decides at (stored, or chosen by an evaluation not yet stored).
    """
    warnings = [line] if (line := temperature_bound_warning(point.temperature, point.n_cells)) else []
    if config.get("model") == ENSEMBLE:
        for index, member in enumerate(config["members"], start=1):
            if line := temperature_bound_warning(float(member["temperature"])):
                warnings.append(f"ensemble member {index} ({member['path']}), whose probabilities it averages: {line}")
    return warnings


def unfinished_warnings(run_dir: Path, config: dict[str, Any]) -> list[str]:
    """A line saying the run's training did not end (killed, crashed, or still running), so its weights are those
    saved so far and not the finished run's; empty for a finished run or an ensemble (it is not trained).

    Loading such a run is allowed (its best checkpoint so far can be worth a look), but nothing else would tell a
    prediction from it apart from the finished run's.
    """
    if config.get("model") == ENSEMBLE or finished(run_dir):
        return []
    return [
        f"{run_dir}: training did not end (no metrics.json), so these are the weights saved so far, not the finished "
        f"run's; `blastscope train --resume {run_dir}` finishes it"
    ]


def run_eval_transform(pre: Preprocessing, config: dict[str, Any]) -> Transform:
    """The eval transform a run with this config was validated with."""
    return eval_transform(pre, AugmentConfig(**(config.get("augmentation") or {})))


def load_run(run_dir: Path | str, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the run's network (no weight download: architecture only) and load its ``best`` or ``last`` weights.

    An ensemble run (``model: ensemble``) rebuilds every member and loads them all from its one checkpoint, ``best``.

    Raises ``BlastscopeError`` when the folder is not a run, its checkpoint is missing or does not fit, its operating
    point is unreadable, or ``last`` is asked of an ensemble.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    classes = tuple(config["classes"])
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    if config.get("model") == ENSEMBLE:
        if checkpoint == "last":
            made_from = config.get("checkpoint", "best")
            raise BlastscopeError(
                f"{run_dir}: an ensemble has one checkpoint, made from its members' {made_from} checkpoints; drop "
                "--checkpoint last (or make the ensemble with `blastscope ensemble --checkpoint last`)"
            )
        network: CellClassifier = build_ensemble(config, len(classes), preprocessing)
    else:
        network = create_model(
            config["model"], num_classes=len(classes), pretrained="none", image_size=preprocessing.input_size
        ).model
    model = load_network_weights(network, checkpoint_path(run_dir, checkpoint)).eval()
    split = read_split_csv(run_dir / "split.csv")
    # a split whose parts keep people apart is still image-level when the run's starting weights saw its test people
    split.subject_level = split.subject_level and bool(config.get("split_subject_level", True))
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        preprocessing=preprocessing,
        classes=classes,
        split=split,
        weights_source=str(config["weights_source"]),
        pretrained=bool(config["weights_pretrained"]),
        operating_point=read_operating_point(run_dir, classes, config.get("resolved_positive_class")),
    )
