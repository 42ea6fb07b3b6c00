"""blastscope compare: one shared split for every model, finished runs reused, interrupted ones found, CV folds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score, roc_curve

from blastscope.data.attribution import CNMC_ATTRIBUTION
from blastscope.data.split import Split, write_split_csv
from blastscope.data.synth import synthesize
from blastscope.data.table import Cell
from blastscope.errors import BlastscopeError
from blastscope.evaluation.calibration import reliability
from blastscope.evaluation.referral import risk_coverage
from blastscope.evaluation.run_evaluation import prediction_rows
from blastscope.evaluation.scoring import evaluate_predictions
from blastscope.inference.decision import OperatingPoint
from blastscope.runs import load_run
from blastscope.training.config import SplitConfig, TrainConfig
from blastscope.workflows import compare
from blastscope.workflows.compare import BUDGETS, CompareConfig, find_run, run_compare
from blastscope.workflows.compare.jobs import FoldEvaluation, dataset_root
from blastscope.workflows.compare.results import (
    evaluation_scores,
    pooled_folds,
    runs_positive_class,
    subject_scores_missing,
    training_settings,
)

TINY = {"image_size": 32, "epochs_frozen": 1, "epochs_finetune": 0, "batch_size": 8, "bootstrap": 20}


def tiny_config(data: Path, out: Path, **changes: object) -> CompareConfig:
    settings = {
        "data": data,
        "models": ("cnn",),
        "out": out,
        "budget": "demo",
        "progress": False,
        "train_overrides": {"num_workers": 0},
        **TINY,
        **changes,
    }
    return CompareConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def compared(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    run_compare(tiny_config(synth_small, out))
    return out


def test_a_finished_run_is_reused_and_nothing_trains_again(
    compared: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_runs = sorted(p.name for p in (compared / "runs").iterdir())
    assert len(first_runs) == 1

    def no_training(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a matching finished run exists: nothing should train")

    monkeypatch.setattr("blastscope.training.train", no_training)
    monkeypatch.setattr("blastscope.training.resume", no_training)
    files = run_compare(tiny_config(synth_small, compared))
    assert sorted(p.name for p in (compared / "runs").iterdir()) == first_runs
    ranking = json.loads(files.json.read_text())["ranking"]
    assert [row["model"] for row in ranking] == ["cnn"] and ranking[0]["run_dir"].endswith(first_runs[0])


def test_a_new_run_trains_through_the_training_package(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[TrainConfig] = []

    class Stop(Exception):
        """Stops the comparison at its first training call: only the call matters here."""

    def fake_train(config: TrainConfig, *, announce: bool = True) -> None:
        assert not announce  # compare said the positive class once, for all runs
        asked.append(config)
        raise Stop

    monkeypatch.setattr("blastscope.training.train", fake_train)
    with pytest.raises(Stop):
        run_compare(tiny_config(synth_small, tmp_path))
    (config,) = asked
    assert (config.model, config.image_size, config.split.csv) == ("cnn", 32, str(tmp_path / "splits" / "split.csv"))


def test_every_model_trains_on_the_one_shared_split(compared: Path) -> None:
    (run_dir,) = (compared / "runs").iterdir()
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert Path(recipe["split"]["csv"]) == (compared / "splits" / "split.csv").resolve()
    assert (run_dir / "split.csv").read_text() == (compared / "splits" / "split.csv").read_text()
    assert (recipe["image_size"], recipe["epochs_frozen"], recipe["seed"]) == (32, 1, 0)


def test_the_report_describes_the_real_run(compared: Path, synth_small: Path) -> None:
    results = json.loads((compared / "results.json").read_text())
    (row,) = results["ranking"]
    assert 0.0 <= row["weighted_f1"] <= 1.0 and row["weights_source"].startswith("random init")
    assert row["train_seconds"] > 0 and row["images_per_second"] > 0
    assert results["subject_level"] is True
    cells = sum(sum(part.values()) for part in results["dataset"]["cells_per_part"].values())
    assert cells == len(list(synth_small.rglob("*.png")))
    markdown = (compared / "report.md").read_text()
    assert "## Dataset card" in markdown and "epochs (frozen backbone + fine-tuning) | 1 + 0" in markdown
    assert "cnn 32 px" in markdown


def test_by_default_each_run_is_scored_at_its_stored_point_and_nothing_is_stored(
    compared: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (run_dir,) = (compared / "runs").iterdir()
    before = (run_dir / "operating_point.json").read_text()
    monkeypatch.setattr("blastscope.training.train", lambda *_a, **_k: pytest.fail("the finished run is reused"))
    files = run_compare(tiny_config(synth_small, compared))
    assert "decision threshold: each run's stored operating point" in capsys.readouterr().out
    assert (run_dir / "operating_point.json").read_text() == before
    evaluation = json.loads((run_dir / "compare-evaluation.json").read_text())
    assert evaluation["point_source"] == "stored" and evaluation["stored_to"] is None
    stored = load_run(run_dir).operating_point
    assert evaluation["operating_point"] == stored.to_dict() == evaluation["plain"]["operating_point"]
    results = json.loads(files.json.read_text())
    assert results["ranking"][0]["threshold"] == stored.threshold
    assert results["budget"]["decision threshold"] == "each run's stored operating point"


def test_compare_stores_the_operating_point_it_evaluated_in_the_run(
    compared: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blastscope.training.train", lambda *_a, **_k: pytest.fail("the finished run is reused"))
    run_compare(tiny_config(synth_small, compared, threshold="0.5"))
    (run_dir,) = (compared / "runs").iterdir()
    evaluation = json.loads((run_dir / "compare-evaluation.json").read_text())
    stored = load_run(run_dir).operating_point
    assert (stored.threshold, stored.source, stored.chosen_by, stored.split) == (0.5, "given", "compare", "val")
    assert stored.to_dict() == evaluation["operating_point"] == evaluation["plain"]["operating_point"]
    assert evaluation["stored_to"] == str(run_dir / "operating_point.json")
    expected_temperature = None if stored.temperature == 1.0 else stored.temperature
    assert evaluation["plain"]["calibration"]["temperature"] == expected_temperature
    fields = compare.decision_fields(evaluation)
    assert fields == {
        "positive_class": stored.positive_class,
        "threshold": 0.5,
        "threshold_origin": stored.origin(),
        "operating_point": stored.to_dict(),
    }
    assert fields["threshold_origin"].startswith("threshold given, by compare")
    (row,) = json.loads((compared / "results.json").read_text())["ranking"]
    assert row["threshold"] == 0.5


def test_the_report_record_gets_every_decision_field(compared: Path) -> None:
    (run_dir,) = (compared / "runs").iterdir()
    evaluation = json.loads((run_dir / "compare-evaluation.json").read_text())
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = compare.decision_fields(evaluation)
    result = compare.model_result_from_evaluation(evaluation, recipe, metrics, run_dir)
    assert {name: getattr(result, name) for name in expected} == expected
    assert result.metrics["loss"] == evaluation["plain"]["metrics"]["loss"] > 0  # the report's test log loss
    assert result.confusion == evaluation["plain"]["metrics"]["confusion_matrix"]  # its classification report


def test_a_val_threshold_is_chosen_per_run_and_stored_there(
    compared: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("blastscope.training.train", lambda *_a, **_k: pytest.fail("the finished run is reused"))
    files = run_compare(tiny_config(synth_small, compared, threshold="val"))
    assert "decision threshold: chosen on each run's validation split" in capsys.readouterr().out
    (run_dir,) = (compared / "runs").iterdir()
    stored = load_run(run_dir).operating_point
    assert stored.source == "val:weighted_f1" and stored.chosen_by == "compare" and stored.split == "val"
    assert json.loads((run_dir / "compare-evaluation.json").read_text())["operating_point"] == stored.to_dict()
    results = json.loads(files.json.read_text())
    assert results["ranking"][0]["threshold"] == stored.threshold
    assert results["budget"]["decision threshold"].startswith("chosen on each run's validation split")


def test_tta_and_subject_scores_reach_the_ranking_and_the_printed_summary(
    compared: Path, synth_small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("blastscope.training.train", lambda *_a, **_k: pytest.fail("the finished run is reused"))
    files = run_compare(tiny_config(synth_small, compared, tta=True, rank_by="subject_accuracy_tta"))
    printed = capsys.readouterr().out
    (run_dir,) = (compared / "runs").iterdir()
    evaluation = json.loads((run_dir / "compare-evaluation.json").read_text())
    (row,) = json.loads(files.json.read_text())["ranking"]
    subjects = evaluation["plain"]["subjects"]
    assert (
        row["subject_accuracy"] == subjects["subject_level"]["accuracy"]
        and row["n_subjects"] == subjects["n_subjects"] > 1
    )
    assert row["subject_accuracy_tta"] == evaluation["tta"]["subjects"]["subject_level"]["accuracy"]
    assert row["weighted_f1_tta"] == evaluation["tta"]["metrics"]["weighted_f1"]
    assert row["ranked_by"] == "subject_accuracy_tta" and row["subject_scores_missing"] is None
    assert "ranking by subject accuracy with TTA (8 views); every model also scored with TTA (8 views)" in printed
    assert "Ranked by subject accuracy with TTA (8 views)" in printed and "↳ with TTA (8 views)" in printed
    assert "Best by subject accuracy with TTA (8 views): cnn" in printed
    assert "| test-time augmentation | every score also with TTA (8 views)" in files.markdown.read_text()


def _evaluation(subjects: list[str] | None, subject_level: bool = True) -> dict:
    """The parts of ``EvaluationResult.to_dict()`` the ranking reads, scored by the evaluation's own code."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    logits = np.stack([np.zeros((24, 8)), (2 * y - 1)[:, None] + rng.normal(0, 1.5, (24, 8))], axis=-1)
    point = OperatingPoint(classes=("hem", "all"), positive_class="all")
    plain = evaluate_predictions(y, logits[:, 0], subjects, point, bootstrap=10)
    tta = evaluate_predictions(y, logits, subjects, point, bootstrap=10)
    return {"plain": plain, "tta": tta, "subject_level": subject_level}


def test_ranking_scores_come_from_the_evaluation_and_subject_ones_only_when_honest() -> None:
    people = [f"{'H' if i < 12 else ''}{i // 3}" for i in range(24)]  # 4 subjects per class, 3 cells each
    evaluation = _evaluation(people)
    scores = evaluation_scores(evaluation)
    subject_level = evaluation["plain"]["subjects"]["subject_level"]
    assert (scores["subject_accuracy"], scores["subject_balanced_accuracy"]) == (
        subject_level["accuracy"],
        subject_level["balanced_accuracy"],
    )
    assert scores["subject_accuracy_tta"] == evaluation["tta"]["subjects"]["subject_level"]["accuracy"]
    assert scores["weighted_f1_tta"] == evaluation["tta"]["metrics"]["weighted_f1"] != scores["weighted_f1"]
    assert subject_scores_missing(evaluation) is None
    for missing, reason in ((_evaluation(None), "no subject ids"), (_evaluation(people, False), "image-level split")):
        assert subject_scores_missing(missing) == reason
        scores = evaluation_scores(missing)
        assert scores["subject_accuracy"] is None and scores["subject_balanced_accuracy_tta"] is None
        assert scores["accuracy"] == missing["plain"]["metrics"]["accuracy"]


def test_cross_validation_trains_every_fold_and_reports_mean_and_sd(synth_small: Path, tmp_path: Path) -> None:
    files = run_compare(tiny_config(synth_small, tmp_path, cv=3))
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [f"fold-{i}-of-3.csv" for i in (1, 2, 3)]
    assert len(list((tmp_path / "runs").iterdir())) == 3
    results = json.loads(files.json.read_text())
    assert results["cv_folds"] == 3 and "weighted_f1_sd" in results["ranking"][0]
    assert results["ranking"][0]["subject_accuracy_sd"] is not None
    assert len(results["models"]["cnn"]["fold_metrics"]) == 3
    markdown = files.markdown.read_text()
    assert "mean ± sd over 3 subject-grouped folds" in markdown
    model = results["models"]["cnn"]
    pooled = model["pooled_folds"]
    assert pooled["confusion"] == np.sum(model["fold_confusion_matrices"], axis=0).tolist()
    assert sum(map(sum, pooled["confusion"])) == len(list(synth_small.rglob("*.png")))  # every cell tested once
    tested = sorted(row["subject"] for row in pooled["subjects"])
    assert tested == sorted({row[0] for row in results["dataset"]["subjects"]})  # every subject, once
    note = "pooled over the 3 folds' test subjects (each tested once), each decided at its fold's threshold"
    for caption in ("Confusion matrix " + note, "Classification report " + note, "Accuracy per test subject, " + note):
        assert caption in markdown, caption
    assert "ROC curves of all models, each over its 3 folds' test cells pooled" in markdown
    assert markdown.count("(fold 1 of 3)") == 1 and "per epoch (fold 1 of 3)" in markdown  # training curves only


def _fold_evaluation(fold: int, point: OperatingPoint, people: int = 3, cells: int = 10) -> FoldEvaluation:
    """One fold's evaluation as ``compare`` keeps it, scored by the evaluation's own code on random logits of the
    fold's own ``people`` subjects per class (``cells`` each)."""
    rng = np.random.default_rng(fold)
    y = np.repeat([0, 1], people * cells)
    logits = np.stack([np.zeros(len(y)), (2 * y - 1) + rng.normal(0, 1.5, len(y))], axis=1)
    subjects = [f"{'H' * (1 - label)}{fold}{index // cells}" for index, label in enumerate(y)]
    table = [
        Cell(Path(f"fold{fold}/{i}.png"), ("hem", "all")[y[i]], subjects[i], f"d{fold}.{i}") for i in range(len(y))
    ]
    plain = evaluate_predictions(y, logits, subjects, point, bootstrap=0)
    rows = prediction_rows(table, logits, point, segmented=[False] * len(y))
    evaluation = {"plain": plain, "operating_point": point.to_dict(), "referral_choice": {"target": 0.1}}
    return FoldEvaluation(Path(f"runs/fold{fold}"), evaluation, rows)


def _pooled_cells(folds: list[FoldEvaluation]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every fold's test cells together: true class index, p(ALL) and whether its fold decided it wrongly."""
    rows = [row for fold in folds for row in fold.predictions]
    y = np.array([row["label"] == "all" for row in rows], dtype=np.int64)
    return y, np.array([row["p_all"] for row in rows]), np.array([row["decided_label"] != row["label"] for row in rows])


def test_cross_validation_pools_every_folds_test_cells_each_decided_at_its_own_point() -> None:
    points = [
        OperatingPoint(("hem", "all"), "all", threshold=0.4, temperature=1.3, refer_band=(0.25, 0.6)),
        OperatingPoint(("hem", "all"), "all", threshold=0.65, temperature=0.8),
        OperatingPoint(("hem", "all"), "all", threshold=0.5),  # no temperature: counts unscaled after scaling too
    ]
    folds = [_fold_evaluation(index + 1, point) for index, point in enumerate(points)]
    pooled = pooled_folds(folds)
    matrices = [fold.evaluation["plain"]["metrics"]["confusion_matrix"] for fold in folds]
    assert pooled.confusion == np.sum(matrices, axis=0).tolist() and sum(map(sum, pooled.confusion)) == 180
    assert (pooled.folds, pooled.thresholds, pooled.scaled_folds) == (3, [0.4, 0.65, 0.5], [1, 2])
    every = [row["subject"] for fold in folds for row in fold.evaluation["plain"]["subjects"]["per_subject"]]
    assert sorted(s.subject for s in pooled.subjects) == sorted(every) and len(set(every)) == 18
    y, p_all, wrong = _pooled_cells(folds)
    fpr, tpr, _ = roc_curve(y, p_all)
    assert pooled.roc == (fpr.tolist(), tpr.tolist()) and pooled.roc_auc == pytest.approx(roc_auc_score(y, p_all))
    scaled = reliability(y, np.column_stack([1 - p_all, p_all]))  # each cell at its fold's temperature
    assert list(pooled.reliability_after.counts) == scaled["counts"]
    assert pooled.reliability_after.confidence == pytest.approx(scaled["confidence"])
    assert pooled.reliability_after.accuracy == pytest.approx(scaled["accuracy"])
    assert pooled.reliability_after.ece == pytest.approx(scaled["ece"], abs=1e-6)
    assert sum(pooled.reliability_before.counts) == 180
    curve = pooled.risk_coverage
    assert curve.coverage[-1] == 1.0 and curve.error[-1] == pytest.approx(wrong.mean())  # calling every cell
    referred = np.array([row["referred"] for fold in folds for row in fold.predictions])
    assert referred[60:].sum() == 0 and referred[:60].any()  # only fold 1 has a band
    assert curve.band == (pytest.approx(1 - referred.mean()), pytest.approx(wrong[~referred].mean()))
    assert (curve.band_label, curve.target, curve.n_cells) == (
        "the refer band of fold 1 (none in folds 2 and 3)",
        0.1,
        180,
    )


def test_pooled_folds_with_one_threshold_rank_cells_as_one_split_would() -> None:
    point = OperatingPoint(("hem", "all"), "all", threshold=0.3)
    folds = [_fold_evaluation(fold, point) for fold in (1, 2)]
    y, p_all, wrong = _pooled_cells(folds)
    coverage, error = risk_coverage(p_all, wrong, 0.3)
    curve = pooled_folds(folds).risk_coverage
    assert curve.coverage == pytest.approx(coverage.tolist()) and curve.error == pytest.approx(error.tolist())
    assert curve.band is None


def test_folds_whose_test_cells_overlap_are_not_pooled() -> None:
    point = OperatingPoint(("hem", "all"), "all")
    with pytest.raises(ValueError, match="overlap"):
        pooled_folds([_fold_evaluation(1, point), _fold_evaluation(1, point)])


def test_folds_of_different_positive_classes_are_not_pooled() -> None:
    folds = [
        _fold_evaluation(1, OperatingPoint(("hem", "all"), "all")),
        _fold_evaluation(2, OperatingPoint(("hem", "all"), "hem")),
    ]
    with pytest.raises(ValueError, match="different positive classes"):
        pooled_folds(folds)


def test_runs_that_decide_about_different_positive_classes_are_refused_in_one_line() -> None:
    ours = _fold_evaluation(1, OperatingPoint(("hem", "all"), "all"))
    theirs = _fold_evaluation(1, OperatingPoint(("hem", "all"), "hem"))
    assert runs_positive_class({("cnn", 0): ours, ("vgg16", 0): ours}) == "all"
    with pytest.raises(
        BlastscopeError, match=r"different positive classes \(all: cnn fold 1 .*; hem: vgg16 fold 1"
    ) as error:
        runs_positive_class({("cnn", 0): ours, ("vgg16", 0): theirs})
    assert "\n" not in str(error.value)
    multi = _fold_evaluation(1, OperatingPoint(("hem", "all"), "all"))
    multi.evaluation["operating_point"] = OperatingPoint.default(("a", "b", "c")).to_dict()
    assert runs_positive_class({("cnn", 0): multi}) is None


def write_fake_run(
    runs: Path, name: str, recipe: TrainConfig, split: Split, finished: bool, contents_recorded: bool = True
) -> Path:
    """A run folder as ``train`` leaves it; ``contents_recorded=False`` writes one from before ``split_content_hash``,
    which has only its split.csv to say which images it was trained on."""
    run_dir = runs / name
    (run_dir / "checkpoints").mkdir(parents=True)
    saved = {
        **recipe.to_dict(),
        "image_size": recipe.image_size or 48,
        "split_hash": split.hash,
        "classes": ["hem", "all"],
    }
    if contents_recorded:
        saved["split_content_hash"] = split.content_hash
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    write_split_csv(split, run_dir / "split.csv")
    if finished:
        (run_dir / "metrics.json").write_text("{}")
        (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"")
    return run_dir


def fake_split(drawing: int = 0, swapped: bool = False) -> Split:
    """Two cells under fixed names; ``drawing`` stands for the images in those files, ``swapped`` trades their parts."""
    cells = [Cell(Path(f"/data/{label}/{label}1.png"), label, None, f"{label}{drawing}") for label in ("hem", "all")]
    train, test = reversed(cells) if swapped else cells
    return Split({"train": [train], "val": [], "test": [test]}, {}, False, 0, (0.5, 0.0, 0.5))


def recipe(**changes: object) -> TrainConfig:
    base = TrainConfig(
        data="/data",
        model="cnn",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        lr_head=1e-3,
        lr_finetune=1e-4,
        unfreeze_stages=2,
        split=SplitConfig(csv="/out/splits/split.csv"),
    )
    return TrainConfig(**{**base.__dict__, **changes})


def test_find_run_matches_recipe_and_split_and_prefers_finished(tmp_path: Path) -> None:
    wanted, split = recipe(), fake_split()
    write_fake_run(tmp_path, "20260101-000000-cnn", wanted, split, finished=True)
    write_fake_run(tmp_path, "20260102-000000-cnn", wanted, split, finished=False)
    write_fake_run(tmp_path, "20260103-000000-cnn", recipe(seed=1), split, finished=True)
    write_fake_run(tmp_path, "20260104-000000-cnn", wanted, fake_split(swapped=True), finished=True)
    assert find_run(tmp_path, wanted.to_dict(), split) == (tmp_path / "20260101-000000-cnn", True)
    assert find_run(tmp_path, recipe(progress=False).to_dict(), split) == (tmp_path / "20260101-000000-cnn", True)
    assert find_run(tmp_path, recipe(epochs_frozen=2).to_dict(), split) is None


def test_find_run_reuses_the_runs_of_a_compare_folder_moved_elsewhere(tmp_path: Path) -> None:
    """Its runs recorded the old folder's runs/ and split.csv paths; the split itself is compared by its hashes."""
    split = fake_split()
    write_fake_run(tmp_path, "20260101-000000-cnn", recipe(out="/out/runs"), split, finished=True)
    moved = recipe(out="/moved/runs", split=SplitConfig(csv="/moved/splits/split.csv"))
    assert find_run(tmp_path, moved.to_dict(), split) == (tmp_path / "20260101-000000-cnn", True)
    assert find_run(tmp_path, recipe(split=SplitConfig(csv="/moved/split.csv", by="image")).to_dict(), split) is None


def test_find_run_returns_an_interrupted_run_to_resume(tmp_path: Path) -> None:
    wanted, split = recipe(image_size=None), fake_split()
    write_fake_run(tmp_path, "20260102-000000-cnn", wanted, split, finished=False)
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.yaml").write_text(": not yaml : [")
    assert find_run(tmp_path, wanted.to_dict(), split) == (tmp_path / "20260102-000000-cnn", False)


@pytest.mark.parametrize("contents_recorded", [True, False])
def test_find_run_never_reuses_a_run_trained_on_other_images_under_the_same_names(
    tmp_path: Path, contents_recorded: bool
) -> None:
    wanted, old, redrawn = recipe(), fake_split(drawing=0), fake_split(drawing=1)
    assert old.hash == redrawn.hash  # what find_run compared alone before
    run_dir = write_fake_run(tmp_path, "20260101-000000-cnn", wanted, old, True, contents_recorded)
    assert find_run(tmp_path, wanted.to_dict(), old) == (run_dir, True)
    assert find_run(tmp_path, wanted.to_dict(), redrawn) is None


def test_a_run_recorded_before_split_contents_without_its_split_csv_is_not_reused(tmp_path: Path) -> None:
    wanted, split = recipe(), fake_split()
    run_dir = write_fake_run(tmp_path, "20260101-000000-cnn", wanted, split, True, contents_recorded=False)
    (run_dir / "split.csv").unlink()
    assert find_run(tmp_path, wanted.to_dict(), split) is None


def test_compare_trains_again_after_the_data_is_redrawn_under_the_same_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = synthesize(tmp_path / "data", subjects_per_class=6, cells_per_subject=8, image_size=64, separation=2.0)
    run_compare(tiny_config(data, tmp_path / "out"))
    synthesize(data, subjects_per_class=6, cells_per_subject=8, image_size=64, separation=2.0, seed=1)

    class Stop(Exception):
        """Stops the comparison at its first training call."""

    def fake_train(config: TrainConfig, *, announce: bool = True) -> None:
        raise Stop

    monkeypatch.setattr("blastscope.training.train", fake_train)
    monkeypatch.setattr("blastscope.training.resume", lambda *_a, **_k: pytest.fail("the old run is finished"))
    with pytest.raises(Stop):
        run_compare(tiny_config(data, tmp_path / "out"))


def test_budget_defaults_follow_the_data_and_explicit_numbers_win() -> None:
    assert CompareConfig().resolved_budget() == BUDGETS["demo"]
    assert CompareConfig(data=Path("x")).resolved_budget().name == "standard"
    custom = CompareConfig(budget="full", epochs_finetune=3, image_size=64, bootstrap=2000).resolved_budget()
    assert custom.purpose == f"{BUDGETS['full'].purpose}; image size and fine-tuning epochs set by flags"
    assert (custom.name, custom.epochs_frozen, custom.epochs_finetune, custom.image_size) == ("full", 10, 3, 64)
    assert "image size 64 px" in custom.describe()
    with pytest.raises(BlastscopeError, match="budget 'huge' is unknown"):
        CompareConfig(budget="huge").resolved_budget()


def test_the_budget_table_says_where_thresholds_come_from() -> None:
    assert compare.threshold_text(None) == "each run's stored operating point"
    assert compare.threshold_text("0.3").startswith("0.3, with a temperature fitted on the validation split")
    assert compare.threshold_text("val").endswith("stored in each run")
    assert compare.threshold_text("VAL").startswith("chosen on each run's validation split")


def test_inception_is_raised_to_its_minimum_size() -> None:
    assert compare.image_size_for("inception_v3", 48) == 75
    assert compare.image_size_for("cnn", 48) == 48
    assert compare.image_size_for("cnn", None) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ("cnn", "alexnet")}, "unknown model"),
        ({"models": ()}, "no models"),
        ({"cv": 2}, "--cv 2 is too few folds"),
        ({"pretrained": "hub"}, "--pretrained 'hub'"),
        ({"threshold": "best"}, "--threshold 'best' is neither 'val' nor a number"),
        ({"threshold": "1.5"}, r"--threshold 1.5 is outside \[0, 1\]"),
        ({"rank_by": "f1"}, "--rank-by 'f1' is unknown: choose from weighted_f1, accuracy"),
        (
            {"rank_by": "roc_auc_tta"},
            "--rank-by roc_auc_tta ranks by the numbers with test-time augmentation: add --tta",
        ),
    ],
)
def test_bad_requests_stop_before_any_work(changes: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(BlastscopeError, match=message):
        run_compare(CompareConfig(data=tmp_path / "missing", out=tmp_path, **changes))
    assert not (tmp_path / "runs").exists()


def test_without_data_synthetic_cells_are_drawn_once_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = dataset_root(CompareConfig(seed=3), tmp_path)
    assert root == (tmp_path / "data" / "synthetic-seed3").resolve()
    assert json.loads((root / "blastscope-synth.json").read_text())["seed"] == 3
    assert len(list(root.rglob("*_all.png"))) > 0 and len(list(root.rglob("*_hem.png"))) > 0
    assert not list((tmp_path / "data").glob("*.partial"))
    monkeypatch.setattr("blastscope.data.synth.synthesize", lambda *a, **k: pytest.fail("drawn twice"))
    assert dataset_root(CompareConfig(seed=3), tmp_path) == root


@pytest.mark.integration
def test_real_cnmc_cells_are_credited_and_split_by_subject(cnmc_sample: Path, tmp_path: Path) -> None:
    files = run_compare(tiny_config(cnmc_sample, tmp_path, bootstrap=10))
    results = json.loads(files.json.read_text())
    assert results["subject_level"] is True and results["warning"] is None
    assert results["dataset"]["attribution"] == CNMC_ATTRIBUTION
    assert CNMC_ATTRIBUTION in files.html.read_text()


def test_data_without_subjects_is_reported_as_image_level_first(synth_small: Path, tmp_path: Path) -> None:
    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        label = "all" if source.stem.endswith("_all") else "hem"
        target = tmp_path / "folders" / label / f"cell{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    files = run_compare(tiny_config(tmp_path / "folders", tmp_path / "out", rank_by="subject_accuracy"))
    assert "image-level" in "\n".join(files.markdown.read_text().splitlines()[:3])
    results = json.loads(files.json.read_text())
    assert results["subject_level"] is False and results["ranking"][0]["subject_scores_missing"] == "no subject ids"
    row = next(line for line in files.markdown.read_text().splitlines() if line.startswith("| — | cnn"))  # no rank
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "n/a (no subject ids)" and cells.count("n/a (no subject ids)") == 2  # the ranked-by first
    assert results["best"] == "No model has a subject accuracy (no subject ids): not ranked, listed in the order given."


def test_folders_that_sort_the_positive_class_first_are_reported_with_it(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """ALL/ and HEM/ folders sort ALL first: the report names ALL positive, as the console and the runs do."""
    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        target = tmp_path / "folders" / ("ALL" if source.stem.endswith("_all") else "HEM") / f"cell{index}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    files = run_compare(tiny_config(tmp_path / "folders", tmp_path / "out"))
    said = capsys.readouterr()
    assert "positive class: ALL (by its name" in said.out
    assert "positive class" not in said.err  # said once for all runs, not again by each training
    results = json.loads(files.json.read_text())
    assert results["dataset"]["classes"] == ["ALL", "HEM"] and results["positive_class"] == "ALL"
    assert results["ranking"][0]["positive_class"] == results["models"]["cnn"]["positive_class"] == "ALL"
    markdown = files.markdown.read_text()
    assert (
        "Classes: ALL, HEM (positive: ALL)" in markdown and "calls a cell ALL when p(ALL) ≥ its threshold" in markdown
    )
    assert "**Decision threshold**: ALL when p(ALL) ≥" in markdown and "p(HEM)" not in markdown
    run_compare(tiny_config(tmp_path / "folders", tmp_path / "out", threshold="0"))  # every cell called ALL
    printed = capsys.readouterr().out
    assert "warning: cnn: the model calls every test cell ALL" in printed and "(fold" not in printed  # no folds


def test_a_given_threshold_on_three_classes_is_refused_before_any_model_trains(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blastscope.workflows.compare import pipeline

    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        label = "all" if source.stem.endswith("_all") else "hem"
        copies = {label: source.read_bytes()}
        if label == "hem":  # a third class of the same cells, with new bytes so they are not duplicates
            copies["other"] = source.read_bytes() + bytes([index % 256]) * 7
        for name, data in copies.items():
            (tmp_path / "three" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "three" / name / f"cell{index}.png").write_bytes(data)
    monkeypatch.setattr(pipeline, "trained_run", lambda *args: pytest.fail("trained before refusing the threshold"))

    with pytest.raises(BlastscopeError, match=r"--threshold 0\.3 needs a two-class run; .*three has 3 classes"):
        run_compare(tiny_config(tmp_path / "three", tmp_path / "out", threshold="0.3"))


@pytest.mark.parametrize(
    ("recipe", "used"),
    [
        ({"epochs_finetune": 2, "weights_pretrained": True}, True),
        ({"epochs_finetune": 0, "weights_pretrained": True}, False),  # the default recipe: the head alone
        ({"epochs_finetune": 5, "weights_pretrained": False}, False),  # from scratch: one phase at lr_head
    ],
)
def test_the_model_card_says_when_fine_tuning_settings_were_not_used(recipe: dict, used: bool) -> None:
    settings = training_settings({**recipe, "lr_finetune": 3e-4, "unfreeze_stages": 2})
    expected = (3e-4, 2) if used else (None, None)  # left off the card
    assert (settings["lr_finetune"], settings["unfreeze_stages"]) == expected


def test_the_model_card_says_how_the_head_was_fitted() -> None:
    recipe = {"weights_pretrained": True, "epochs_finetune": 0, "lr_head": 1e-3}
    assert (training_settings(recipe)["head_fit"], training_settings(recipe)["lr_head"]) == ("adam", 1e-3)
    logistic = training_settings({**recipe, "head_fit": "logistic"})
    assert (logistic["head_fit"], logistic["lr_head"]) == ("logistic", None)  # fitted in closed form: no rate
    assert training_settings({**recipe, "weights_pretrained": False})["head_fit"] is None


def test_the_model_card_says_a_head_trained_on_cached_features_saw_no_augmentation() -> None:
    """The default recipe trains its head on features computed once from unaugmented images: its card listed the
    augmentation switches as if they had been applied."""
    recipe = {"weights_pretrained": True, "cached_features": True, "augmentation": {"hflip": True}}
    assert training_settings({**recipe, "epochs_finetune": 0})["augmentation"].startswith("none (the head trained")
    assert training_settings({**recipe, "epochs_finetune": 2})["augmentation"] == "hflip"
    from_scratch = training_settings({**recipe, "weights_pretrained": False, "epochs_finetune": 2})
    assert (from_scratch["augmentation"], from_scratch["cached_features"]) == ("hflip", None)
