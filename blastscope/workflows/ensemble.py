"""``blastscope ensemble``: several finished runs made into one self-contained run that averages their calibrated
probabilities (:class:`~blastscope.runs.ensemble.EnsembleNetwork`).

The new folder is a run like any other: ``config.yaml`` (``model: ensemble`` with its ``members``), one checkpoint
holding every member's weights (moving or deleting the member folders later breaks nothing), ``split.csv`` and the
default ``operating_point.json``, so ``evaluate``, ``predict``, ``serve``, ``export`` and ``blastscope.load`` take it
unchanged. When every member trained on one split, the ensemble keeps it: ``evaluate`` scores its test part and
``evaluate --threshold val`` fits the ensemble's own temperature and threshold on its validation part. Members trained
on different splits (the K fold models of a cross-validation) leave no cell unseen by all of them, so the ensemble's
``split.csv`` then lists every cell a member trained or validated on as ``train``: ``evaluate --data`` leaves those
out, and nothing can be scored as held out by mistake. Such an ensemble has no validation part of its own, so its
threshold is chosen on the members' validation cells pooled, each scored by the member that validated on it
(:func:`members_validation_point`): one threshold read off every member's validation people, as the K fold models of a
cross-validation allow. Deciding at 0.5 instead cost the default recipe 0.021 pooled weighted F1 in cross-validation
(``benchmarks/bench_threshold_rules.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blastscope.data.cache import DecodedCache
from blastscope.data.split import Split, changed_cells, write_split_csv
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError
from blastscope.evaluation.cells import class_indices, readable_cells
from blastscope.evaluation.threshold import choose_threshold
from blastscope.inference.decision import MEMBERS_VALIDATION, OperatingPoint
from blastscope.inference.predict import predict_logits, probabilities
from blastscope.runs import TrainedRun, load_run
from blastscope.runs.ensemble import ENSEMBLE, SHARED_PREPROCESSING, EnsembleNetwork
from blastscope.runs.folder import finished, read_config, write_operating_point
from blastscope.training.config import write_yaml
from blastscope.training.prepare import package_versions

EVAL_PREPROCESSING = ("stain_norm", "stain_reference", "denoise")
"""The ``augmentation`` settings that also apply at inference: members must share them, as they share one input."""

PREPROCESSING_FIX = {
    "interpolation": "choose members whose architectures resize alike (`blastscope models` lists each one's)",
    "segment": "retrain it with the same --segment",
    "crop_fraction": "retrain it with the same --crop-fraction",
    "red_cell_diameter": "retrain it with the same --red-cell-diameter",
    "channels": "retrain it with the same --channels",
    "colour_norm": "retrain it with the same --colour-norm",
}
"""How to mend a member that differs in each of :data:`~blastscope.runs.ensemble.SHARED_PREPROCESSING`."""

NO_HELD_OUT = (
    "no held-out cells: the members trained on different splits, so every cell of theirs trained or validated one of "
    "them; score it with `evaluate {out} --data DIR` on cells none of the members trained on"
)
FEW_HELD_OUT = (
    "the members trained on different splits: only {n} of their cells (subjects {subjects}) were held out from every "
    "one of them; score it with `evaluate {out} --data DIR`, which scores those and leaves out every cell a member "
    "trained or validated on"
)


def make_ensemble(
    run_dirs: Sequence[Path | str], out: Path | str, checkpoint: str = "best", log: Callable[[str], None] = print
) -> Path:
    """Write the ensemble of ``run_dirs`` as a new run folder ``out``.

    Parameters
    ----------
    run_dirs : sequence of path
        At least two finished runs (each with ``metrics.json``) with the same classes, positive class,
        interpolation, ``--segment``, ``--crop-fraction``, ``--red-cell-diameter``, ``--channels``, stain
        normalisation and denoising. Their architectures, normalisation (mean/std) and input sizes may differ: the
        ensemble takes its largest member's input and resizes it for the others inside the network (one line says
        which). An ensemble run cannot be a member: pass its members.
    out : path
        The new run folder; must not exist yet (or be empty). Written whole or not at all.
    checkpoint : {"best", "last"}
        Which checkpoint of every member to take.
    log : callable
        Receives one line per member, a warning line for each member whose temperature was never fitted, a line
        for each member resized inside the network, for members on different splits the line saying how the
        threshold was chosen, and the line saying which split the ensemble has.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    BlastscopeError
        For fewer than two runs, a run given twice or two runs holding the same weights (a copied run folder), a
        folder that is not a finished run or is an ensemble, members that differ in classes, positive class or shared
        preprocessing (naming the field and the fix), or an ``out`` that already holds files.
    """
    out = Path(out)
    if len(run_dirs) < 2:
        raise BlastscopeError(f"an ensemble needs at least 2 runs, got {len(run_dirs)}; name two or more run folders")
    resolved = [Path(run_dir).resolve() for run_dir in run_dirs]
    if len(set(resolved)) < len(resolved):
        twice = next(path for path in resolved if resolved.count(path) > 1)
        raise BlastscopeError(f"{twice} is given twice; name each member run once")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BlastscopeError(f"{out} already exists and is not an empty folder; choose a new --out")
    runs = [_member(path, checkpoint) for path in resolved]
    first = runs[0]
    for run in runs[1:]:
        _check_compatible(first, run)
    _check_distinct_weights(runs)
    for index, run in enumerate(runs, start=1):
        log(f"member {index}: {run.run_dir} ({run.display_name}; {run.operating_point.describe()})")
        if run.operating_point.split != "val":
            log(
                f"warning: {run.run_dir} has no fitted temperature ({run.operating_point.origin()}), so its "
                f"probabilities enter the mean uncalibrated; `blastscope evaluate {run.run_dir} --threshold val` "
                "fits one"
            )
    largest = _largest_input(runs)
    for run in runs:
        if run.preprocessing.input_size < largest.preprocessing.input_size:
            log(
                f"note: {run.run_dir} trained at {run.preprocessing.input_size} px: the ensemble is fed "
                f"{largest.preprocessing.input_size} px and resizes it to {run.preprocessing.input_size} px for "
                "this member, so its share of the mean can differ slightly from its own run's probabilities"
            )
    network = EnsembleNetwork(
        [run.model for run in runs],
        [run.operating_point.temperature for run in runs],
        largest.preprocessing,
        [run.preprocessing for run in runs],
    )
    shared = len({run.split.content_hash for run in runs}) == 1  # same names with other pixels are another split
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.with_name(f".{out.name}.{os.getpid()}.incomplete")
    shutil.rmtree(building, ignore_errors=True)  # left by a crash of this process id
    try:
        (building / "checkpoints").mkdir(parents=True)
        state = {f"model.{key}": value for key, value in network.state_dict().items()}
        torch.save({"state_dict": state}, building / "checkpoints" / "best.ckpt")
        if shared:
            shutil.copyfile(first.run_dir / "split.csv", building / "split.csv")
            split = first.split
        else:
            split = _seen_cells(runs)
            write_split_csv(split, building / "split.csv")
        write_yaml(_config(runs, checkpoint, split, shared), building / "config.yaml")
        default = OperatingPoint.default(first.classes, first.operating_point.positive_class, chosen_by="ensemble")
        write_operating_point(building, default if shared else members_validation_point(runs, default, out, log))
        if out.exists():
            out.rmdir()  # empty, checked above
        building.rename(out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if shared:
        log(f"split: the members' shared split {split.hash}; `evaluate {out}` scores its test cells")
    else:
        log(_split_note(runs, split, str(out)))
    return out


def members_validation_point(
    runs: Sequence[TrainedRun], default: OperatingPoint, out: Path, log: Callable[[str], None] = print
) -> OperatingPoint:
    """The threshold of an ensemble of members on different splits, chosen on their validation cells pooled.

    Each member scores its own validation cells (its readable ones; through its own preprocessing, at its stored
    temperature, as ``evaluate`` scores them), never a cell it trained on; the threshold with the best weighted F1
    over all of them is kept, as ``evaluate --threshold val`` chooses one
    (:func:`~blastscope.evaluation.threshold.choose_threshold`). The ensemble averages the same tempered
    probabilities, so the threshold carries over, though not exactly: a mean of several members' probabilities lies
    nearer the middle than one member's. A cell several members validated on counts once for each.

    Parameters
    ----------
    runs : sequence of TrainedRun
        The members.
    default : OperatingPoint
        The ensemble's default point (classes, positive class, ``chosen_by``), kept where no threshold can be chosen.
    out : path
        The ensemble's folder, named in the warning that keeps ``default``.
    log : callable
        Receives one line: the threshold and what it was chosen on, or why ``default`` is kept.

    Returns
    -------
    OperatingPoint
        Temperature 1 (each member is tempered inside the ensemble), ``split=MEMBERS_VALIDATION``, ``n_cells`` the
        validation cells scored, ``score`` their weighted F1; or ``default`` for multi-class members, a member
        without validation cells, or validation files now missing or holding other images than when it trained.
    """
    if not default.binary:
        return default
    labels: list[np.ndarray] = []
    positives: list[np.ndarray] = []
    subjects: set[str] = set()
    for run in runs:
        cells = run.split.parts.get("val", [])
        notes: list[str] = []
        why = None
        if not cells:
            why = "has no validation cells"
        elif changed := changed_cells(cells):
            why = f"has validation files that hold other images now, e.g. {changed[0].path}"
        else:
            try:
                cells = readable_cells(run, cells, notes, "validation")[0]
            except BlastscopeError as error:
                why = f"cannot read its validation cells ({error})"
        if why is not None:
            mean = float(np.mean([member.operating_point.threshold for member in runs]))
            log(
                f"warning: {run.run_dir} {why}, so the ensemble decides at the default threshold 0.5; `blastscope "
                f"evaluate {out} --data DIR --threshold P` sets another (e.g. the members' mean threshold, {mean:.4f})"
            )
            return default
        for note in notes:
            log(f"note: {run.run_dir}: {note}")
        logits = predict_logits(
            run.runner("fp32"), cells, run.preprocessing, run.transform, batch_size=32, cache=DecodedCache()
        )
        labels.append(class_indices(cells, run.classes))
        positives.append(probabilities(logits, run.operating_point.temperature))
        subjects.update(str(cell.subject) for cell in cells if cell.subject is not None)
    y_true, y_prob = np.concatenate(labels), np.concatenate(positives)
    try:
        point = replace(choose_threshold(default, "val", (y_true, y_prob)), split=MEMBERS_VALIDATION)
    except BlastscopeError as error:  # e.g. every validation cell of one class
        log(f"warning: no threshold can be chosen on the members' validation cells ({error}); it decides at 0.5")
        return default
    people = f", {len(subjects)} people" if subjects else ""
    log(
        f"threshold: {point.describe()}: each member scored its own validation cells ({len(y_true):,} in all{people}) "
        "at its temperature, none it trained on"
    )
    return point


def _member(run_dir: Path, checkpoint: str) -> TrainedRun:
    """A finished, non-ensemble run loaded with its ``checkpoint`` weights."""
    config = read_config(run_dir)
    if config.get("model") == ENSEMBLE:
        raise BlastscopeError(
            f"{run_dir} is itself an ensemble; nesting would weigh its members unequally: name its member runs "
            "(listed under `members` in its config.yaml) instead"
        )
    if not finished(run_dir):
        raise BlastscopeError(
            f"{run_dir}: not a finished run (no metrics.json or best checkpoint: training did not end); finish it with "
            f"`blastscope train --resume {run_dir}` or leave it out"
        )
    return load_run(run_dir, checkpoint)


def _check_distinct_weights(runs: Sequence[TrainedRun]) -> None:
    """Refuse two members with identical weights (one run folder copied under another name): the mean would count
    that network twice, unsaid."""
    seen: dict[str, Path] = {}
    for run in runs:
        digest = hashlib.sha256()
        for name, tensor in run.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        if (same := seen.setdefault(digest.hexdigest(), run.run_dir)) != run.run_dir:
            raise BlastscopeError(
                f"{run.run_dir} holds the same weights as {same} (a copy of one run?); the mean would count that "
                "network twice: name one of them"
            )


def _largest_input(runs: Sequence[TrainedRun]) -> TrainedRun:
    """The member trained at the largest input size (the first of them): the ensemble takes its preprocessing, so
    the other members' inputs are only ever made smaller."""
    return max(runs, key=lambda run: run.preprocessing.input_size)


def _check_compatible(first: TrainedRun, run: TrainedRun) -> None:
    """Refuse, in one line naming the field and the fix, a member that cannot share ``first``'s input and output."""
    fields: list[tuple[str, Any, Any, str]] = [
        ("classes", first.classes, run.classes, "ensemble runs trained on the same class folders"),
        (
            "positive class",
            first.operating_point.positive_class,
            run.operating_point.positive_class,
            "ensemble runs with the same positive class (`train --positive-class`)",
        ),
    ]
    fields += [
        (name, getattr(first.preprocessing, name), getattr(run.preprocessing, name), PREPROCESSING_FIX[name])
        for name in SHARED_PREPROCESSING
    ]
    first_aug, run_aug = (r.config.get("augmentation") or {} for r in (first, run))
    fields += [
        (name, first_aug.get(name), run_aug.get(name), f"retrain it with the same --augment {name}")
        for name in EVAL_PREPROCESSING
    ]
    for name, expected, found, fix in fields:
        if expected != found:
            raise BlastscopeError(
                f"{run.run_dir}: {name} {found!r} differs from {first.run_dir}'s {expected!r}; every member of an "
                f"ensemble is fed the same image and scored on the same classes: {fix}, or leave it out"
            )


def _seen_cells(runs: Sequence[TrainedRun]) -> Split:
    """Every cell some member trained or validated on, once each (by content), all in ``train``: ``evaluate --data``
    must leave all of them out."""
    cells: dict[str, Cell] = {}
    groups: dict[str, str] = {}
    for run in runs:
        groups.update(run.split.groups)
        for part in ("train", "val"):
            for cell in run.split.parts.get(part, []):
                cells.setdefault(cell.digest, cell)
    seen = list(cells.values())
    return Split(
        parts={"train": seen, "val": [], "test": []},
        groups=groups,
        subject_level=all(cell.subject is not None for cell in seen),
        seed=None,
        ratios=(1.0, 0.0, 0.0),
        classes=runs[0].classes,
    )


def _split_note(runs: Sequence[TrainedRun], seen: Split, out: str) -> str:
    """What members on different splits leave unseen: K-fold models none, members on unrelated splits the cells all
    of them held out, which must not be called none."""
    digests = {cell.digest for cell in seen.parts["train"]}
    unseen = {
        cell.digest: cell for run in runs for cell in run.split.parts.get("test", []) if cell.digest not in digests
    }
    if not unseen:
        return NO_HELD_OUT.format(out=out)
    subjects = sorted({str(cell.subject) for cell in unseen.values() if cell.subject is not None})
    named = ", ".join(subjects[:5]) + (", ..." if len(subjects) > 5 else "") if subjects else "unknown"
    return FEW_HELD_OUT.format(n=len(unseen), subjects=named, out=out)


def _config(runs: Sequence[TrainedRun], checkpoint: str, split: Split, shared: bool) -> dict[str, Any]:
    """The ensemble's ``config.yaml``: its members as they were when it was made, and what it shares."""
    first = runs[0]
    members = [
        {
            "path": str(run.run_dir),
            "model": run.model_name,
            "weights_source": run.weights_source,
            "weights_pretrained": run.pretrained,
            "split_hash": run.split.hash,
            "temperature": run.operating_point.temperature,
            "threshold": run.operating_point.threshold,
            "operating_point": run.operating_point.origin(),
            "preprocessing": run.preprocessing.to_dict(),
        }
        for run in runs
    ]
    sources = "; ".join(f"{run.model_name} from {run.weights_source}" for run in runs)
    attributions = dict.fromkeys(str(run.attribution) for run in runs if run.attribution)
    augmentation = {name: (first.config.get("augmentation") or {}).get(name) for name in EVAL_PREPROCESSING}
    return {
        "model": ENSEMBLE,
        "members": members,
        "checkpoint": checkpoint,
        "classes": list(first.classes),
        "resolved_positive_class": first.operating_point.positive_class,
        "attribution": "; ".join(attributions),
        "preprocessing": _largest_input(runs).preprocessing.to_dict(),
        "augmentation": augmentation,
        "weights_source": f"ensemble of {len(runs)} runs: {sources}",
        "weights_pretrained": all(run.pretrained for run in runs),
        "split_hash": split.hash if shared else None,
        "split_subject_level": bool(split.subject_level),
        "split_note": None if shared else _split_note(runs, split, "ENSEMBLE"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
