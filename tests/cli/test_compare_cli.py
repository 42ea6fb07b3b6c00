"""The ``blastscope compare`` command line, and the README's main command run end to end at its defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from blastscope.cli import build_parser, main
from blastscope.workflows.compare import DEFAULT_MODELS, CompareConfig
from blastscope.workflows.report import DEFAULT_RANK_METRIC, rank_metric_choices


def test_ctrl_c_says_the_same_command_picks_up_where_it_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """compare's runs are reused when finished and resumed when interrupted (``trained_run``): its interrupt line
    says so, not train's ``--resume RUN_DIR``."""

    def interrupted(config: CompareConfig) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("blastscope.workflows.compare.run_compare", interrupted)
    assert main(["compare", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"blastscope: interrupted; running the same command again (the same --out {tmp_path / 'out'}) reuses the "
        f"runs finished in {tmp_path / 'out' / 'runs'} and resumes the interrupted one"
    )


def test_flags_reach_the_comparison(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    seen: list[CompareConfig] = []

    def fake_compare(config: CompareConfig):
        seen.append(config)
        from blastscope.workflows.report import ReportFiles

        return ReportFiles(
            tmp_path / "report.html", tmp_path / "report.md", tmp_path / "results.csv", tmp_path / "results.json", []
        )

    monkeypatch.setattr("blastscope.workflows.compare.run_compare", fake_compare)
    argv = [
        "compare",
        "--data",
        str(tmp_path),
        "--models",
        "cnn, resnet50",
        "--cv",
        "3",
        "--out",
        str(tmp_path / "o"),
        "--epochs-frozen",
        "2",
        "--epochs-finetune",
        "4",
        "--image-size",
        "64",
        "--seed",
        "7",
        "--pretrained",
        "none",
        "--threshold",
        "val",
        "--budget",
        "full",
        "--no-progress",
    ]
    assert main(argv) == 0
    (config,) = seen
    assert config.models == ("cnn", "resnet50") and config.cv == 3 and config.seed == 7
    assert (config.epochs_frozen, config.epochs_finetune, config.image_size) == (2, 4, 64)
    assert (config.pretrained, config.threshold, config.budget, config.progress) == ("none", "val", "full", False)
    assert "report.html" in capsys.readouterr().out
    assert main(["compare"]) == 0 and seen[1].models == DEFAULT_MODELS and seen[1].data is None
    assert seen[1].threshold is None, "by default every run is scored at its stored operating point"
    assert (seen[1].tta, seen[1].rank_by) == (False, DEFAULT_RANK_METRIC)
    assert main(["compare", "--threshold", "0.3"]) == 0 and seen[2].threshold == "0.3"
    assert main(["compare", "--tta", "--rank-by", "subject_accuracy_tta"]) == 0
    assert (seen[3].tta, seen[3].rank_by) == (True, "subject_accuracy_tta")


def test_the_help_names_every_ranking_metric(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    ranking = help_text.split("--rank-by METRIC")[-1]
    assert all(re.search(rf"\b{name}\b", ranking) for name in rank_metric_choices(False))
    assert "with --tta also each with _tta" in ranking and "with TTA (8 views)" in help_text


def test_the_help_says_the_default_is_each_runs_stored_point(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--threshold val|X" in help_text and "chosen by compare" in help_text
    assert "default: score each run at the operating point stored in it" in help_text


def test_a_bad_request_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", "--models", "cnn,alexnet", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("blastscope: error: unknown model(s) alexnet: choose from") and "\n" not in error
    assert main(["compare", "--rank-by", "weighted_f1_tta", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--rank-by weighted_f1_tta ranks by the numbers with test-time augmentation: add --tta" in error
    assert "\n" not in error
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_main_command_end_to_end_on_two_of_its_models(tmp_path: Path) -> None:
    """The README's main job, `blastscope compare` with no data, end to end in a fresh process on two of its eight
    models (one ImageNet, one random init): synthetic cells drawn, one split, training, evaluation and the report. All
    eight, the demo's accuracy band and its time are ``benchmarks/bench_main_job.py``'s (minutes of CPU)."""
    models = ["cnn", "efficientnet_lite0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "blastscope", "compare", "--no-progress", "--models", ",".join(models)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "budget demo" in done.stdout
    out = tmp_path / "blastscope-out"
    results = json.loads((out / "results.json").read_text())
    assert sorted(row["model"] for row in results["ranking"]) == models
    assert results["subject_level"] is True
    best = results["ranking"][0]
    assert best["weighted_f1_ci_low"] <= best["weighted_f1"] <= best["weighted_f1_ci_high"]
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", page)
    # per model: training curves, confusion matrix, ROC, calibration and the risk-coverage (referral) curve
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2 + 5 * len(models)
    for needle in (
        "synthetic cells generated by blastscope synth, seed 0",
        "ROC curves",
        "Dataset card",
        "not a diagnostic device",
        "ImageNet",
        "random init",
    ):
        assert needle.lower() in page.lower()
    assert (out / "results.csv").read_text().count("\n") == 1 + len(models)


EPOCHS = "is not a number of epochs; give a whole number of at least 0, e.g. 5"


@pytest.mark.parametrize(
    ("option", "bad", "refusal"),
    [
        ("--epochs-frozen", "-1", EPOCHS),
        ("--epochs-finetune", "1.5", EPOCHS),
        ("--image-size", "0", "is not an image size in pixels; give a whole number of at least 1, e.g. 224"),
        (
            "--batch-size",
            "0",
            "is not a batch size; give a whole number of at least 1, e.g. 32",
        ),  # was taken, to fail in training
        ("--bootstrap", "-1", "is not a number of resamples; give a whole number of at least 0, e.g. 1000"),
        *(
            (
                "--cv",
                bad,
                "is not a number of folds; give a whole number of at least 3 (each fold is tested once, another "
                "validates, the rest train), e.g. 5",
            )
            for bad in ("0", "2")
        ),
    ],
)
def test_unusable_numbers_are_refused_by_argparse_in_one_line_naming_the_option(
    option: str, bad: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before anything is trained or drawn, as scan and serve refuse theirs (run() took a batch size of 0)."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["compare", f"{option}={bad}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blastscope compare: error: argument {option}: {bad!r} {refusal}"
    )


def test_zero_epochs_and_zero_resamples_are_taken() -> None:
    """A phase of 0 epochs is skipped, and 0 resamples turn the CIs off."""
    args = build_parser().parse_args(["compare", "--epochs-frozen", "0", "--bootstrap", "0", "--cv", "3"])
    assert (args.epochs_frozen, args.bootstrap, args.cv) == (0, 0, 3)
