"""evaluate_predictions (the pure core) and evaluate_run on the suite's tiny trained run."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn import metrics as skm

from blastscope.data.synth import synthesize
from blastscope.errors import BlastscopeError, DataError
from blastscope.evaluation import plots
from blastscope.evaluation.evaluate import (
    decisions,
    evaluate_predictions,
    evaluate_run,
    format_summary,
    write_evaluation,
)
from blastscope.evaluation.threshold import choose_point
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.inference.predict import probabilities
from blastscope.metrics import weighted_f1
from blastscope.runs import load_run
from blastscope.runs.folder import write_operating_point

CLASSES = ("hem", "all")
BASE = OperatingPoint.default(CLASSES)


def _logits_for(p_all: np.ndarray) -> np.ndarray:
    p_all = np.clip(p_all, 1e-4, 1 - 1e-4)
    return np.stack([np.zeros_like(p_all), np.log(p_all / (1 - p_all))], axis=1)


@pytest.fixture
def cohort() -> dict[str, np.ndarray | list[str]]:
    """Validation favours a threshold near 0.7; the test cells would favour one near 0.3."""
    rng = np.random.default_rng(0)
    y_val = np.repeat([0, 1], 40)
    p_val = np.where(y_val == 1, rng.uniform(0.7, 1.0, 80), rng.uniform(0.0, 0.68, 80))
    y_test = np.repeat([0, 1], 30)
    p_test = np.where(y_test == 1, rng.uniform(0.32, 1.0, 60), rng.uniform(0.0, 0.3, 60))
    subjects = [f"{'H' if y == 0 else ''}{i // 6}" for i, y in enumerate(y_test)]
    return {
        "y_val": y_val,
        "logits_val": _logits_for(p_val),
        "y_test": y_test,
        "logits_test": _logits_for(p_test),
        "subjects": subjects,
    }


def test_val_threshold_is_chosen_on_validation_not_test(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    point = choose_point(BASE, "val", (cohort["y_val"], cohort["logits_val"]))
    result = evaluate_predictions(cohort["y_test"], logits_test, cohort["subjects"], point, bootstrap=50)
    chosen = result["operating_point"]["threshold"]
    assert result["operating_point"] == point.to_dict() and point.source == "val:weighted_f1"
    assert point.split == "val" and point.n_cells == 80 and point.temperature != 1.0
    p_val = probabilities(cohort["logits_val"], point.temperature)[:, 1]
    # perfect on the temperature-scaled validation probabilities (above every HEM, at most the lowest ALL); the test
    # cells would want a lower one
    assert p_val[cohort["y_val"] == 0].max() < chosen <= p_val[cohort["y_val"] == 1].min()
    test_prob = probabilities(logits_test, point.temperature)
    test_score_at_chosen = weighted_f1(cohort["y_test"], test_prob, decide(test_prob, point), 1)
    assert result["metrics"]["weighted_f1"] == pytest.approx(test_score_at_chosen) and test_score_at_chosen < 1.0
    assert result["metrics"]["threshold"] == chosen


def test_everything_is_reported_as_plain_json(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    point = choose_point(BASE, None, (cohort["y_val"], cohort["logits_val"]))
    result = evaluate_predictions(cohort["y_test"], logits_test, cohort["subjects"], point, bootstrap=50, seed=3)
    json.dumps(result)
    assert result["operating_point"]["threshold"] == 0.5 and result["operating_point"]["source"] == "default"
    assert result["operating_point"]["score"] is None
    assert result["bootstrap"]["unit"] == "subject" and result["bootstrap"]["n_units"] == 10
    assert result["subjects"]["n_subjects"] == 10
    assert result["calibration"]["temperature"] == pytest.approx(point.temperature)
    assert result["calibration"]["after"] is not None
    assert result["roc"]["fpr"][0] == 0.0 and result["roc"]["tpr"][-1] == 1.0


def test_metrics_are_the_decisions_of_the_point(cohort: dict) -> None:
    """Probabilities at the point's temperature, labels from decide(): views are averaged before deciding."""
    rng = np.random.default_rng(4)
    views = cohort["logits_test"][:, None, :] + rng.normal(0, 0.3, (60, 8, 2))
    point = replace(BASE, threshold=0.42, temperature=1.7, source="given", chosen_by="test")
    result = evaluate_predictions(cohort["y_test"], views, cohort["subjects"], point, bootstrap=20)
    scaled = np.exp(views / 1.7)
    y_prob = (scaled / scaled.sum(axis=-1, keepdims=True)).mean(axis=1)
    y_pred = (y_prob[:, 1] >= 0.42).astype(int)
    np.testing.assert_array_equal(decisions(views, point)[1], y_pred)
    np.testing.assert_allclose(decisions(views, point)[0], y_prob, atol=1e-6)
    assert result["metrics"]["confusion_matrix"] == skm.confusion_matrix(cohort["y_test"], y_pred).tolist()
    assert result["bootstrap"]["metrics"]["accuracy"]["estimate"] == pytest.approx(np.mean(y_pred == cohort["y_test"]))
    assert result["calibration"]["temperature"] == 1.7


def test_without_subjects_or_validation(cohort: dict) -> None:
    logits = cohort["logits_test"]
    result = evaluate_predictions(cohort["y_test"], logits, None, BASE, bootstrap=20)
    assert result["subjects"] is None and result["bootstrap"]["unit"] == "cell"
    assert result["calibration"]["after"] is None and result["calibration"]["temperature"] is None
    assert evaluate_predictions(cohort["y_test"], logits, None, BASE, bootstrap=0)["bootstrap"] is None
    with pytest.raises(ValueError, match="classes"):
        evaluate_predictions(cohort["y_test"], logits, None, OperatingPoint.default(("a", "b", "c")), bootstrap=0)


def test_multiclass_has_no_threshold() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 10)
    logits = rng.normal(size=(30, 3)) + 2 * np.eye(3)[y]
    point = choose_point(OperatingPoint.default(("a", "b", "c")), "val", None)
    result = evaluate_predictions(y, logits, None, point, bootstrap=10)
    assert result["operating_point"]["positive_class"] is None and result["roc"] is None
    assert result["metrics"]["threshold"] is None
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_evaluate_run_on_the_test_split(tiny_run_copy: Path) -> None:
    run = load_run(tiny_run_copy)
    result = evaluate_run(tiny_run_copy, threshold="val", tta=True, bootstrap=30)
    test_cells = run.split.parts["test"]
    assert result.n_cells == len(test_cells) == len(result.predictions)
    assert result.subject_level and not any("image-level" in note for note in result.notes)
    assert result.weights_source == "random init" and result.display_name == run.display_name
    assert result.display_name.endswith("(random init)") and result.precision == "fp32"
    assert result.attribution == "synthetic cells generated by blastscope synth, seed 0"
    point = result.point
    assert point.source == "val:weighted_f1" and point.split == "val" and point.chosen_by == "evaluate"
    assert point.n_cells == len(run.split.parts["val"])
    assert result.plain["operating_point"] == result.operating_point == point.to_dict()
    assert result.tta["operating_point"] == result.plain["operating_point"]  # TTA is scored at the same point
    assert result.point_source == "chosen" and result.stored_to == str(tiny_run_copy / "operating_point.json")
    assert result.plain["calibration"]["temperature"] == (None if point.temperature == 1.0 else point.temperature)
    columns = {"p_hem", "p_all", "decided_label", "threshold", "decided_by", "p_hem_tta", "p_all_tta"}
    assert columns <= set(result.predictions[0])
    assert {row["decided_by"] for row in result.predictions} == {point.origin()}
    assert {row["positive_class"] for row in result.predictions} == {"all"}  # the class the threshold is on
    data = json.loads(json.dumps(result.to_dict()))
    assert "predictions" not in data and data["plain"]["metrics"]["n"] == len(test_cells)
    assert data["operating_point"] == point.to_dict()
    summary = format_summary(result)
    assert "weighted F1" in summary and "with TTA" in summary
    assert result.colour_people == 0 and "colours normalised" not in summary
    assert f"decision: {point.describe()}" in summary.splitlines()
    assert f"stored in {tiny_run_copy / 'operating_point.json'}" in summary


def test_the_risk_coverage_plot_of_a_stored_band_draws_the_target_it_was_chosen_for(
    tiny_run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A band stored by an earlier ``--refer-error`` lost its target line: only a band chosen now passed one."""
    point = load_run(tiny_run_copy).operating_point
    write_operating_point(tiny_run_copy, replace(point, refer_band=(0.3, 0.7), refer_target=0.2))
    drawn: list[plots.RiskCoverage] = []
    draw = plots.risk_coverage
    monkeypatch.setattr(plots, "risk_coverage", lambda curve, *a: drawn.append(curve) or draw(curve, *a))
    result = evaluate_run(tiny_run_copy, bootstrap=0)
    assert result.referral_choice is None and result.point.refer_target == 0.2
    write_evaluation(result, tmp_path)
    assert [curve.target for curve in drawn] == [0.2] and (tmp_path / "risk_coverage.png").exists()


def test_a_run_that_normalises_colours_per_person_says_so_for_how_many_people(
    tiny_colour_run: Path, tmp_path: Path
) -> None:
    people = {cell.subject for cell in load_run(tiny_colour_run).split.parts["test"]}
    result = evaluate_run(tiny_colour_run, bootstrap=0)
    assert result.colour_people == len(people) > 1
    data_line = next(line for line in format_summary(result).splitlines() if line.startswith("data: "))
    assert data_line.endswith(f"; colours normalised per person ({len(people)} people)")
    assert json.loads(write_evaluation(result, tmp_path / "out").read_text())["colour_people"] == len(people)


def test_new_data_without_subject_ids_is_refused_by_a_run_that_normalises_colours_per_person(
    tiny_colour_run: Path, natural_crop_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DataError, match="13 cells have no subject id .*manifest with a subject column") as caught:
        evaluate_run(tiny_colour_run, data=natural_crop_dataset, bootstrap=0)
    assert "\n" not in str(caught.value)
    assert "split" not in caplog.text  # evaluate splits nothing: the training note on splits is not said


def test_a_point_chosen_with_another_checkpoint_is_not_stored(tiny_run_copy: Path) -> None:
    before = load_run(tiny_run_copy).operating_point
    result = evaluate_run(tiny_run_copy, threshold=0.3, checkpoint="last", bootstrap=0)
    assert result.point.threshold == 0.3 and result.point.source == "given"
    assert result.stored_to is None and any("not stored" in note for note in result.notes)
    assert load_run(tiny_run_copy).operating_point == before
    assert "chosen by this evaluation, not stored" in format_summary(result)


def test_another_checkpoint_scored_at_the_stored_point_is_told_the_point_was_chosen_for_the_best(
    tiny_run_copy: Path,
) -> None:
    assert not any("best checkpoint, not" in note for note in evaluate_run(tiny_run_copy, bootstrap=0).notes)
    evaluate_run(tiny_run_copy, threshold="val", bootstrap=0)  # stores a point chosen with the best checkpoint
    last = evaluate_run(tiny_run_copy, checkpoint="last", bootstrap=0)
    assert any("chosen with its best checkpoint, not the last one scored here" in note for note in last.notes)
    assert not any("best checkpoint, not" in note for note in evaluate_run(tiny_run_copy, bootstrap=0).notes)


def test_the_summary_of_a_run_whose_training_did_not_end_says_so_first(tiny_run_copy: Path) -> None:
    (tiny_run_copy / "metrics.json").unlink()
    first = format_summary(evaluate_run(tiny_run_copy, bootstrap=0)).splitlines()[0]
    assert first.startswith(f"warning: {tiny_run_copy}: training did not end (no metrics.json)")


def test_new_data_drops_cells_the_run_has_seen(tiny_run: Path, synth_small: Path) -> None:
    split = load_run(tiny_run).split
    result = evaluate_run(tiny_run, data=synth_small, bootstrap=0)
    assert result.n_cells == len(split.parts["test"])  # the training and validation cells are left out
    assert result.split == "all" and any("left out" in note for note in result.notes)
    assert result.point_source == "stored" and result.stored_to is None


def test_new_data_with_other_classes_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    for label in ("tumour", "stroma"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (label == "tumour") * 100, np.uint8)).save(
                tmp_path / label / f"{i}.png"
            )
    with pytest.raises(DataError, match="differ from the run's"):
        evaluate_run(tiny_run, data=tmp_path, bootstrap=0)


def test_a_run_trained_without_subject_ids_cannot_vouch_for_new_people(tiny_run_copy: Path, synth_small: Path) -> None:
    """The run's split.csv without subject ids is a run trained on plain class folders: whether the evaluated people
    gave it cells cannot be checked, so results with subject ids on the evaluated side only are not subject-level."""
    split_csv = tiny_run_copy / "split.csv"
    with split_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with split_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "subject": "", "group": ""} for row in rows)

    result = evaluate_run(tiny_run_copy, data=synth_small, bootstrap=0)

    assert all(row["subject"] for row in result.predictions)  # the evaluated cells carry subject ids
    assert result.subject_level is False and result.to_dict()["subject_level"] is False
    assert result.notes[0] == (
        "results are image-level: the run's training cells carry no subject ids, so whether the evaluated people also "
        "gave cells to training cannot be checked; these numbers can be optimistic and do not say how the model does "
        "on new people"
    )
    assert sum("subject ids" in note for note in result.notes) == 1


def test_new_data_of_which_one_class_is_left_says_so_and_gives_no_aucs_or_intervals(
    tiny_run: Path, synth_small: Path, tmp_path: Path
) -> None:
    """The cells the run trained or validated on are left out; here that leaves only ALL (one subject's cells)."""
    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    for cell in load_run(tiny_run).split.parts["test"]:
        if cell.label == "hem":
            (data / cell.path.relative_to(synth_small.resolve())).unlink()

    result = evaluate_run(tiny_run, data=data, bootstrap=50)

    metrics = result.plain["metrics"]
    assert [row["support"] for row in metrics["per_class"].values()] == [0, result.n_cells]
    assert metrics["roc_auc"] is None and metrics["pr_auc"] is None  # not PR-AUC 1.0: every ranking would get it
    assert all(ci["low"] is None and ci["high"] is None for ci in result.plain["bootstrap"]["metrics"].values())
    lines = format_summary(result).splitlines()
    assert lines[0] == (
        f"warning: only one class (ALL) is left among the {result.n_cells} scored cells: ROC-AUC and PR-AUC are not "
        "defined (n/a) and F1 summarises ALL alone; accuracy is the share called ALL"
    )
    assert sum(line.startswith("warning: ") for line in lines) == 1
    table = {line.split("  ")[0]: line.split() for line in lines if line.startswith(("ROC-AUC", "PR-AUC", "accuracy"))}
    assert table["ROC-AUC"][1:] == ["n/a", "n/a"] and table["PR-AUC"][1:] == ["n/a"]
    assert table["accuracy"][1] == f"{metrics['accuracy']:.4f}" and table["accuracy"][2] == "n/a"
    assert (
        "(95% CI n/a: 1 subject of ALL; an interval needs at least 2 subjects of each class, as one alone is the same "
        "in every resample)"
    ) in lines
    assert any(line.startswith("subject level") and line.endswith(" over 1 subject") for line in lines)
    written = json.loads(write_evaluation(result, tmp_path / "out").read_text())
    assert written["plain"]["metrics"]["pr_auc"] is None and written["plain"]["bootstrap"]["metrics"]["accuracy"] == {
        "estimate": metrics["accuracy"],
        "low": None,
        "high": None,
        "n_valid": 0,
    }


def _run_on_own_data(run_dir: Path, synth_small: Path, data: Path) -> list[dict[str, str]]:
    """Point ``run_dir`` (a copy of ``tiny_run``) at a private copy ``data`` of ``synth_small``; its split's rows."""
    shutil.copytree(synth_small, data)
    split_csv = run_dir / "split.csv"
    split_csv.write_text(split_csv.read_text().replace(synth_small.resolve().as_posix(), data.resolve().as_posix()))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "data": str(data)}))
    with split_csv.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_test_images_redrawn_under_their_recorded_names_are_refused(
    tiny_run_copy: Path, synth_small: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    rows = _run_on_own_data(tiny_run_copy, synth_small, data)
    drawn = json.loads((data / "blastscope-synth.json").read_text())
    sizes = ("subjects_per_class", "cells_per_subject", "image_size", "separation")
    synthesize(data, **{key: drawn[key] for key in sizes}, seed=1)  # the same file names, other cells
    tested = [row["path"] for row in rows if row["split"] == "test"]

    with pytest.raises(DataError) as caught:
        evaluate_run(tiny_run_copy, bootstrap=0)
    message = str(caught.value)
    assert f"{len(tested)} of the {len(tested)} test cells its split.csv records hold other images now" in message
    assert f"e.g. {tested[0]} " in message and f"--data {data}`" in message and "\n" not in message


def test_a_point_is_not_chosen_on_validation_images_that_changed(
    tiny_run_copy: Path, synth_small: Path, tmp_path: Path
) -> None:
    rows = _run_on_own_data(tiny_run_copy, synth_small, tmp_path / "data")
    validated = [Path(row["path"]) for row in rows if row["split"] == "val"]
    tested = Path(next(row["path"] for row in rows if row["split"] == "test"))
    validated[2].write_bytes(tested.read_bytes())

    with pytest.raises(DataError, match=rf"1 of the {len(validated)} validation cells .* e\.g\. {validated[2]} "):
        evaluate_run(tiny_run_copy, threshold="val", bootstrap=0)


def test_threshold_is_never_tuned_on_the_cells_scored(tiny_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="--split val"):
        evaluate_run(tiny_run, split="val", threshold="val")
    with pytest.raises(BlastscopeError, match="--split val"):
        evaluate_run(tiny_run, split="val", target_sensitivity=0.9)


def test_no_temperature_fitted_on_the_cells_scored(tiny_run_copy: Path) -> None:
    result = evaluate_run(tiny_run_copy, split="val", threshold=0.5, bootstrap=0)
    calibration = result.plain["calibration"]
    assert calibration["temperature"] is None and calibration["after"] is None
    assert any("no temperature scaling" in note for note in result.notes)
    stored = load_run(tiny_run_copy).operating_point
    assert stored == result.point and stored.temperature == 1.0 and stored.split is None
    assert (stored.threshold, stored.source) == (0.5, "given")


@pytest.mark.integration
def test_real_cnmc_cells_as_new_data(tiny_run: Path, cnmc_sample: Path) -> None:
    """The 52 real C-NMC sample cells (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA) read and scored."""
    result = evaluate_run(tiny_run, data=cnmc_sample, bootstrap=20)
    assert result.n_cells == 52 and result.plain["subjects"]["n_subjects"] == 26
    assert result.plain["metrics"]["confusion_matrix"][0][0] + result.plain["metrics"]["confusion_matrix"][0][1] == 26
    assert result.attribution is not None and "TCIA" in result.attribution


def test_new_data_with_a_background_is_cut_out_and_a_cell_not_found_skipped(
    tiny_run_copy: Path, natural_crop_dataset: Path, tmp_path: Path
) -> None:
    result = evaluate_run(tiny_run_copy, data=natural_crop_dataset, bootstrap=0)
    assert result.n_cells == 12 and result.segmented_cells == 12
    assert [Path(path).name for path, _ in result.skipped_cells] == ["blank.png"]
    assert any("1 of 13 scored cells were skipped" in note and "no white cell found" in note for note in result.notes)
    assert all(row["segmented"] is True for row in result.predictions)
    assert "segmented 12 of 12 cells" in format_summary(result)
    assert result.notes[0].startswith("results are image-level: the evaluated cells carry no subject ids, so whether")
    write_evaluation(result, tmp_path / "out")
    assert (tmp_path / "out" / "predictions.csv").read_text().splitlines()[0].split(",").count("segmented") == 1
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["segmented_cells"] == 12

    before = load_run(tiny_run_copy).operating_point
    never = evaluate_run(tiny_run_copy, data=natural_crop_dataset, bootstrap=0, segment="never", threshold=0.4)
    assert never.n_cells == 13 and never.segmented_cells == 0 and not never.skipped_cells
    assert any("the run was trained with --segment auto" in note for note in never.notes)
    assert never.stored_to is None and load_run(tiny_run_copy).operating_point == before


def test_a_red_cell_diameter_for_this_evaluation_is_noted_and_its_point_not_stored(
    tiny_run_copy: Path, natural_crop_dataset: Path
) -> None:
    before = load_run(tiny_run_copy).operating_point
    given = evaluate_run(tiny_run_copy, data=natural_crop_dataset, bootstrap=0, red_cell_diameter=40, threshold=0.4)
    assert given.segmented_cells == given.n_cells == 12
    assert any("red-cell diameter of 40 px for this call" in note for note in given.notes)
    assert any("--red-cell-diameter than the run's, so it is not stored" in note for note in given.notes)
    assert given.stored_to is None and load_run(tiny_run_copy).operating_point == before


def test_a_temperature_at_a_bound_of_its_fit_is_warned_about_for_the_run_and_an_ensembles_members(
    tiny_run_copy: Path, tiny_run_seed1: Path, tmp_path: Path
) -> None:
    from blastscope.runs.folder import write_operating_point
    from blastscope.workflows.ensemble import make_ensemble

    point = replace(load_run(tiny_run_copy).operating_point, temperature=0.05, split="val", n_cells=16)
    write_operating_point(tiny_run_copy, point)
    lines = format_summary(evaluate_run(tiny_run_copy, bootstrap=0)).splitlines()
    calibration = next(index for index, line in enumerate(lines) if line.startswith("calibration:"))
    assert lines[calibration + 1].startswith(
        "warning: temperature 0.05 (fitted on 16 validation cells) sits at the lower bound of its fit"
    )
    assert "warning: temperature" not in format_summary(evaluate_run(tiny_run_seed1, bootstrap=0))

    ensemble = make_ensemble([tiny_run_copy, tiny_run_seed1], tmp_path / "ens", log=lambda _: None)
    summary = format_summary(evaluate_run(ensemble, bootstrap=0))
    member = f"warning: ensemble member 1 ({tiny_run_copy}), whose probabilities it averages: temperature 0.05"
    assert member in summary and "ensemble member 2" not in summary


def test_a_run_whose_data_moved_names_the_way_to_score_it_where_it_is(tiny_run_copy: Path, synth_small: Path) -> None:
    split_csv = tiny_run_copy / "split.csv"
    split_csv.write_text(split_csv.read_text().replace(str(synth_small), str(synth_small.parent / "moved-away")))
    with pytest.raises(DataError, match=r"none of its \d+ test cells is where the run recorded it .*--data NEW_PATH"):
        evaluate_run(tiny_run_copy, bootstrap=0)
