"""`blastscope evaluate`: a readable summary, evaluation.json, the run's operating point, and one-line errors."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import pytest
from sklearn import metrics as skm

from blastscope.cli import build_parser, main
from blastscope.inference.decision import LOG_T_BOUNDS, OperatingPoint, decide
from blastscope.runs import load_run
from blastscope.runs.folder import write_operating_point


def _evaluate(run_dir: Path, out: Path, *args: str) -> dict:
    assert main(["evaluate", str(run_dir), "--bootstrap", "0", "--out", str(out), *args]) == 0
    return json.loads((out / "evaluation.json").read_text())


def _predictions(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_writes_json_and_prints_an_aligned_summary(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", str(tiny_run_copy), "--bootstrap", "40", "--tta", "--threshold", "val", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["operating_point"]["source"] == "val:weighted_f1" and evaluation["precision"] == "fp32"
    assert (
        evaluation["plain"]["operating_point"] == evaluation["tta"]["operating_point"] == evaluation["operating_point"]
    )
    assert evaluation["plain"]["bootstrap"]["n_resamples"] == 40 and evaluation["tta"] is not None
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("path,subject,label,p_hem,p_all,decided_label,positive_class,threshold,decided_by")
    assert "weights: random init" in out and "95% CI (40 resamples of subjects)" in out and "with TTA" in out
    table = [line for line in out.splitlines() if line.startswith(("weighted F1", "accuracy", "ROC-AUC"))]
    assert len(table) == 3 and len({line.index("n/a") for line in table}) == 1  # CI column aligned
    # the suite's test split holds one subject of each class: an interval from it would have zero width
    assert "(95% CI n/a: 1 subject of HEM and 1 subject of ALL; an interval needs at least 2 subjects" in out


def test_a_threshold_chosen_on_val_is_stored_and_used_by_the_next_evaluate(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_run_copy / "operating_point.json"
    first = _evaluate(tiny_run_copy, tmp_path / "first", "--threshold", "val")
    out = capsys.readouterr().out
    assert f"stored the operating point in {path}" in out and out.count("stored the operating point") == 1
    chosen = OperatingPoint.from_dict(first["operating_point"])
    assert chosen.source == "val:weighted_f1" and chosen.split == "val" and chosen.chosen_by == "evaluate"
    stored = load_run(tiny_run_copy).operating_point
    assert stored == chosen
    assert (stored.threshold, stored.temperature) == (first["operating_point"]["threshold"], chosen.temperature)

    second = _evaluate(tiny_run_copy, tmp_path / "second")
    out = capsys.readouterr().out
    assert "stored the operating point" not in out and f"operating point: the run's stored one ({path})" in out
    assert f"decision: {chosen.describe()}" in out.splitlines()
    assert second["point_source"] == "stored" and second["stored_to"] is None
    assert second["operating_point"] == first["operating_point"]
    assert second["plain"]["metrics"]["confusion_matrix"] == first["plain"]["metrics"]["confusion_matrix"]
    assert second["plain"]["metrics"]["threshold"] == stored.threshold


def test_a_temperature_fitted_at_a_bound_is_warned_of_once(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The fit used to log the line as well as the summary printing it: twice on the terminal (the log on stderr)."""
    lowest = SimpleNamespace(x=LOG_T_BOUNDS[0])  # what the search returns for cleanly separated validation cells
    with patch("blastscope.inference.decision.minimize_scalar", return_value=lowest), caplog.at_level("DEBUG"):
        _evaluate(tiny_run_copy, tmp_path, "--threshold", "val")
    captured = capsys.readouterr()
    said = [*captured.out.splitlines(), *captured.err.splitlines(), *(r.getMessage() for r in caplog.records)]
    bound = [line for line in said if "sits at the lower bound of its fit" in line]
    assert len(bound) == 1 and bound[0].startswith("warning: temperature 0.05 (fitted on 16 validation cells)")


def test_a_given_threshold_is_stored_as_given(tiny_run_copy: Path, tmp_path: Path) -> None:
    evaluation = _evaluate(tiny_run_copy, tmp_path, "--threshold", "0.3")
    stored = load_run(tiny_run_copy).operating_point
    assert (stored.threshold, stored.source, stored.chosen_by, stored.score) == (0.3, "given", "evaluate", None)
    assert stored.split == "val" and stored.n_cells == len(load_run(tiny_run_copy).split.parts["val"])  # temperature
    assert stored.to_dict() == evaluation["operating_point"]
    assert evaluation["stored_to"] == str(tiny_run_copy / "operating_point.json")
    rows = _predictions(tmp_path)
    assert {row["threshold"] for row in rows} == {"0.3"} and {row["decided_by"] for row in rows} == {stored.origin()}


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--threshold", "0.3"], "--threshold 0.3"), (["--target-sensitivity", "0.9"], "--target-sensitivity 0.9")],
)
def test_a_threshold_for_a_multi_class_run_is_a_one_line_error(
    tiny_three_class_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str
) -> None:
    stored = (tiny_three_class_run / "operating_point.json").read_text()
    assert main(["evaluate", str(tiny_three_class_run), "--bootstrap", "0", "--out", str(tmp_path), *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("blastscope: error")]
    assert errors == [
        f"blastscope: error: {option} needs a two-class run; {tiny_three_class_run} has 3 classes (all, hem, other), "
        "decided by the most probable class"
    ]
    assert (tiny_three_class_run / "operating_point.json").read_text() == stored


def test_threshold_val_on_a_multi_class_run_fits_only_the_temperature_and_says_so(
    tiny_three_class_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = Path(shutil.copytree(tiny_three_class_run, tmp_path / "run"))
    evaluation = _evaluate(run_dir, tmp_path / "out", "--threshold", "val")
    stored = load_run(run_dir).operating_point
    assert stored.to_dict() == evaluation["operating_point"] and evaluation["stored_to"]
    assert (stored.positive_class, stored.split, stored.chosen_by) == (None, "val", "evaluate")
    out = capsys.readouterr().out
    assert f"note: {run_dir} has 3 classes, decided by the most probable class: --threshold val fits only" in out
    assert f"decision: {stored.describe()}" in out.splitlines() and "default threshold" not in out


def test_the_confusion_matrix_is_decide_on_the_written_probabilities(tiny_run_copy: Path, tmp_path: Path) -> None:
    _evaluate(tiny_run_copy, tmp_path / "choose", "--target-sensitivity", "0.9")
    evaluation = _evaluate(tiny_run_copy, tmp_path / "stored")
    point = load_run(tiny_run_copy).operating_point
    assert evaluation["point_source"] == "stored" and point.source == "val:sensitivity>=0.9"
    rows = _predictions(tmp_path / "stored")
    y_prob = np.array([[float(row[f"p_{name}"]) for name in point.classes] for row in rows])
    y_true = [point.classes.index(row["label"]) for row in rows]
    y_pred = decide(y_prob, point)
    assert [point.classes[i] for i in y_pred] == [row["decided_label"] for row in rows]
    expected = skm.confusion_matrix(y_true, y_pred, labels=range(len(point.classes))).tolist()
    assert evaluation["plain"]["metrics"]["confusion_matrix"] == expected


def test_precision_choices_are_the_inference_cores_and_fp32_by_default() -> None:
    from blastscope.cli import build_parser
    from blastscope.inference.precision import PRECISIONS

    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    option = next(action for action in evaluate._actions if "--precision" in action.option_strings)
    assert tuple(option.choices) == PRECISIONS and option.default == "fp32"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "val", "--threshold", "val"], "--split val"),
        (["--split", "val", "--target-sensitivity", "0.9"], "--split val"),
        (["--threshold", "0.3", "--target-sensitivity", "0.9"], "conflict"),
        (["--threshold", "0.5", "--target-sensitivity", "0.9"], "conflict"),
        (["--split", "val", "--refer-error", "0.1"], "--split val"),
    ],
)
def test_bad_options_are_one_line_errors(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["evaluate", str(tiny_run), "--bootstrap", "0", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tiny_run / "operating_point.json").exists() or load_run(tiny_run).operating_point.chosen_by == "train"


def test_an_unwritable_output_folder_stops_before_a_new_operating_point_is_stored(
    tiny_run_copy: Path, tmp_path: Path, read_only: Callable[[Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    read_only(folder)
    code = main(["evaluate", str(tiny_run_copy), "--threshold", "0.3", "--out", str(folder / "ev")])
    assert code == 2 and capsys.readouterr().err == (
        f"blastscope: error: {folder}: cannot write there (Read-only file system); choose another --out or make "
        "the folder writable\n"
    )
    assert load_run(tiny_run_copy).operating_point.chosen_by == "train"


def test_transductive_neighbours_adds_a_labelled_section_apart_from_the_plain_one(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = _evaluate(tiny_run, tmp_path, "--transductive-neighbours", "3", "--tta")
    out = capsys.readouterr().out
    label = evaluation["transductive"]["label"]
    assert "3 most similar cells" in label and "Pan et al. 2019" in label and "never the default" in label
    title = "transductive (plain view, not the TTA views, K=3)"  # which view it corrected, beside a TTA column
    section = out[out.index(title) :].splitlines()
    assert section[1] == label
    assert section[2].startswith("transductive metric") and section[3].startswith("transductive weighted F1")
    assert out.count("transductive") == out[out.index(title) :].count("transductive")  # nothing above the section
    assert {"p_all_transductive", "decided_label_transductive"} <= set(_predictions(tmp_path)[0])


def test_data_without_subject_ids_for_a_run_that_normalises_colours_per_person_is_a_one_line_error(
    tiny_colour_run: Path, natural_crop_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", str(tiny_colour_run), "--data", str(natural_crop_dataset), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert [line for line in err.splitlines() if "subject id" in line] == err.strip().splitlines()[-1:]
    assert "--colour-norm subject" in err and "blastscope predict" in err
    assert not (tmp_path / "evaluation.json").exists()


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_a_model_that_calls_every_cell_one_class_is_told_in_plain_words(tiny_run_copy: Path, capsys) -> None:
    assert main(["evaluate", str(tiny_run_copy), "--threshold", "0", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("warning: the model calls every cell ALL")


def test_refer_error_on_a_validation_split_too_small_stores_no_band_and_says_why(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    point_file = tiny_run_copy / "operating_point.json"
    before = point_file.read_bytes() if point_file.exists() else None
    evaluation = _evaluate(tiny_run_copy, tmp_path, "--refer-error", "0.05")
    out = capsys.readouterr().out
    assert "\noperating point: the run's stored one (" in out and "chosen by this evaluation" not in out
    assert evaluation["stored_to"] is None and evaluation["point_source"] == "stored"
    assert (point_file.read_bytes() if point_file.exists() else None) == before  # nothing changed, nothing written
    n_val = len(load_run(tiny_run_copy).split.parts["val"])
    assert n_val < 100  # the fewest called cells a 5% error rate is measured on
    assert f"\nno refer band stored: the validation split has {n_val} cells" in out
    assert evaluation["referral_choice"]["band"] is None and evaluation["operating_point"]["refer_band"] is None
    assert load_run(tiny_run_copy).operating_point.refer_band is None
    assert evaluation["plain"]["referral"]["coverage"] == 1.0 and evaluation["plain"]["referral"]["n_referred"] == 0
    assert {row["referred"] for row in _predictions(tmp_path)} == {"False"}
    assert (tmp_path / "risk_coverage.png").read_bytes().startswith(b"\x89PNG") and "risk_coverage.png" in out


def test_refer_error_stores_the_band_chosen_on_validation(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = _evaluate(tiny_run_copy, tmp_path, "--refer-error", "0.6")
    out = capsys.readouterr().out
    choice = evaluation["referral_choice"]
    stored = load_run(tiny_run_copy).operating_point
    assert choice["band"] is not None and list(stored.refer_band) == choice["band"]  # type: ignore[arg-type]
    assert stored.refer_band[0] <= stored.threshold <= stored.refer_band[1]  # type: ignore[index]
    assert choice["error_called"] <= 0.6 and choice["n_cells"] == len(load_run(tiny_run_copy).split.parts["val"])
    assert (stored.threshold, stored.source) == (0.5, "default")  # alone, --refer-error keeps the stored threshold
    band_line = next(line for line in out.splitlines() if line.startswith("refer band: "))
    assert band_line.startswith(("refer band: refer when ", "refer band: refer no cell: ")) and "60%" in band_line
    assert evaluation["stored_to"] == str(tiny_run_copy / "operating_point.json")


def test_a_stored_band_flags_cells_without_relabelling_them_and_a_new_threshold_drops_it(
    tiny_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _evaluate(tiny_run_copy, tmp_path / "first")
    p_all = np.array([float(row["p_all"]) for row in _predictions(tmp_path / "first")])
    point = load_run(tiny_run_copy).operating_point
    band = (
        float(min(point.threshold, np.quantile(p_all, 0.25))),
        float(max(point.threshold, np.quantile(p_all, 0.75))),
    )
    write_operating_point(tiny_run_copy, replace(point, refer_band=band))
    capsys.readouterr()

    second = _evaluate(tiny_run_copy, tmp_path / "second")
    out = capsys.readouterr().out
    rows = _predictions(tmp_path / "second")
    referred = np.array([row["referred"] == "True" for row in rows])
    np.testing.assert_array_equal(referred, (p_all > band[0]) & (p_all < band[1]))
    assert 0 < referred.sum() < len(rows)
    assert [row["decided_label"] for row in rows] == [row["decided_label"] for row in _predictions(tmp_path / "first")]
    referral = second["plain"]["referral"]
    assert referral["band"] == list(band) and referral["n_referred"] == int(referred.sum())
    assert referral["metrics_called"]["n"] == len(rows) - referred.sum()
    assert second["plain"]["metrics"] == first["plain"]["metrics"]  # all-cell metrics: labels are the threshold's
    assert "(stored with the operating point)" in out and f"{referred.sum()} of {len(rows)} cells referred" in out
    assert "called cells" in next(line for line in out.splitlines() if line.startswith("metric"))

    third = _evaluate(tiny_run_copy, tmp_path / "third", "--threshold", "0.4")
    assert third["operating_point"]["refer_band"] is None and load_run(tiny_run_copy).operating_point.refer_band is None
    assert any("refer band" in note and "dropped" in note for note in third["notes"])


def test_one_new_persons_normal_cells_are_scored_and_a_class_the_run_lacks_is_refused(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    person = [cell for cell in load_run(tiny_run).split.parts["test"] if cell.label == "hem"]
    data = tmp_path / "newperson"
    (data / "hem").mkdir(parents=True)
    for cell in person:
        shutil.copyfile(cell.path, data / "hem" / cell.path.name)

    evaluation = _evaluate(tiny_run, tmp_path / "out", "--data", str(data))

    out = capsys.readouterr().out
    metrics = evaluation["plain"]["metrics"]
    assert evaluation["n_cells"] == len(person) and sum(metrics["confusion_matrix"][0]) == len(person)
    assert metrics["confusion_matrix"][1] == [0, 0] and metrics["sensitivity"] is None
    assert metrics["specificity"] == metrics["accuracy"] and metrics["roc_auc"] is None and metrics["pr_auc"] is None
    (subject,) = evaluation["plain"]["subjects"]["per_subject"]
    assert subject["subject"] == person[0].subject and subject["true_class"] == "hem"
    assert out.splitlines()[0].startswith(f"warning: only one class (HEM) is left among the {len(person)} scored")
    assert any(line.startswith("specificity (HEM)") for line in out.splitlines())

    (tmp_path / "other" / "normal").mkdir(parents=True)
    shutil.copyfile(person[0].path, tmp_path / "other" / "normal" / "cell.png")
    assert main(["evaluate", str(tiny_run), "--data", str(tmp_path / "other"), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("blastscope: error:") and "normal is not among them" in error and "run's hem, all" in error


def test_files_the_scan_sets_aside_are_counted_and_listed_with_their_reasons(
    tiny_run: Path, synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    cell = next(data.rglob("*_all.png"))
    truncated = cell.with_name("UID_99_1_1_all.png")
    truncated.write_bytes(cell.read_bytes()[: len(cell.read_bytes()) // 2])
    (data / "mono").mkdir()
    for name in ("m1.png", "m2.png"):  # readable, but not named as C-NMC cells are
        shutil.copyfile(cell, data / "mono" / name)

    evaluation = _evaluate(tiny_run, tmp_path / "out", "--data", str(data))

    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    assert f"note: 1 file of {data} was skipped ({truncated}): corrupt or truncated PNG file" in "\n".join(notes)
    mono = sorted((data / "mono").iterdir())
    assert (
        f"note: 2 files of {data} were skipped (first: {mono[0]}): not a C-NMC cell name "
        "UID_<subject>_<image>_<cell>_<all|hem>; rename or remove it"
    ) in notes
    assert not any("could not be read" in note for note in notes)
    reasons = dict(evaluation["skipped_cells"])
    assert sorted(reasons) == sorted(map(str, [truncated, *mono]))
    assert reasons[str(truncated)].startswith("corrupt or truncated PNG file")
    assert reasons[str(mono[1])].startswith("not a C-NMC cell name")


def test_another_checkpoint_is_named_in_the_summary_and_json_and_gets_its_own_folder(
    tiny_run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint last`` must not overwrite the best checkpoint's evaluation-test/ unsaid, nor read as it."""
    assert main(["evaluate", str(tiny_run_copy), "--bootstrap", "0"]) == 0
    best = json.loads((tiny_run_copy / "evaluation-test" / "evaluation.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run_copy), "--bootstrap", "0", "--checkpoint", "last"]) == 0
    assert "; scored with the last checkpoint" in capsys.readouterr().out
    last = json.loads((tiny_run_copy / "evaluation-test-last" / "evaluation.json").read_text())
    assert (best["checkpoint"], last["checkpoint"]) == ("best", "last")
    assert json.loads((tiny_run_copy / "evaluation-test" / "evaluation.json").read_text()) == best


@pytest.mark.parametrize(
    ("option", "bad", "refusal"),
    [
        *(
            ("--bootstrap", bad, "is not a number of resamples; give a whole number of at least 0, e.g. 1000")
            for bad in ("-1", "1.5", "none")
        ),
        *(
            ("--batch-size", bad, "is not a batch size; give a whole number of at least 1, e.g. 32")
            for bad in ("0", "-3")
        ),
        *(
            (
                "--transductive-neighbours",
                bad,
                "is not a number of neighbours; give a whole number of at least 1, e.g. 10",
            )
            for bad in ("0", "-1")
        ),
    ],
)
def test_unusable_numbers_are_refused_by_argparse_in_one_line_naming_the_option(
    option: str, bad: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the run loads, as scan and serve refuse them (run() refused --bootstrap and --batch-size in one line for
    both, whichever was wrong)."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["evaluate", "run", f"{option}={bad}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blastscope evaluate: error: argument {option}: {bad!r} {refusal}"
    )


def test_the_smallest_usable_numbers_are_taken() -> None:
    args = build_parser().parse_args(
        ["evaluate", "run", "--bootstrap", "0", "--batch-size", "1", "--transductive-neighbours", "1"]
        + ["--red-cell-diameter", "8"]
    )
    assert (args.bootstrap, args.batch_size, args.transductive_neighbours, args.red_cell_diameter) == (0, 1, 1, 8.0)
