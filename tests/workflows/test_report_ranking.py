"""The ranking: by the metric asked for, with TTA rows and subject-level columns, saying what it ranked by."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from blastscope.data.attribution import CNMC_ATTRIBUTION
from blastscope.workflows.report import Comparison, DatasetCard, ModelResult, summary_text, write_report
from blastscope.workflows.report.content import metric_table
from blastscope.workflows.report.ranking import (
    NO_RANK,
    TTA_ROW,
    best_statement,
    ranking_notes,
    ranking_statement,
    ranking_table,
)

CLASSES = ("hem", "all")


def _model(name: str, scores: dict[str, float | None], missing: str | None = None, n_subjects: int = 8) -> ModelResult:
    """A model with the given scores (``_tta`` names included) and a CI of ± 0.01 around weighted F1 and its TTA."""
    intervals = {
        key: (value - 0.01, value + 0.01)
        for key, value in scores.items()
        if key in ("weighted_f1", "weighted_f1_tta") and value is not None
    }
    return ModelResult(
        name=name,
        display_name=f"{name} (random init)",
        weights_source="random init",
        pretrained=False,
        classes=CLASSES,
        positive_class="all",
        metrics=scores,
        intervals=intervals,
        confusion=[[10, 2], [3, 9]],
        roc=None,
        reliability_before=None,
        reliability_after=None,
        subjects=[],
        history=[],
        train_seconds=None,
        images_per_second=None,
        settings={},
        run_dir=f"runs/{name}",
        threshold=0.5,
        threshold_origin="default threshold, by train",
        n_subjects=None if missing else n_subjects,
        subject_scores_missing=missing,
    )


def _comparison(models: list[ModelResult], rank_by: str = "weighted_f1", tta: bool = False, **changes) -> Comparison:
    card = DatasetCard(
        root="cells",
        kind="cnmc",
        classes=CLASSES,
        positive_class="all",
        cells_per_part={"train": {"hem": 10, "all": 10}, "val": {"hem": 5, "all": 5}, "test": {"hem": 12, "all": 12}},
        subjects=[],
        subject_level=True,
        attribution=CNMC_ATTRIBUTION,
    )
    return Comparison(card, models, {"budget": "demo"}, "2026-01-01 00:00 UTC", rank_by=rank_by, tta=tta, **changes)


def _scores(f1: float, auc: float, subject: float | None, f1_tta: float, subject_tta: float | None) -> dict:
    return {
        "weighted_f1": f1,
        "roc_auc": auc,
        "subject_accuracy": subject,
        "subject_balanced_accuracy": subject,
        "weighted_f1_tta": f1_tta,
        "roc_auc_tta": auc,
        "subject_accuracy_tta": subject_tta,
        "subject_balanced_accuracy_tta": subject_tta,
    }


def _three() -> list[ModelResult]:
    return [
        _model("cnn", _scores(0.80, 0.95, 0.625, 0.90, 0.75)),
        _model("resnet50", _scores(0.85, 0.85, 0.875, 0.86, 0.875)),
        _model("vgg16", _scores(0.70, 0.90, 1.0, 0.71, 1.0)),
    ]


def _column(table: tuple[list[str], list[list[str]]], name: str) -> list[str]:
    header, rows = table
    return [row[header.index(name)] for row in rows]


@pytest.mark.parametrize(
    ("rank_by", "order", "label", "best"),
    [
        (
            "weighted_f1",
            ["resnet50", "cnn", "vgg16"],
            "weighted F1 (the C-NMC 2019 challenge metric)",
            "Best by weighted F1: resnet50 (0.850 [0.840, 0.860]).",
        ),
        ("roc_auc", ["cnn", "vgg16", "resnet50"], "ROC-AUC", "Best by ROC-AUC: cnn (0.950)."),
        (
            "subject_accuracy",
            ["vgg16", "resnet50", "cnn"],
            "subject accuracy",
            "Best by subject accuracy: vgg16 (1.000 (8 of 8)).",
        ),
    ],
)
def test_the_ranking_follows_the_metric_asked_for_and_says_which(
    rank_by: str, order: list[str], label: str, best: str
) -> None:
    comparison = _comparison(_three(), rank_by)
    assert [model.name for model in comparison.ranked] == order
    assert _column(ranking_table(comparison), "model") == order
    statement = ranking_statement(comparison)
    assert statement.startswith(f"Ranked by {label}; brackets: 95% bootstrap CI") and statement.endswith(best)
    summary = summary_text(comparison).splitlines()
    assert summary[0] == statement.removesuffix(best).rstrip() and summary[-1] == best


def test_overlapping_intervals_of_the_first_two_are_said() -> None:
    models = _three()
    models[0].intervals["weighted_f1"] = (0.70, 0.86)  # cnn's CI reaches resnet50's
    statement = ranking_statement(_comparison(models))
    assert "its interval overlaps that of cnn (0.800 [0.700, 0.860]), so these data do not settle" in statement
    assert "overlaps" not in ranking_statement(_comparison(_three()))


def test_tta_rows_sit_under_each_model_and_a_tta_metric_ranks() -> None:
    comparison = _comparison(_three(), "weighted_f1_tta", tta=True)
    assert [model.name for model in comparison.ranked] == ["cnn", "resnet50", "vgg16"]
    table = ranking_table(comparison)
    assert _column(table, "model") == ["cnn", TTA_ROW, "resnet50", TTA_ROW, "vgg16", TTA_ROW]
    assert _column(table, "weighted F1")[:2] == ["0.800 [0.790, 0.810]", "0.900 [0.890, 0.910]"]
    assert _column(table, "rank") == ["1", "", "2", "", "3", ""] and _column(table, "threshold")[1] == "same"
    statement = ranking_statement(comparison)
    assert statement.startswith("Ranked by weighted F1 with TTA (8 views);")
    assert "Best by weighted F1 with TTA (8 views): cnn (0.900 [0.890, 0.910])." in statement
    assert any(note.startswith(f"Rows '{TTA_ROW}'") for note in ranking_notes(comparison))
    header, rows = metric_table(comparison.models[0], comparison)
    assert header == ["metric", "value", "with TTA (8 views)"]
    assert rows[0] == ["weighted F1", "0.800 [0.790, 0.810]", "0.900 [0.890, 0.910]"]
    summary = summary_text(comparison).splitlines()
    assert summary[-1].startswith("Best by weighted F1 with TTA (8 views): cnn")
    assert "with TTA (8 views)" in summary[3] and "0.900 [0.890, 0.910]" in summary[3]


def test_without_tta_there_are_no_tta_rows_or_columns() -> None:
    comparison = _comparison(_three())
    assert TTA_ROW not in _column(ranking_table(comparison), "model")
    assert metric_table(comparison.models[0], comparison)[0] == ["metric", "value"]
    assert "TTA" not in summary_text(comparison)


def test_subject_scores_show_counts_or_why_they_are_missing_and_such_a_model_ranks_last() -> None:
    models = _three()
    models[1] = _model("resnet50", _scores(0.85, 0.85, None, 0.86, None), missing="no subject ids")
    comparison = _comparison(models, "subject_accuracy")
    assert [model.name for model in comparison.ranked] == ["vgg16", "cnn", "resnet50"]
    column = _column(ranking_table(comparison), "subject accuracy")
    assert column == ["1.000 (8 of 8)", "0.625 (5 of 8)", "n/a (no subject ids)"]
    assert _column(ranking_table(comparison), "subject balanced accuracy")[2] == "n/a (no subject ids)"
    notes = ranking_notes(comparison)
    assert "Ranked last, having no subject accuracy: resnet50 (no subject ids)." in notes
    assert any("one call per test subject, from the mean probability of their cells" in note for note in notes)
    assert summary_text(comparison).splitlines()[-2] == "Ranked last, having no subject accuracy: resnet50."


def test_when_no_model_has_the_score_nothing_is_called_best() -> None:
    models = [
        _model(name, _scores(f1, 0.9, None, f1, None), missing="no subject ids")
        for name, f1 in [("a", 0.7), ("b", 0.9)]
    ]
    comparison = _comparison(models, "subject_accuracy")
    assert [model.name for model in comparison.ranked] == ["a", "b"]  # the order given
    statement = ranking_statement(comparison)
    assert "No model has a subject accuracy (no subject ids): not ranked, listed in the order given." in statement
    assert "Best" not in statement
    assert not any(note.startswith("Ranked last") for note in ranking_notes(comparison))
    assert not any("one call per test subject" in note for note in ranking_notes(comparison))


def test_under_cross_validation_subject_scores_are_mean_and_sd_over_folds() -> None:
    models = _three()
    for model, base in zip(models, (0.6, 0.9, 0.75), strict=True):
        model.fold_metrics = [{"weighted_f1": 0.8, "subject_accuracy": base + d} for d in (-0.1, 0.0, 0.1)]
    comparison = _comparison(models, "subject_accuracy", cv_folds=3)
    assert [model.name for model in comparison.ranked] == ["resnet50", "vgg16", "cnn"]
    assert _column(ranking_table(comparison), "subject accuracy")[0] == "0.900 ± 0.100"


def test_the_files_carry_the_ranking_metric_tta_and_subject_columns(tmp_path: Path) -> None:
    models = _three()
    models[2] = _model("vgg16", _scores(0.70, 0.90, None, 0.71, None), missing="no subject ids")
    write_report(_comparison(models, "subject_accuracy_tta", tta=True), tmp_path)
    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["resnet50", "cnn", "vgg16"]
    assert {row["ranked_by"] for row in rows} == {"subject_accuracy_tta"}
    assert float(rows[1]["weighted_f1_tta"]) == pytest.approx(0.90)
    assert float(rows[1]["weighted_f1_tta_ci_low"]) == pytest.approx(0.89)
    assert (rows[0]["n_subjects"], rows[2]["subject_scores_missing"], rows[2]["subject_accuracy"]) == (
        "8",
        "no subject ids",
        "",
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert (results["ranked_by"], results["tta"]) == ("subject_accuracy_tta", True)
    assert results["best"] == "Best by subject accuracy with TTA (8 views): resnet50 (0.875 (7 of 8))."
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "Ranked by subject accuracy with TTA (8 views);" in text and TTA_ROW in text
        assert "n/a (no subject ids)" in text
    assert "Ranking by subject accuracy with TTA (8 views); error bars: none" in (tmp_path / "report.md").read_text()
    header = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| rank |"))
    assert header.startswith("| rank | model | weights | subject accuracy | weighted F1 |")  # the ranked-by first


def test_models_tied_for_first_share_the_rank_and_the_statement_says_the_order_is_only_the_given_one() -> None:
    models = _three()
    models[0] = _model("cnn", _scores(0.85, 0.95, 0.625, 0.90, 0.75))  # ties resnet50 on weighted F1
    comparison = _comparison(models)
    assert [model.name for model in comparison.ranked] == ["cnn", "resnet50", "vgg16"]  # the order given
    assert _column(ranking_table(comparison), "rank") == ["1", "1", "3"]
    best = (
        "Best by weighted F1: a tie between cnn (0.850 [0.840, 0.860]) and resnet50 (0.850 [0.840, 0.860]); cnn is "
        "listed first only because it was given first, not because it scored higher."
    )
    assert ranking_statement(comparison).endswith(best) and summary_text(comparison).splitlines()[-1] == best
    assert [row.split()[0] for row in summary_text(comparison).splitlines()[2:5]] == ["1", "1", "3"]
    assert not any(note.startswith("Tied on") for note in ranking_notes(comparison))  # said once, above the table


def test_a_tie_below_first_place_is_noted_under_the_table() -> None:
    models = _three()
    models[2] = _model("vgg16", _scores(0.80, 0.90, 1.0, 0.71, 1.0))  # ties cnn for second
    comparison = _comparison(models)
    assert _column(ranking_table(comparison), "rank") == ["1", "2", "2"]
    assert "tie" not in best_statement(comparison)
    assert (
        "Tied on weighted F1 (0.800 [0.790, 0.810]), sharing rank 2: cnn and vgg16; listed in the order given, which "
        "says nothing about which is better."
    ) in ranking_notes(comparison)


def test_models_without_the_score_get_no_rank_in_any_table_or_file(tmp_path: Path) -> None:
    models = _three()
    models[1] = _model("resnet50", _scores(0.85, 0.85, None, 0.86, None), missing="no subject ids")
    comparison = _comparison(models, "subject_accuracy")
    assert _column(ranking_table(comparison), "rank") == ["1", "2", NO_RANK]
    assert summary_text(comparison).splitlines()[4].split()[0] == NO_RANK
    nothing = _comparison(
        [_model(name, _scores(0.8, 0.9, None, 0.8, None), missing="no subject ids") for name in ("a", "b")],
        "subject_accuracy",
    )
    assert _column(ranking_table(nothing), "rank") == [NO_RANK, NO_RANK]  # nothing was ranked
    write_report(nothing, tmp_path)
    with (tmp_path / "results.csv").open() as handle:
        assert [row["rank"] for row in csv.DictReader(handle)] == ["", ""]
    assert [row["rank"] for row in json.loads((tmp_path / "results.json").read_text())["ranking"]] == [None, None]


def test_scores_equal_but_for_rounding_error_are_a_tie() -> None:
    models = _three()[:2]
    models[0].fold_metrics = [{"weighted_f1": value} for value in (0.1, 0.2, 0.7)]
    models[1].fold_metrics = [{"weighted_f1": value} for value in (0.7, 0.2, 0.1)]
    assert _column(ranking_table(_comparison(models, cv_folds=3)), "rank") == ["1", "1"]
    models = _three()[:2]
    models[0].metrics["weighted_f1"] = 0.1 + 0.2  # 0.30000000000000004
    models[1].metrics["weighted_f1"] = 0.3
    assert _column(ranking_table(_comparison(models)), "rank") == ["1", "1"]
