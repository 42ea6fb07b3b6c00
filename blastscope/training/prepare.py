"""Everything decided before fitting: the recipe completed, the data scanned and split, the network built, the run
folder written."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from blastscope.data.attribution import dataset_attribution
from blastscope.data.augment import augment_config
from blastscope.data.classes import positive_class
from blastscope.data.discover import scan_dataset
from blastscope.data.people import require_subjects
from blastscope.data.split import (
    Split,
    check_leakage,
    groups_in_several_parts,
    kfold_splits,
    make_split,
    read_split_csv,
    write_split_csv,
)
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError, DataError, LeakageError
from blastscope.inference.decision import OperatingPoint
from blastscope.models import ModelBundle, create_model, get_spec
from blastscope.models.weights import parse_pretrained
from blastscope.runs.folder import write_operating_point
from blastscope.training.config import TrainConfig, write_yaml
from blastscope.training.lineage import check_starting_weights
from blastscope.training.module import unfrozen_stage_count

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = (
    "blastscope",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "torchmetrics",
    "numpy",
    "scikit-learn",
)


@dataclass
class Prepared:
    """Everything decided before fitting: data, split, network and where the run lives."""

    config: TrainConfig
    table: CellTable
    split: Split
    bundle: ModelBundle
    run_dir: Path
    positive_class: str | None = None
    """The resolved positive class (:func:`resolve_positive_class`); ``None`` for multi-class data."""


def complete_recipe(config: TrainConfig) -> TrainConfig:
    """The recipe with the model's own defaults filled in, checked before any data is read; a ``--pretrained`` file
    by its absolute path, so that config.yaml names it wherever the run is repeated or read."""
    choice = parse_pretrained(config.pretrained)
    if choice.mode == "file":
        config = replace(config, pretrained=str(choice.path.resolve()))  # type: ignore[union-attr]
    if config.head_fit == "logistic" and config.epochs_frozen is None:  # its one frozen epoch, whatever the model's
        config = replace(config, epochs_frozen=1)
    return config.with_defaults(get_spec(config.model).defaults.to_dict()).validate()


def unused_flags_line(
    given: TrainConfig, recipe: TrainConfig, pretrained: bool, recorded: dict[str, Any] | None = None
) -> str | None:
    """One line naming the learning-rate and fine-tuning flags ``given`` that the run never uses, else ``None``.

    ``--lr-finetune`` and ``--unfreeze-stages`` shape phase 2 only: a recipe with no fine-tuning epochs
    (efficientnet_lite0's default trains the head alone) or a randomly initialised model (one phase, every layer at
    ``--lr-head``) would otherwise take them and silently ignore them; so would ``--head-fit logistic``, which fits
    the head without a learning rate, take ``--lr-head``. ``recorded`` is the config.yaml a ``--config`` re-run starts
    from: its values were not given by the user, so only values that differ from it count.
    """
    notes = []
    if not (pretrained and recipe.epochs_finetune > 0):
        flags = _flags_given(
            given, recorded, ("--lr-finetune", "lr_finetune"), ("--unfreeze-stages", "unfreeze_stages")
        )
        why = (
            "this recipe has no fine-tuning epochs (--epochs-finetune 0); add --epochs-finetune N to fine-tune"
            if pretrained
            else "a randomly initialised model trains every layer in one phase, at --lr-head"
        )
        notes += [(flags, why)] if flags else []
    if (
        pretrained
        and recipe.head_fit == "logistic"
        and (flags := _flags_given(given, recorded, ("--lr-head", "lr_head")))
    ):
        notes.append(
            (flags, "--head-fit logistic fits the head in closed form, and fine-tuning trains it at --lr-finetune")
        )
    if not notes:
        return None
    said = [
        f"{' and '.join(flags)} {'changes' if len(flags) == 1 else 'change'} nothing here: {why}"
        for flags, why in notes
    ]
    return f"note: {'; '.join(said)}"


def _flags_given(given: TrainConfig, recorded: dict[str, Any] | None, *fields: tuple[str, str]) -> list[str]:
    """The flags of ``fields`` (flag, field) set in ``given`` to other values than the ``recorded`` recipe's."""
    return [flag for flag, field in fields
            if getattr(given, field) is not None and getattr(given, field) != (recorded or {}).get(field)]  # fmt: skip


def scan_data(config: TrainConfig) -> CellTable:
    table = scan_dataset(Path(config.data))
    if table.skipped:
        log.warning("%d files skipped in %s, each with its reason in metrics.json", len(table.skipped), config.data)
    for note in table.notes:  # what `data inspect` lists under Notes: classes left out, files passed over, merges
        log.warning("note: %s", note)
    return table


def resolve_positive_class(config: TrainConfig, table: CellTable) -> tuple[TrainConfig, str | None]:
    """The positive class of the scanned classes: the one ``--positive-class`` names (any case), else the one the
    class names mark as malignant (ALL of ALL/HEM); ``None`` for multi-class data.

    Returns the recipe, whose ``positive_class`` (when given) is now spelled as the class is, and that class.
    Raises ``DataError`` (one line naming ``--positive-class``) when binary class names do not say it.
    """
    positive = positive_class(table.classes, config.positive_class)
    return (config if config.positive_class is None else replace(config, positive_class=positive)), positive


def make_run_split(config: TrainConfig, table: CellTable) -> Split:
    """The run's split: read from ``--split-csv``, one fold of ``--folds``, or drawn by ``--split-ratios``; checked
    against what a ``--pretrained`` checkpoint already saw (:func:`check_starting_weights`).

    A split CSV that puts one subject group in several parts is read as a split by image, with a line naming the
    group, unless ``--split-by subject`` was given, which refuses it; cells of the data that the CSV puts in no part
    are left out, with a line counting them.

    Raises
    ------
    LeakageError
        With ``--split-by subject``: for a split CSV with a subject group in several parts or cells without a subject
        id, and for ``--pretrained`` weights that were trained or validated on people of the test part.
    DataError
        For a split that leaves no training or validation cells, and with ``--colour-norm subject`` for cells
        without a subject id or a split that puts one subject's cells in several parts (checked before any image is
        decoded).
    """
    if config.colour_norm == "subject":
        require_subjects(table.cells, config.data, "train with --colour-norm none")
    if config.split.csv:
        split = _read_run_split(config, table)
    elif config.split.folds:
        split = kfold_splits(table, config.split.folds, seed=config.seed, by=config.split.by)[config.split.fold]
    else:
        split = make_split(table, ratios=tuple(config.split.ratios), seed=config.seed, by=config.split.by)
    if config.colour_norm == "subject" and not split.subject_level:
        raise DataError(
            f"{config.split.csv}: this split puts cells of one subject in several parts, but --colour-norm subject "
            "normalises each person's cells together within one part: split by subject (drop --split-csv to draw "
            "one), or train with --colour-norm none"
        )
    if not split.subject_level and not (config.split.csv and groups_in_several_parts(split)):  # else said when read
        log.warning("split by image: cells of one subject can land in train and test, which inflates test scores")
    if parse_pretrained(config.pretrained).mode == "file" and Path(config.pretrained).is_file():
        check_starting_weights(Path(config.pretrained), table, split, subject_split_asked=config.split.by == "subject")
    check_leakage(split)
    for part in ("train", "val"):
        if not split.parts.get(part):
            raise DataError(f"{config.data}: the split leaves no {part} cells; add cells or change --split-ratios")
    return split


def _read_run_split(config: TrainConfig, table: CellTable) -> Split:
    """``--split-csv`` read against the data: a subject group in several parts makes it a split by image (said, or
    refused with ``--split-by subject``), and cells of the data in no part are said, counted, and left out."""
    path = Path(config.split.csv)  # type: ignore[arg-type]
    split = read_split_csv(path, table)
    spread = groups_in_several_parts(split)
    if spread:
        group, parts = next(iter(spread.items()))
        where = f"{path}: subject group {group} sits in {' and '.join(parts)}" + (
            f" ({len(spread) - 1} more group{'s' * (len(spread) > 2)} in several parts)" if len(spread) > 1 else ""
        )
        if config.split.by == "subject":
            raise LeakageError(
                f"{where}, but --split-by subject needs every subject group in one part: move its rows into one "
                "part, or drop --split-by subject to train on it as a split by image"
            )
        log.warning(
            "split by image: %s, which inflates test scores (--split-by subject refuses such a split)",
            where,
        )
    elif config.split.by == "subject" and not split.subject_level:
        unnamed = next(cell for _, cell in split.cells() if cell.subject is None)
        raise LeakageError(
            f"{path}: {unnamed.path} has no subject id, but --split-by subject needs one for every cell: drop "
            "--split-by subject to train on it as a split by image"
        )
    if split.left_out:
        log.warning(
            "%d cells of %s are in no part of %s: left out (first: %s)",
            len(split.left_out),
            config.data,
            path,
            split.left_out[0].path,
        )
    return split


def build_model(config: TrainConfig, table: CellTable) -> ModelBundle:
    """The recipe's network with its starting weights and its preprocessing, segmentation mode, crop, input
    channels and colour normalisation included (what config.yaml records); a ``--unfreeze-stages`` it cannot honour
    fails here, before the run folder exists."""
    bundle = create_model(
        config.model, num_classes=len(table.classes), pretrained=config.pretrained, image_size=config.image_size
    )
    bundle.preprocessing = replace(
        bundle.preprocessing,
        segment=config.segment,
        red_cell_diameter=config.red_cell_diameter,
        crop_fraction=config.crop_fraction,
        channels=config.channels,
        colour_norm=config.colour_norm,
    )
    unfrozen_stage_count(config.unfreeze_stages, len(bundle.model.stages()))
    readable = bundle.model.input_channels
    if readable is not None and config.channels not in readable:
        raise BlastscopeError(
            f"{config.model} reads {' or '.join(readable)} input, not --channels {config.channels}: "
            f"use --channels {readable[0]} or another model"
        )
    return bundle


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def write_run_files(prepared: Prepared, precision: str) -> None:
    """config.yaml holds the recipe (re-runnable with --config) plus what it resolved to on this machine, among it
    ``resolved_positive_class``, on which the default operating point written here decides, and the split by file
    names (``split_hash``) and by contents (``split_content_hash``, which tells a redrawn dataset from the old one),
    and the SHA-256 of a ``--pretrained`` file (``weights_sha256``)."""
    config, bundle = prepared.config, prepared.bundle
    recipe = config.to_dict()
    recipe["image_size"] = bundle.preprocessing.input_size
    recipe["augmentation"] = augment_config(config.augmentation).to_dict()  # every switch, so predictors can rebuild it
    resolved = {
        "classes": list(prepared.table.classes),
        "attribution": dataset_attribution(prepared.table),
        "preprocessing": bundle.preprocessing.to_dict(),
        "weights_source": bundle.weights_source,
        "weights_pretrained": bool(bundle.pretrained),
        **({"weights_sha256": bundle.weights_sha256} if bundle.weights_sha256 is not None else {}),
        "split_hash": prepared.split.hash,
        "split_content_hash": prepared.split.content_hash,
        "split_subject_level": bool(prepared.split.subject_level),
        "resolved_precision": precision,
        "resolved_positive_class": prepared.positive_class,
        "versions": package_versions(),
    }
    write_yaml({**recipe, **resolved}, prepared.run_dir / "config.yaml")
    write_split_csv(prepared.split, prepared.run_dir / "split.csv")
    point = OperatingPoint.default(prepared.table.classes, prepared.positive_class)
    write_operating_point(prepared.run_dir, point)
