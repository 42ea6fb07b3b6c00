"""``blastscope train``: transfer learning (frozen backbone, then fine-tuning) into a run directory; --config re-runs,
--resume continues."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from blastscope.cli._arguments import image_size, positive_number, red_cell_diameter, whole_number
from blastscope.cli._interrupt import Interrupted
from blastscope.data.preprocessing import CHANNELS, COLOUR_NORMS, SEGMENT_MODES
from blastscope.data.split import SPLIT_BY
from blastscope.errors import BlastscopeError, DataError
from blastscope.training.config import (
    CLASS_BALANCE,
    HEAD_FITS,
    LOGGERS,
    MONITORS,
    PRECISIONS,
    RATIOS_HINT,
    valid_split_ratios,
)

# flag -> TrainConfig field; flags left out keep the config file's (or the default) value
FIELDS = {
    "data": "data",
    "segment": "segment",
    "red_cell_diameter": "red_cell_diameter",
    "crop_fraction": "crop_fraction",
    "channels": "channels",
    "colour_norm": "colour_norm",
    "positive_class": "positive_class",
    "model": "model",
    "pretrained": "pretrained",
    "image_size": "image_size",
    "epochs_frozen": "epochs_frozen",
    "epochs_finetune": "epochs_finetune",
    "lr_head": "lr_head",
    "lr_finetune": "lr_finetune",
    "unfreeze_stages": "unfreeze_stages",
    "batch_size": "batch_size",
    "weight_decay": "weight_decay",
    "label_smoothing": "label_smoothing",
    "class_balance": "class_balance",
    "head_fit": "head_fit",
    "seed": "seed",
    "precision": "precision",
    "channels_last": "channels_last",
    "num_workers": "num_workers",
    "cached_features": "cached_features",
    "folded_frozen_stages": "folded_frozen_stages",
    "monitor": "monitor",
    "patience": "patience",
    "checkpoint_minutes": "checkpoint_minutes",
    "devices": "devices",
    "num_nodes": "num_nodes",
    "strategy": "strategy",
    "accelerator": "accelerator",
    "logger": "logger",
    "out": "out",
    "progress": "progress",
}
SPLIT_FIELDS = {"split_ratios": "ratios", "split_csv": "csv", "split_by": "by", "folds": "folds", "fold": "fold"}
NEGATED = {"channels_last", "cached_features", "folded_frozen_stages", "progress"}
"""Options set by a ``--no-...`` switch, so that a message names the flag as it was typed."""
EPOCHS = whole_number("a number of epochs", "5", minimum=0)
"""``--epochs-frozen``, ``--epochs-finetune`` and ``--patience``: 0 or more (that both phases are not 0 is the
recipe's check, as it depends on both)."""
LEARNING_RATE = positive_number("a learning rate", "1e-3")
"""``--lr-head`` and ``--lr-finetune``: finite and above 0."""
NOT_FLAGS = {"command", "run", "resume", "progress"}
"""Keys of the parsed options that are no flag a resumed run could ignore (``--no-progress`` only changes the display,
and a resumed run takes it)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (frozen-backbone phase, then fine-tuning) into runs/<time>-<model>/",
        description="Train a classifier on a dataset. Pretrained models first train the head on a frozen backbone "
        "(--epochs-frozen), then, for --epochs-finetune epochs, fine-tune the last --unfreeze-stages stages at a "
        "lower learning rate; randomly initialised ones train all layers for the same total epochs. The default, "
        "efficientnet_lite0, trains its head alone at 448 px (--epochs-finetune 0); `blastscope models` lists each "
        "model's defaults.",
        argument_default=argparse.SUPPRESS,
    )
    run = parser.add_argument_group("run")
    run.add_argument("--config", type=Path, help="a config.yaml (e.g. runs/X/config.yaml) to re-run; flags override it")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, with the recipe and settings recorded in it; "
        "takes no other flag but --no-progress",
    )
    run.add_argument("--run-dir", type=Path, help="exact run directory (default: OUT/<YYYYmmdd-HHMMSS>-<model>)")
    run.add_argument("--out", help="parent folder of run directories (default: runs)")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")

    data = parser.add_argument_group("data")
    data.add_argument("--data", help="dataset folder: C-NMC layout, class-per-folder tree or CSV manifest")
    data.add_argument(
        "--positive-class",
        metavar="NAME",
        help="the class whose sensitivity and threshold the run is about, any case (default: read from the class "
        "names, e.g. ALL of ALL/HEM, blast of blast/normal; required when the names do not say)",
    )
    data.add_argument("--split-ratios", type=_ratios, metavar="TRAIN,VAL,TEST", help="default 0.6,0.2,0.2")
    data.add_argument("--split-csv", help="use a saved split.csv instead of making one")
    data.add_argument(
        "--split-by",
        choices=SPLIT_BY,
        help="keep each subject in one part or not (default: by subject when any cell has a subject id; then every "
        "cell needs one)",
    )
    data.add_argument("--folds", type=int, help="k of k-fold cross-validation by subject")
    data.add_argument("--fold", type=int, help="which fold (0..k-1) to train")
    data.add_argument("--augment", action="append", metavar="KEY=VALUE", help="augmentation setting, repeatable")
    data.add_argument(
        "--segment",
        choices=SEGMENT_MODES,
        help="cut each cell out of its background onto black before resizing: auto (default) only where an image is "
        "not already on black as C-NMC cells are, always, or never; recorded with the run and applied by evaluate, "
        "predict, serve and the export",
    )
    data.add_argument(
        "--red-cell-diameter",
        type=red_cell_diameter,
        metavar="PX",
        help="red-cell diameter in the images, px (at least 8), that --segment cuts cells out at (default: measured on "
        "each image: its whole red cells, else its nucleus); give it when every image comes from one microscope "
        "setup. Recorded with the run and applied by evaluate, predict, serve and the export",
    )
    data.add_argument(
        "--crop-fraction",
        type=float,
        metavar="F",
        help="keep the centred square window of F x the shorter side before resizing (default 1: the whole image); "
        "one physical scale for every cell, so cell size stays a cue. On cnmc-dev 0.88 holds 99%% of cells whole; "
        "cells left more than 1%% outside are counted in a warning. Recorded with the run and applied by every "
        "inference door",
    )
    data.add_argument(
        "--channels",
        choices=CHANNELS,
        help="what the network is fed: rgb (default), od (optical density -ln((I+1)/256)) or hed (haematoxylin, "
        "eosin, DAB by colour deconvolution, Ruifrok & Johnston 2001); recorded with the run and applied by every "
        "inference door",
    )
    data.add_argument(
        "--colour-norm",
        choices=COLOUR_NORMS,
        help="none (default) or subject: map each cell's colours by the L*a*b* mean and spread of all its person's "
        "cells onto one C-NMC reference (Reinhard, per person), removing stain and exposure shifts shared by a "
        "person's cells; needs subject ids and a split by subject, and replaces --augment stain_norm. Recorded with "
        "the run; every inference door then groups cells by person (see predict)",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", help="model name (see `blastscope models`; default efficientnet_lite0)")
    model.add_argument("--pretrained", help="auto (default), hub, none, or a weights file PATH")
    model.add_argument(
        "--image-size", type=image_size, metavar="PX", help="input size in pixels (default: the model's)"
    )

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs-frozen", type=EPOCHS, help="phase-1 epochs, head only (default: the model's)")
    recipe.add_argument(
        "--epochs-finetune", type=EPOCHS, help="phase-2 epochs, last stages unfrozen (default: the model's)"
    )
    recipe.add_argument(
        "--lr-head", type=LEARNING_RATE, help="phase-1 learning rate of the head (default: the model's)"
    )
    recipe.add_argument(
        "--lr-finetune",
        type=LEARNING_RATE,
        help="phase-2 learning rate of a pretrained model; random init trains at --lr-head (default: the model's)",
    )
    recipe.add_argument(
        "--unfreeze-stages", type=_stages, metavar="N|all", help="stages unfrozen in phase 2 (default: the model's)"
    )
    recipe.add_argument("--batch-size", type=whole_number("a batch size", "32"), help="default 32")
    recipe.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-4)")
    recipe.add_argument(
        "--label-smoothing",
        type=float,
        metavar="X",
        help="train on targets (1 - X) one-hot + X / classes, 0 <= X < 1 (Szegedy et al. 2016); val_loss is scored "
        "against the true labels (default 0: none)",
    )
    recipe.add_argument(
        "--class-balance",
        choices=CLASS_BALANCE,
        help="even out the training split's classes: loss (default) weights the loss by inverse class frequency, "
        "sampler draws every class equally often with an unweighted loss, none does neither",
    )
    recipe.add_argument(
        "--head-fit",
        choices=HEAD_FITS,
        help="how phase 1 fits the head on the frozen backbone: adam (default) trains it for --epochs-frozen epochs "
        "at --lr-head; logistic fits it once as an L2-regularised logistic regression, its strength chosen on the "
        "validation cells (a linear probe; one frozen epoch)",
    )
    recipe.add_argument(
        "--seed",
        type=whole_number("a seed", "0", minimum=0),
        help="seeds split, sampling, augmentation and initialisation (default 0)",
    )
    recipe.add_argument("--monitor", choices=list(MONITORS), help="picks best.ckpt, early stopping")
    recipe.add_argument("--patience", type=EPOCHS, help="epochs without improvement before stopping (default 5)")
    recipe.add_argument(
        "--checkpoint-minutes",
        type=float,
        metavar="M",
        help="also save a mid-epoch checkpoint (interval.ckpt) every M minutes, for --resume; 0 turns it off "
        "(default 10)",
    )

    speed = parser.add_argument_group("speed and hardware")
    speed.add_argument("--precision", choices=PRECISIONS, help="default auto")
    speed.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    speed.add_argument(
        "--num-workers",
        type=whole_number("a number of worker processes", "2", minimum=0),
        help="DataLoader worker processes (default 2)",
    )
    speed.add_argument(
        "--no-cached-features",
        dest="cached_features",
        action="store_false",
        help="phase 1 re-runs the frozen backbone on augmented images every epoch (default: its features are computed "
        "once, without augmentation, and the head trains on them)",
    )
    speed.add_argument(
        "--no-folded-frozen-stages",
        dest="folded_frozen_stages",
        action="store_false",
        help="run frozen backbone stages as they are (default on CPUs: as inference copies with batch norm folded into "
        "the convolutions, in bf16 on CPUs with AMX/AVX512-BF16)",
    )
    speed.add_argument("--accelerator", help="auto, cpu or gpu")
    speed.add_argument("--devices", type=_devices, help="devices per node (default 1)")
    speed.add_argument("--num-nodes", type=whole_number("a number of machines", "1"), help="machines (default 1)")
    speed.add_argument("--strategy", help="Lightning strategy, e.g. ddp (default auto)")
    speed.add_argument("--logger", choices=LOGGERS, help="default csv")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from blastscope.training.engine import resume, train

    options = vars(args)
    if "resume" in options:
        refuse_flags_with_resume(options)
        try:
            run_dir = resume(options["resume"], progress=options.get("progress"))
        except KeyboardInterrupt as stop:
            _leave_ctrl_c_line(stop)
            raise Interrupted(resume_advice([Path(options["resume"])])) from None
    else:
        config = build_config(options)
        if "config" in options and "data" not in options:
            refuse_missing_recorded_data(Path(options["config"]), config.data)
        given = options.get("run_dir")
        before = _folders(Path(config.out))
        try:
            run_dir = train(config, run_dir=given, repeating=options.get("config"))
        except KeyboardInterrupt as stop:
            _leave_ctrl_c_line(stop)
            started = [Path(given)] if given is not None else sorted(_folders(Path(config.out)) - before)
            raise Interrupted(resume_advice(started)) from None
    if line := segmented_line(Path(run_dir)):
        print(line, file=sys.stderr)
    for line in result_lines(Path(run_dir)):
        print(line, file=sys.stderr)
    print(run_dir)
    return 0


def resume_advice(started: list[Path]) -> str:
    """How to go on after Ctrl-C, given the run folders this call may have started: ``--resume`` with the one that
    holds a run (its config.yaml is written before training starts), else the same command again (nothing to resume:
    it stopped while reading the data)."""
    runs = [folder for folder in started if (folder / "config.yaml").is_file()]
    if len(runs) == 1:
        return f"`blastscope train --resume {runs[0]}` continues it"
    if runs:  # another train wrote into the same --out meanwhile
        return f"`blastscope train --resume RUN_DIR` continues it, RUN_DIR its folder among {', '.join(map(str, runs))}"
    return "no run was written yet, so nothing to resume: run the same command again"


def _leave_ctrl_c_line(stop: KeyboardInterrupt) -> None:
    """End the line a terminal echoed ``^C`` on, so that the interrupt line starts a line of its own; Lightning's
    shutdown has done so when fitting was interrupted."""
    from blastscope.training.engine import FitInterrupted

    if not isinstance(stop, FitInterrupted):
        print(file=sys.stderr, flush=True)


def refuse_missing_recorded_data(config: Path, data: str | None) -> None:
    """Refuse a re-run whose recorded data is not there, in one line with the ways on: a relative path, as runs
    recorded before data paths were absolute, names the data only from the folder its run was started in.

    Raises
    ------
    DataError
        When ``data`` names nothing from here.
    """
    if data is None or Path(data).exists():
        return
    relative = not Path(data).is_absolute()
    raise DataError(
        f"{config} records the data as {data!r}"
        + (", relative to the folder its run was started in," if relative else "")
        + f" and {Path(data).resolve()} does not exist: "
        + ("run from that folder, or " if relative else "")
        + "pass --data with the dataset's folder"
    )


def _folders(out: Path) -> set[Path]:
    """The folders in ``out`` (none when it does not exist yet): a new run's is the one that appears."""
    return {path for path in out.iterdir() if path.is_dir()} if out.is_dir() else set()


def result_lines(run_dir: Path) -> list[str]:
    """What the run came to, as ``evaluate`` words it: the starting weights, the test split's weighted F1 and ROC-AUC
    at the operating point they were decided at (and where it came from), and where the numbers are; none when the
    run's metrics.json is missing (a DDP worker process other than the first) or unreadable."""
    from blastscope.inference.decision import OperatingPoint
    from blastscope.models import model_display_name
    from blastscope.runs.folder import read_config

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        point = OperatingPoint.from_dict(metrics["operating_point"])
        config = read_config(run_dir)
        weights = f"model: {model_display_name(config['model'], bool(config['weights_pretrained']))}; weights: "
        weights += str(config["weights_source"])
    except (OSError, ValueError, KeyError, TypeError, BlastscopeError):
        return []
    test = metrics.get("test")
    if test:
        scores = ", ".join(
            f"{label} {'n/a' if test.get(key) is None else format(test[key], '.4f')}"
            for key, label in (("weighted_f1", "weighted F1"), ("roc_auc", "ROC-AUC"))
        )
        scored = f"test split ({test['n']} cells): {scores}; decision: {point.describe()}"
        if metrics.get("data", {}).get("subject_level") is False:
            scored += " (image-level split: a person may have cells in training and test, so optimistic for new people)"
    else:
        scored = "test split: none in this run's split, so nothing was scored"
    return [
        weights,
        *_checkpoint_line(metrics.get("training") or {}, config),
        scored,
        f"metrics in {run_dir / 'metrics.json'}, per epoch in {run_dir / 'history.csv'}; `blastscope evaluate "
        f"{run_dir}` adds 95% CIs and calibration (with `--threshold val`, a threshold chosen on validation)",
    ]


def _checkpoint_line(training: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Which epoch the run is scored with (none for runs recorded before metrics.json kept it): the best by
    ``--monitor`` over every phase, so a run asked to fine-tune may keep its frozen phase's head, and says so."""
    epoch, phase = training.get("best_epoch"), training.get("best_phase")
    if not epoch:
        return []
    line = f"checkpoint: epoch {epoch} of {training.get('epochs_run')}{f' ({phase} phase)' if phase else ''}, the best"
    line += f" {config.get('monitor', 'val_loss')}"
    if phase == "frozen" and config.get("epochs_finetune") and config.get("weights_pretrained"):
        line += ": fine-tuning never beat the frozen phase's head, so the run is scored without it"
    fit = training.get("head_fit")
    if fit:
        line += (
            f"; its head was fitted as a logistic regression, C={fit['C']:g} kept for the lowest validation loss "
            f"({fit['val_loss']:.3f})"
        )
    return [line]


def refuse_flags_with_resume(options: dict[str, Any]) -> None:
    """Refuse any flag beside ``--resume``: a resumed run continues with the recipe, data and settings recorded in its
    config.yaml (so that it ends as the uninterrupted run would), and would silently ignore them.

    Raises
    ------
    BlastscopeError
        Naming the flags given, with the two ways on: drop them, or start a new run from the recorded config.
    """
    flags = [flag_name(key) for key in options if key not in NOT_FLAGS]
    if not flags:
        return
    config = Path(options["resume"]) / "config.yaml"
    them = "it" if len(flags) == 1 else "them"
    raise BlastscopeError(
        f"--resume continues {options['resume']} with the recipe and settings recorded in {config}, so "
        f"{', '.join(flags)} would be ignored: drop {them}, or start a new run to change {them} "
        f"(`blastscope train --config {config}` with {them})"
    )


def flag_name(key: str) -> str:
    """The command-line flag of a parsed option: ``lr_head`` -> ``--lr-head``, ``progress`` -> ``--no-progress``."""
    return ("--no-" if key in NEGATED else "--") + key.replace("_", "-")


def refuse_ensemble_config(path: Path) -> None:
    """Refuse an ensemble run's config.yaml in one line; one that cannot be read is left to ``TrainConfig.load``.

    Raises
    ------
    BlastscopeError
        When ``path`` records ``model: ensemble``.
    """
    import yaml

    from blastscope.runs.ensemble import ENSEMBLE

    try:
        recorded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if isinstance(recorded, dict) and recorded.get("model") == ENSEMBLE:
        raise BlastscopeError(
            f"{path} belongs to an ensemble run, which `blastscope ensemble` makes from trained runs and `train` "
            "cannot train: repeat its member runs (listed under `members` there) with `blastscope train --config "
            "MEMBER/config.yaml`, then make the ensemble of them again"
        )


def segmented_line(run_dir: Path) -> str | None:
    """The line "segmented N of M cells ..." from the run's metrics.json, when any cell was cut out of one."""
    try:
        parts = json.loads((run_dir / "metrics.json").read_text())["data"].get("segmented") or {}
    except (OSError, ValueError, KeyError):
        return None
    cut, cells = sum(part["cut_out"] for part in parts.values()), sum(part["cells"] for part in parts.values())
    return f"segmented {cut} of {cells} cells (cut out of their background onto black)" if cut else None


def build_config(options: dict[str, Any]) -> Any:
    """The config file's recipe (or the defaults) with every flag that was given on top.

    Raises
    ------
    BlastscopeError
        For a config file that cannot be read or holds unknown settings, and for an ensemble run's config.yaml, which
        holds no recipe: the ensemble was made from trained runs, not trained.
    """
    from blastscope.training.config import TrainConfig

    if "config" in options:
        refuse_ensemble_config(Path(options["config"]))
    config = TrainConfig.load(options["config"]) if "config" in options else TrainConfig()
    for flag, field in FIELDS.items():
        if flag in options:
            setattr(config, field, options[flag])
    for flag, field in SPLIT_FIELDS.items():
        if flag in options:
            setattr(config.split, field, options[flag])
    if "augment" in options:
        config.augmentation = {**config.augmentation, **dict(_setting(item) for item in options["augment"])}
    return config


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError:
        ratios = ()
    if not valid_split_ratios(ratios):
        raise argparse.ArgumentTypeError(f"{text!r}: {RATIOS_HINT}")
    return ratios  # type: ignore[return-value]


def _stages(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give a number of stages or 'all'")


def _devices(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _setting(item: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BlastscopeError(f"--augment {item!r}: write KEY=VALUE, e.g. --augment rotation=false")
    return key.strip(), yaml.safe_load(value)
