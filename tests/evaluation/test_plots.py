"""Each report figure carries the titles, axis labels, legend entries and class names a reader needs, and renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from blastscope.evaluation import plots


@pytest.fixture(autouse=True)
def _no_open_figures() -> None:
    yield
    import matplotlib.pyplot as plt

    assert not plt.get_fignums(), "a figure was left open"


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()]


def rendered(figure: Figure, path: Path) -> bytes:
    data = plots.to_png(figure, path)
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert path.read_bytes() == data
    return data


def test_training_curves_mark_the_phase_change(tmp_path: Path) -> None:
    history = [
        plots.HistoryRow(e, "frozen" if e < 2 else "finetune", 0.7 - 0.1 * e, 0.8 - 0.1 * e, 0.6 + 0.1 * e)
        for e in range(5)
    ]
    figure = plots.training_curves(history, "resnet50 (random init)")
    loss_axes, f1_axes = figure.axes
    assert (loss_axes.get_xlabel(), loss_axes.get_ylabel()) == ("epoch", "cross-entropy loss")
    assert f1_axes.get_ylabel() == "weighted F1"
    assert "resnet50 (random init)" in figure.get_suptitle()
    boundaries = [line for line in loss_axes.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in boundaries] == [1.5]
    assert {"train loss", "validation loss", "finetune phase starts", "validation weighted F1"} <= set(
        legend_texts(figure)
    )
    rendered(figure, tmp_path / "curves.png")


def test_single_phase_history_draws_no_boundary(tmp_path: Path) -> None:
    history = [plots.HistoryRow(e, "full", 0.7, 0.8, 0.6) for e in range(3)]
    figure = plots.training_curves(history, "cnn")
    assert not [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    rendered(figure, tmp_path / "curves.png")


def test_one_epoch_is_ticked_at_whole_epochs_only(tmp_path: Path) -> None:
    """A one-epoch run (a quick compare) had its lone epoch ticked 0.96, 0.98, 1.00, 1.02, 1.04."""
    figure = plots.training_curves([plots.HistoryRow(1, "full", 0.7, 0.69, 0.33)], "cnn")
    rendered(figure, tmp_path / "curves.png")
    for axes in figure.axes:
        low, high = axes.get_xlim()
        assert [tick for tick in axes.get_xticks() if low <= tick <= high] == [1]


def test_training_curves_of_one_of_several_trainings_say_which(tmp_path: Path) -> None:
    """Under ``compare --cv`` only the caption said the curves were fold 1's; the picture alone did not."""
    figure = plots.training_curves([plots.HistoryRow(1, "full", 0.7, 0.69, 0.33)], "cnn", "fold 1 of 3")
    assert figure.get_suptitle() == "cnn: training curves (fold 1 of 3)"
    rendered(figure, tmp_path / "curves.png")


def test_confusion_matrix_shows_counts_row_shares_and_class_names(tmp_path: Path) -> None:
    figure = plots.confusion_matrix(
        [[30, 10], [5, 55]], ["HEM", "ALL"], "cnn (random init)", "called ALL when p(ALL) ≥ 0.500"
    )
    axes = figure.axes[0]
    assert axes.get_title() == "cnn (random init)\ncalled ALL when p(ALL) ≥ 0.500"
    cells = [text.get_text() for text in axes.texts]
    assert cells == ["30\n75.0%", "10\n25.0%", "5\n8.3%", "55\n91.7%"]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["HEM", "ALL"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["HEM", "ALL"]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    rendered(figure, tmp_path / "confusion.png")


def test_roc_puts_every_model_with_its_auc_and_chance_on_one_plot(tmp_path: Path) -> None:
    curves = {"cnn": ([0, 0.5, 1], [0, 0.7, 1], 0.6), "efficientnet_lite0": ([0, 0.1, 1], [0, 0.9, 1], 0.9)}
    figure = plots.roc_curves(curves, "ALL")
    assert legend_texts(figure) == ["efficientnet_lite0 (AUC 0.900)", "cnn (AUC 0.600)", "chance (AUC 0.500)"]
    axes = figure.axes[0]
    assert "sensitivity" in axes.get_ylabel() and "specificity" in axes.get_xlabel()
    assert "positive class: ALL" in axes.get_title()
    rendered(figure, tmp_path / "roc.png")


def test_models_keep_their_colour_whatever_subset_is_shown() -> None:
    alone = plots.model_colors(["resnet50"])
    together = plots.model_colors(["efficientnet_lite0", "cnn", "resnet50", "my_net"])
    assert alone["resnet50"] == together["resnet50"]
    assert len(set(together.values())) == 4


def test_reliability_diagram_titles_ece_before_and_after(tmp_path: Path) -> None:
    before = plots.ReliabilityCurve([0.6, 0.9], [0.5, 0.7], [10, 30], 0.142)
    after = plots.ReliabilityCurve([0.6, 0.9], [0.58, 0.88], [12, 28], 0.021)
    figure = plots.reliability_diagram(before, after, "cnn", "3 folds' test cells pooled", 2)
    axes = figure.axes[0]
    assert axes.get_title().startswith("cnn: reliability (3 folds' test cells pooled)\n")  # which cells, not just ECE
    assert "ECE 0.142 → 0.021 after temperature scaling" in axes.get_title()
    assert legend_texts(figure) == [
        "perfectly calibrated",
        "before scaling (dot size: cells)",
        "after temperature scaling (dot size: cells)",
    ]
    assert "confidence" in axes.get_xlabel() and "accuracy" in axes.get_ylabel()
    rendered(figure, tmp_path / "reliability.png")


def test_reliability_diagram_shows_edge_dots_whole_over_the_confidences_there_can_be(tmp_path: Path) -> None:
    """Dots at accuracy 0 or 1 and confidence 1 were cut by the frame, and for two classes the x axis's left half
    (confidence below 0.5, which the predicted class never has) was always empty."""
    curve = plots.ReliabilityCurve([0.55, 0.75, 1.0], [0.0, 0.8, 1.0], [40, 10, 50], 0.1)
    binary = plots.reliability_diagram(curve, None, "cnn", "test split", 2).axes[0]
    low, high = binary.get_xlim()
    assert 0.45 < low < 0.5 and 1.0 < high < 1.05 and "predicted class" in binary.get_xlabel()
    bottom, top = binary.get_ylim()
    assert -0.05 < bottom < 0.0 and 1.0 < top < 1.05
    np.testing.assert_allclose(binary.get_lines()[0].get_xydata(), [[0.5, 0.5], [1, 1]])  # the diagonal
    rendered(binary.figure, tmp_path / "reliability.png")
    three = plots.reliability_diagram(curve, None, "cnn", "test split", 3).axes[0]
    assert 0.3 < three.get_xlim()[0] < 1 / 3 and "1/3" in three.get_xlabel()
    rendered(three.figure, tmp_path / "reliability-3.png")


def tick_labels(axis: object) -> list[str]:
    axis.figure.canvas.draw()  # type: ignore[attr-defined]
    return [label.get_text() for label in axis.get_ticklabels()]  # type: ignore[attr-defined]


def test_percent_ticks_carry_no_decimal_they_do_not_need(tmp_path: Path) -> None:
    """The risk-coverage plot's error axis read 0.0%, 2.5%... and 0.0%, 5.0%, 10.0% alike."""
    whole = {"curve": {"coverage": [0.5, 1.0], "error": [0.02, 0.125]}, "band": None, "n": 20}
    axes = plots.risk_coverage(plots.RiskCoverage.from_report(whole, "all", None), "cnn").axes[0]
    assert tick_labels(axes.yaxis)[:3] == ["0%", "2%", "4%"] and tick_labels(axes.xaxis)[-1] == "100%"
    rendered(axes.figure, tmp_path / "whole.png")
    halves = {"curve": {"coverage": [0.5, 1.0], "error": [0.01, 0.03]}, "band": None, "n": 20}
    axes = plots.risk_coverage(plots.RiskCoverage.from_report(halves, "all", None), "cnn").axes[0]
    assert tick_labels(axes.yaxis)[:3] == ["0.0%", "0.5%", "1.0%"]  # one decimal where a tick needs it
    rendered(axes.figure, tmp_path / "halves.png")
    subjects = plots.subject_accuracy([plots.SubjectAccuracy("7", "ALL", 0.9, 30)], ["HEM", "ALL"], "cnn").axes[0]
    assert tick_labels(subjects.yaxis)[:2] == ["0%", "20%"]
    rendered(subjects.figure, tmp_path / "subjects.png")


def test_subject_accuracy_groups_subjects_by_true_class(tmp_path: Path) -> None:
    subjects = [
        plots.SubjectAccuracy("7", "ALL", 0.9, 30),
        plots.SubjectAccuracy("H2", "HEM", 0.4, 12),
        plots.SubjectAccuracy("3", "ALL", 0.6, 25),
    ]
    figure = plots.subject_accuracy(subjects, ["HEM", "ALL"], "cnn")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["H2\n(12)", "3\n(25)", "7\n(30)"]
    assert [t.get_text() for t in axes.texts] == ["40%", "60%", "90%"]  # a 0% bar is labelled, not just absent
    bar_colors = [tuple(np.round(patch.get_facecolor()[:3], 3)) for patch in axes.patches]
    assert bar_colors[0] != bar_colors[1] and bar_colors[1] == bar_colors[2]
    assert legend_texts(figure) == ["true class HEM", "true class ALL"]
    assert axes.get_xlabel().startswith("subject") and "accuracy" in axes.get_ylabel()
    rendered(figure, tmp_path / "subjects.png")


def test_ranking_puts_the_best_model_on_top_with_its_interval(tmp_path: Path) -> None:
    scores = [plots.RankedScore("cnn", 0.7, 0.6, 0.8), plots.RankedScore("vgg16", 0.9, 0.85, 0.95)]
    figure = plots.ranking(scores, "weighted F1", "95% bootstrap CI")
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_yticklabels()]
    assert labels[-1] == "vgg16"  # barh draws bottom-up: the last tick is the top bar
    assert axes.get_xlabel() == "weighted F1 (error bars: 95% bootstrap CI)"
    assert [round(w, 3) for w in (patch.get_width() for patch in axes.patches)] == [0.7, 0.9]
    (error_bars,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    segments = error_bars.lines[2][0].get_segments()
    assert [(round(s[0][0], 3), round(s[1][0], 3)) for s in segments] == [(0.6, 0.8), (0.85, 0.95)]
    rendered(figure, tmp_path / "ranking.png")


def test_risk_coverage_marks_the_band_the_target_and_no_referral(tmp_path: Path) -> None:
    referral = {
        "curve": {"coverage": [0.25, 0.5, 0.75, 1.0], "error": [0.0, 0.02, 0.05, 0.12]},
        "band": [0.31, 0.72],
        "n": 400,
        "coverage": 0.7,
        "error_called": 0.046,
    }
    curve = plots.RiskCoverage.from_report(referral, "all", 0.05)
    figure = plots.risk_coverage(curve, "cnn (random init)")
    axes = figure.axes[0]
    assert axes.get_title() == "cnn (random init): errors against cells called (test split)"
    assert "400 cells" in axes.get_xlabel() and "referred to a person" in axes.get_xlabel()
    assert legend_texts(figure) == [
        "referring the cells nearest the threshold first",
        "no referral: 12.0% errors",
        "target: at most 5% errors",
        "refer when 0.310 < p(ALL) < 0.720 (chosen on validation): 30% referred, 4.6% errors",
    ]
    np.testing.assert_allclose(axes.get_lines()[0].get_xydata(), [[25, 0], [50, 2], [75, 5], [100, 12]])
    (target,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert target.get_ydata()[0] == 5
    star = axes.collections[-1].get_offsets()
    np.testing.assert_allclose(star, [[70, 4.6]])
    rendered(figure, tmp_path / "risk_coverage.png")


def test_risk_coverage_shows_no_referral_where_a_band_that_refers_no_cell_sits_on_it(tmp_path: Path) -> None:
    """The star of a band that refers no cell hid the no-referral circle at the same point."""
    referral = {
        "curve": {"coverage": [0.5, 1.0], "error": [0.0, 0.078]},
        "band": [0.43, 0.43],
        "n": 64,
        "coverage": 1.0,
        "error_called": 0.078,
    }
    figure = plots.risk_coverage(plots.RiskCoverage.from_report(referral, "all", 0.2), "cnn")
    ring, star = figure.axes[0].collections
    np.testing.assert_allclose(ring.get_offsets(), star.get_offsets())
    assert ring.get_zorder() > star.get_zorder() and ring.get_sizes()[0] > star.get_sizes()[0]
    assert not len(ring.get_facecolor())  # hollow: the star shows through
    rendered(figure, tmp_path / "risk_coverage.png")


def test_risk_coverage_without_a_band_shows_the_curve_only(tmp_path: Path) -> None:
    referral = {"curve": {"coverage": [0.5, 1.0], "error": [0.01, 0.1]}, "band": None, "n": 20}
    figure = plots.risk_coverage(plots.RiskCoverage.from_report(referral, "all", None), "cnn", "cnmc-dev")
    assert figure.axes[0].get_title() == "cnn: errors against cells called (cnmc-dev)"
    assert legend_texts(figure) == ["referring the cells nearest the threshold first", "no referral: 10.0% errors"]
    rendered(figure, tmp_path / "risk_coverage.png")


def test_risk_coverage_of_a_model_wrong_on_every_cell_stops_its_axis_near_100_percent(tmp_path: Path) -> None:
    referral = {"curve": {"coverage": [0.5, 1.0], "error": [1.0, 1.0]}, "band": None, "n": 20}
    figure = plots.risk_coverage(plots.RiskCoverage.from_report(referral, "all", None), "cnn")
    axes = figure.axes[0]
    assert axes.get_ylim()[1] == 105  # not 120%
    assert not axes.collections[0].get_clip_on()  # the no-referral circle on the right edge is drawn whole
    rendered(figure, tmp_path / "risk_coverage.png")


def test_risk_coverage_draws_the_no_referral_ring_clear_of_the_frame_with_no_tick_past_100_percent(
    tmp_path: Path,
) -> None:
    """The ring at 100% called sat on the right edge of the frame, half over it."""
    referral = {"curve": {"coverage": [0.5, 1.0], "error": [0.02, 0.1]}, "band": None, "n": 20}
    figure = plots.risk_coverage(plots.RiskCoverage.from_report(referral, "all", None), "cnn")
    axes = figure.axes[0]
    assert 100 < axes.get_xlim()[1] <= 105 and axes.get_xlim()[0] == 0
    assert tick_labels(axes.xaxis)[-1] == "100%"  # the margin is not ticked
    rendered(figure, tmp_path / "risk_coverage.png")


def test_risk_coverage_tells_a_narrow_bands_edges_apart(tmp_path: Path) -> None:
    """A band 0.4898-0.4903 read 'refer when 0.49 < p(ALL) < 0.49'."""
    referral = {
        "curve": {"coverage": [0.5, 1.0], "error": [0.02, 0.1]},
        "band": [0.4898, 0.4903],
        "n": 200,
        "coverage": 0.99,
        "error_called": 0.095,
    }
    figure = plots.risk_coverage(plots.RiskCoverage.from_report(referral, "all", None), "cnn")
    assert legend_texts(figure)[-1].startswith("refer when 0.4898 < p(ALL) < 0.4903 (chosen on validation)")
    rendered(figure, tmp_path / "risk_coverage.png")


def test_subject_accuracy_labels_halves_of_a_percent_without_rounding_them_apart(tmp_path: Path) -> None:
    """5/8 read 62% and 7/8 read 88%: round-half-even sent one down and the other up."""
    subjects = [
        plots.SubjectAccuracy("1", "ALL", 5 / 8, 8),
        plots.SubjectAccuracy("2", "ALL", 7 / 8, 8),
        plots.SubjectAccuracy("3", "ALL", 0.9, 10),
        plots.SubjectAccuracy("H1", "HEM", 1 / 3, 3),
    ]
    figure = plots.subject_accuracy(subjects, ["HEM", "ALL"], "cnn")
    assert [t.get_text() for t in figure.axes[0].texts] == ["33.3%", "62.5%", "87.5%", "90%"]
    rendered(figure, tmp_path / "subjects.png")
