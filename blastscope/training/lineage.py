"""What a run's starting weights already saw.

A blastscope checkpoint given to ``--pretrained`` learned from its own run's training cells and was chosen on its
validation cells. A new run whose test people are among them scores them as if they were new, so the run checks
this before it trains: every checkpoint written from now on records its run's training and validation cells (content
digests and subject ids, :class:`TrainingDataRecord`), and a checkpoint written before that is matched to the
``split.csv`` of the run folder around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from blastscope.data.discover import natural_key
from blastscope.data.split import Split, read_split_csv
from blastscope.data.table import CellTable
from blastscope.errors import BlastscopeError, LeakageError

log = logging.getLogger(__name__)

TRAINING_DATA_KEY = "blastscope_training_data"  # the checkpoint key of the cells its run trained and validated on
SEEN_PARTS = ("train", "val")
NAMED = 5  # subjects named in a line; the rest are counted


@dataclass(frozen=True, slots=True)
class SeenCells:
    """The cells a run trained and validated on, per part (``train``, ``val``) by content digest and by subject id,
    and where that was read."""

    digests: dict[str, frozenset[str]]
    subjects: dict[str, frozenset[str]]
    origin: str

    def in_parts(self, parts: tuple[str, ...]) -> tuple[set[str], set[str]]:
        """The digests and subject ids of ``parts`` together."""
        digests = {digest for part in parts for digest in self.digests.get(part, ())}
        return digests, {subject for part in parts for subject in self.subjects.get(part, ())}


def training_data_record(split: Split) -> dict[str, Any]:
    """The training and validation cells of ``split`` as plain types (checkpoints load with ``weights_only=True``):
    per part, the cells' digests and their subject ids (``""`` for none) in the same order, and the split's hashes."""
    record: dict[str, Any] = {"split_hash": split.hash, "split_content_hash": split.content_hash}
    for part in SEEN_PARTS:
        cells = split.parts.get(part, [])
        record[part] = {"digests": [cell.digest for cell in cells], "subjects": [cell.subject or "" for cell in cells]}
    return record


class TrainingDataRecord(Callback):
    """Writes :func:`training_data_record` into every checkpoint of the run, so that weights copied out of their run
    folder still say which cells and people they learned from."""

    def __init__(self, split: Split) -> None:
        self.record = training_data_record(split)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[TRAINING_DATA_KEY] = self.record


def seen_by_weights(path: Path) -> SeenCells | str | None:
    """What the weights file at ``path`` was trained and validated on.

    Returns
    -------
    SeenCells, str or None
        The cells, from the checkpoint's own record or else from the ``split.csv`` of the run folder the checkpoint
        sits in (``RUN/checkpoints/NAME.ckpt``); a string saying why not, for a whole blastscope classifier that has
        neither; ``None`` for a file that is no whole classifier (a backbone's ImageNet weights) or cannot be read
        (building the model reports that).
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or safetensors: the weights loader names the problem when it reads the file
        return None
    if not isinstance(content, dict):
        return None
    if isinstance(record := content.get(TRAINING_DATA_KEY), dict):
        return _from_record(record)
    state = content.get("state_dict", content)
    if not isinstance(state, dict) or not any(_is_head_key(key) for key in state):
        return None
    run_dir = path.parent.parent
    if path.parent.name != "checkpoints" or not (run_dir / "split.csv").is_file():
        return "it records none (written before checkpoints did), and no run folder with a split.csv is around it"
    try:
        split = read_split_csv(run_dir / "split.csv")
    except BlastscopeError as error:
        return f"the split.csv of its run folder cannot be read ({error})"
    return _from_record(training_data_record(split), f"found by {run_dir / 'split.csv'}")


def _is_head_key(key: object) -> bool:
    """A key of a whole classifier's head, bare, in a LightningModule (``model.``) or under DDP (``module.``)."""
    return isinstance(key, str) and key.removeprefix("module.").removeprefix("model.").startswith("head.")


def _from_record(record: dict[str, Any], origin: str = "as the checkpoint records") -> SeenCells:
    """The cells of a :func:`training_data_record`, read from a checkpoint or made from an old run's split.csv."""
    parts = {part: record.get(part) or {} for part in SEEN_PARTS}
    return SeenCells(
        {part: frozenset(str(digest) for digest in found.get("digests", [])) for part, found in parts.items()},
        {part: frozenset(str(name) for name in found.get("subjects", []) if name) for part, found in parts.items()},
        origin,
    )


def check_starting_weights(path: Path, table: CellTable, split: Split, *, subject_split_asked: bool) -> None:
    """Say, in one line, whether the weights at ``path`` saw people (or images) of ``split``'s test and validation
    parts, and mark ``split`` image-level when they saw test people: its test scores are then optimistic for new
    people, which every later report must say.

    A test person counts as seen when the weights' run trained or validated on one of their images (matched by
    content, so moved or renamed data is still found) or, where the two datasets share images at all, on a person of
    the same subject id. Validation people the weights trained on only bias the checkpoint choice and early
    stopping, so they are said but leave the split subject-level (ones the weights' run validated on, as when a run
    is fine-tuned further on its own split, are not said).

    Parameters
    ----------
    path : Path
        The ``--pretrained`` file.
    table, split : CellTable, Split
        The new run's data and split (changed in place: ``subject_level`` False when test people were seen).
    subject_split_asked : bool
        ``--split-by subject`` was given: it promises test people no weights have seen, so a seen one is refused.

    Raises
    ------
    LeakageError
        With ``subject_split_asked``, when the weights saw people (or images) of the test part.
    """
    seen = seen_by_weights(path)
    if seen is None:
        return
    if isinstance(seen, str):
        log.warning(
            "--pretrained %s is a blastscope classifier whose training data cannot be checked: %s; if it saw this "
            "run's test people, their scores are optimistic",
            path,
            seen,
        )
        return
    test = _seen_in_part(split, "test", seen, SEEN_PARTS, table)
    val = _seen_in_part(split, "val", seen, ("train",), table)
    if not test and not val:
        return
    said = " and ".join(
        text for text in (test and f"trained or validated on {test}", val and f"trained on {val}") if text
    )
    where = f"--pretrained {path}: the run these weights come from ({seen.origin}) {said}"
    if not test:
        log.warning("%s: the best checkpoint and early stopping are chosen on people the weights trained on", where)
        return
    if subject_split_asked:
        raise LeakageError(
            f"{where}, but --split-by subject promises test people the model never saw: start from other weights "
            "(--pretrained auto), or drop --split-by subject to train it as an image-level run"
        )
    split.subject_level = False
    log.warning(
        "%s: test scores are optimistic for new people, so the run is recorded as image-level; start from weights "
        "that never saw them (--pretrained auto) to test on new people",
        where,
    )


def _seen_groups(seen: SeenCells, parts: tuple[str, ...], table: CellTable, split: Split) -> set[str]:
    """The subject groups of ``table`` the weights' run saw in ``parts``: those of a seen image and, when the two
    datasets share an image at all (so their subject ids name the same people), those of a seen subject id."""
    digests, subjects = seen.in_parts(parts)
    everything, _ = seen.in_parts(SEEN_PARTS)
    cells = [cell for cell in table.cells if cell.subject is not None]
    groups = {split.group_of(cell) for cell in cells if cell.digest in digests}
    if any(cell.digest in everything for cell in table.cells):
        groups |= {split.group_of(cell) for cell in cells if cell.subject in subjects}
    return groups


def _seen_in_part(split: Split, part: str, seen: SeenCells, parts: tuple[str, ...], table: CellTable) -> str:
    """``"2 of this run's 3 test subjects (2, H14)"`` seen in the weights' ``parts``, or its images for cells without a
    subject id; ``""`` if none."""
    cells = split.parts.get(part, [])
    name = "validation" if part == "val" else part
    people = {split.group_of(cell) for cell in cells if cell.subject is not None}
    hit = sorted(people & _seen_groups(seen, parts, table, split), key=natural_key)
    digests, _ = seen.in_parts(parts)
    images = [cell for cell in cells if cell.subject is None and cell.digest in digests]
    said = []
    if hit:
        said.append(f"{len(hit)} of this run's {len(people)} {name} subjects ({_few(hit)})")
    if images:
        said.append(f"{len(images)} of this run's {len(cells)} {name} images ({images[0].path} first)")
    return " and ".join(said)


def _few(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > NAMED else ""
    return ", ".join(names[:NAMED]) + more
