"""make_ensemble: a self-contained ensemble run that evaluate scores on its members' shared split, or that keeps the
cells its members saw out of `evaluate --data`; members that cannot share one input or one output are refused."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import blastscope
from blastscope.api.classifier import Classifier
from blastscope.errors import BlastscopeError
from blastscope.evaluation.evaluate import evaluate_run
from blastscope.evaluation.threshold import threshold_for_weighted_f1
from blastscope.inference.decision import MEMBERS_VALIDATION
from blastscope.runs import load_run
from blastscope.training import resume
from blastscope.workflows.ensemble import make_ensemble


def _quiet(_: str) -> None:
    pass


def _edit_config(run_dir: Path, edit: Callable[[dict], None]) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _copy(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where / run_dir.name))


def _resplit(run_dir: Path, where: Path, change: Callable[[dict[str, str]], None]) -> tuple[Path, list[dict[str, str]]]:
    """A copy of ``run_dir`` whose split.csv has each row passed through ``change``, and the rows it now holds."""
    other = _copy(run_dir, where)
    rows = list(csv.DictReader((other / "split.csv").open()))
    for row in rows:
        change(row)
    with (other / "split.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return other, rows


def test_an_ensemble_on_a_shared_split_is_scored_and_calibrated_on_it(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    out = make_ensemble([tiny_run, tiny_run_seed1], tmp_path / "ens", log=lines.append)
    config = yaml.safe_load((out / "config.yaml").read_text())
    member = load_run(tiny_run)
    assert (out / "split.csv").read_bytes() == (tiny_run / "split.csv").read_bytes()
    assert config["split_hash"] == member.split.hash == config["members"][1]["split_hash"]
    assert [m["path"] for m in config["members"]] == [str(tiny_run.resolve()), str(tiny_run_seed1.resolve())]
    assert config["weights_source"].startswith("ensemble of 2 runs: efficientnet_lite0 from random init")
    assert sum(line.startswith("warning: ") and "no fitted temperature" in line for line in lines) == 2
    result = evaluate_run(out, threshold="val", bootstrap=0)
    assert result.n_cells == len(member.split.parts["test"])
    assert result.point.split == "val" and result.point.n_cells == len(member.split.parts["val"])
    assert result.model == "ensemble of 2 x efficientnet_lite0"
    assert load_run(out).operating_point == result.point  # stored in the ensemble, not in its members
    assert load_run(tiny_run).operating_point.source == "default"
    with pytest.raises(BlastscopeError, match="is an ensemble .* it is not trained"):
        resume(out)


def test_members_on_different_splits_leave_no_held_out_cells(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path, synth_small: Path
) -> None:
    swap = {"val": "test", "test": "val"}  # the same cells, validation and test swapped: another split
    other, _ = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(split=swap.get(row["split"], row["split"])))
    lines: list[str] = []
    out = make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)
    assert lines[-1].startswith("no held-out cells: ") and f"`evaluate {out} --data DIR`" in lines[-1]
    ensemble = load_run(out)
    assert yaml.safe_load((out / "config.yaml").read_text())["split_hash"] is None
    assert not ensemble.split.parts["test"] and not ensemble.split.parts["val"]
    assert len(ensemble.split.parts["train"]) == 96  # train + val of one member and val of the other: every cell
    with pytest.raises(BlastscopeError, match="every cell is one the run trained or validated on"):
        evaluate_run(out, data=synth_small, bootstrap=0)


def test_members_on_different_splits_choose_the_threshold_on_their_own_validation_cells_pooled(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path, synth_small: Path
) -> None:
    """The K fold models of a cross-validation: no cell is held out from all, but each member's validation cells are
    held out from it, so the ensemble's threshold is read off all of them (not left at 0.5)."""
    swap = {"val": "test", "test": "val"}
    other, _ = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(split=swap.get(row["split"], row["split"])))
    lines: list[str] = []
    point = load_run(make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)).operating_point
    scored = [evaluate_run(run, split="val", bootstrap=0, store=False).predictions for run in (tiny_run, other)]
    rows = [row for member in scored for row in member]
    y_true = np.array([row["label"] == "all" for row in rows], dtype=np.int64)
    y_prob = np.array([[row["p_hem"], row["p_all"]] for row in rows])
    expected = threshold_for_weighted_f1(y_true, y_prob, load_run(tiny_run).operating_point)
    assert (point.split, point.n_cells, point.temperature) == (MEMBERS_VALIDATION, len(rows), 1.0)
    assert point.source == "val:weighted_f1" and point.chosen_by == "ensemble"
    assert (point.threshold, point.score) == pytest.approx((expected.threshold, expected.score))
    with pytest.raises(BlastscopeError, match="chosen on its members' validation cells when it was made"):
        evaluate_run(tmp_path / "ens", data=synth_small, threshold="val", bootstrap=0)
    (line,) = [line for line in lines if line.startswith("threshold: ")]
    assert line == (
        f"threshold: {point.describe()}: each member scored its own validation cells ({len(rows)} in all, "
        f"{len({row['subject'] for row in rows})} people) at its temperature, none it trained on"
    )


def test_a_member_without_validation_cells_leaves_the_threshold_at_its_default_and_says_so(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    other, _ = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(split=row["split"].replace("val", "train")))
    lines: list[str] = []
    point = load_run(make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)).operating_point
    assert point.describe().endswith("(default threshold, by ensemble)")  # not "by train"
    (warning,) = [line for line in lines if line.startswith(f"warning: {other} has no validation cells")]
    assert warning.endswith(
        f"so the ensemble decides at the default threshold 0.5; `blastscope evaluate {tmp_path / 'ens'} --data DIR "
        "--threshold P` sets another (e.g. the members' mean threshold, 0.5000)"
    )


def test_members_validation_cells_no_threshold_can_be_chosen_on_leave_it_at_its_default_and_say_so(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def one_class(*_: object) -> None:
        raise BlastscopeError("the validation split holds one class only, so no threshold can be chosen on it")

    monkeypatch.setattr("blastscope.workflows.ensemble.choose_threshold", one_class)
    swap = {"val": "test", "test": "val"}
    other, _ = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(split=swap.get(row["split"], row["split"])))
    lines: list[str] = []
    point = load_run(make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)).operating_point
    assert point.describe().endswith("(default threshold, by ensemble)")
    assert "warning: no threshold can be chosen on the members' validation cells (the validation split holds one " in (
        "\n".join(lines)
    )


def test_members_on_different_splits_that_all_held_out_some_cells_say_how_many(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    swap = {"val": "train", "train": "val"}  # the test part kept: its cells trained neither member
    other, rows = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(split=swap.get(row["split"], row["split"])))
    lines: list[str] = []
    out = make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)
    tested = sum(row["split"] == "test" for row in rows)
    assert lines[-1].startswith(f"the members trained on different splits: only {tested} of their cells (subjects ")
    assert yaml.safe_load((out / "config.yaml").read_text())["split_note"].startswith("the members trained on")


def test_members_whose_cells_share_names_but_not_pixels_are_on_different_splits(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    # the same file names and parts, other images (e.g. a dataset redrawn with another seed)
    other, rows = _resplit(tiny_run_seed1, tmp_path, lambda row: row.update(digest=row["digest"][::-1]))
    lines: list[str] = []
    out = make_ensemble([tiny_run, other], tmp_path / "ens", log=lines.append)
    tested = 2 * sum(row["split"] == "test" for row in rows)  # each member's test cells are images the other never saw
    assert lines[-1].startswith(f"the members trained on different splits: only {tested} of their cells ")
    assert yaml.safe_load((out / "config.yaml").read_text())["split_hash"] is None


def _not_finished(run: Path) -> None:
    (run / "metrics.json").unlink()


def _other_classes(run: Path) -> None:
    (run / "operating_point.json").unlink()

    def rename(config: dict) -> None:
        config["classes"], config["resolved_positive_class"] = ["hem", "blast"], "blast"

    _edit_config(run, rename)


def _other_interpolation(run: Path) -> None:
    _edit_config(run, lambda config: config["preprocessing"].update(interpolation="bilinear"))


def _other_channels(run: Path) -> None:
    _edit_config(run, lambda config: config["preprocessing"].update(channels="od", channel_scale=None))


def _other_red_cell_diameter(run: Path) -> None:
    _edit_config(run, lambda config: config["preprocessing"].update(red_cell_diameter=40.0))


def _colour_by_subject(run: Path) -> None:
    _edit_config(run, lambda config: config["preprocessing"].update(colour_norm="subject"))


def _an_ensemble(run: Path) -> None:
    _edit_config(run, lambda config: config.update(model="ensemble"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_not_finished, "not a finished run"),
        (_other_classes, r"classes \('hem', 'blast'\) differs"),
        (_other_interpolation, "interpolation 'bilinear' differs"),
        (_other_channels, "channels 'od' differs"),
        (_other_red_cell_diameter, "red_cell_diameter 40.0 differs"),
        (_colour_by_subject, "colour_norm 'subject' differs .*: retrain it with the same --colour-norm"),
        (_an_ensemble, "is itself an ensemble"),
    ],
)
def test_a_member_that_cannot_join_is_refused_in_one_line(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path, change: Callable[[Path], None], message: str
) -> None:
    member = _copy(tiny_run_seed1, tmp_path)
    change(member)
    with pytest.raises(BlastscopeError, match=message) as caught:
        make_ensemble([tiny_run, member], tmp_path / "ens", log=_quiet)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "ens").exists()


def test_members_trained_at_different_sizes_share_the_largest_input_and_say_who_is_resized(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    """efficientnet_lite0's default 448 px beside resnet50's 224 px: one input, the larger, resized for the smaller
    member inside the network; that member's probabilities stay close to its own run's."""
    larger = _copy(tiny_run, tmp_path)
    _edit_config(larger, lambda config: config["preprocessing"].update(input_size=48))  # global pooling: any size
    lines: list[str] = []
    out = make_ensemble([tiny_run_seed1, larger], tmp_path / "ens", log=lines.append)
    assert load_run(out).preprocessing.input_size == 48
    assert [line for line in lines if line.startswith("note:")] == [
        f"note: {tiny_run_seed1} trained at 32 px: the ensemble is fed 48 px and resizes it to 32 px for this member, "
        "so its share of the mean can differ slightly from its own run's probabilities"
    ]
    images = [Image.open(cell.path) for cell in load_run(tiny_run).split.parts["test"][:8]]
    own = np.mean([_p_all(blastscope.load(run, backend="torch"), images) for run in (tiny_run_seed1, larger)], axis=0)
    through_ensemble = _p_all(blastscope.load(out, backend="torch"), images)
    assert np.abs(through_ensemble - own).max() < 0.005


def _p_all(classifier: Classifier, images: list[Image.Image]) -> np.ndarray:
    return np.array([p.probabilities["all"] for p in classifier.predict(images)])


def test_members_that_normalise_colours_per_person_make_an_ensemble_that_does(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    members = [_copy(run, tmp_path / name) for run, name in ((tiny_run, "a"), (tiny_run_seed1, "b"))]
    for member in members:
        _colour_by_subject(member)
    out = make_ensemble(members, tmp_path / "ens", log=_quiet)
    assert load_run(out).preprocessing.colour_norm == "subject"


def test_fewer_than_two_runs_a_run_twice_or_copied_and_a_used_out_are_refused(
    tiny_run: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    with pytest.raises(BlastscopeError, match="at least 2 runs"):
        make_ensemble([tiny_run], tmp_path / "ens", log=_quiet)
    with pytest.raises(BlastscopeError, match="given twice"):
        make_ensemble([tiny_run, tiny_run_seed1, tiny_run], tmp_path / "ens", log=_quiet)
    copy = _copy(tiny_run, tmp_path / "copy")
    with pytest.raises(BlastscopeError, match=rf"{copy} holds the same weights as {tiny_run}.*name one of them"):
        make_ensemble([tiny_run, tiny_run_seed1, copy], tmp_path / "ens", log=_quiet)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(BlastscopeError, match="choose a new --out"):
        make_ensemble([tiny_run, tiny_run_seed1], tmp_path / "used", log=_quiet)
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
