"""`blastscope evaluate`: a readable summary, evaluation.json, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blastscope.cli import main


@pytest.fixture(scope="module")
def small_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "train",
            "--data",
            str(synth_small),
            "--model",
            "cnn",
            "--pretrained",
            "none",
            "--image-size",
            "32",
            "--epochs-frozen",
            "0",
            "--epochs-finetune",
            "1",
            "--num-workers",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    (run_dir,) = out.iterdir()
    return run_dir


def test_evaluate_writes_json_and_prints_an_aligned_summary(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["evaluate", str(small_run), "--bootstrap", "40", "--tta", "--threshold", "val", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["plain"]["threshold"]["source"] == "val:weighted_f1"
    assert evaluation["plain"]["bootstrap"]["n_resamples"] == 40 and evaluation["tta"] is not None
    assert (tmp_path / "predictions.csv").read_text().startswith("path,subject,label,p_hem,p_all")
    assert "weights: random init" in out and "95% CI (40 resamples of subjects)" in out and "with TTA" in out
    table = [line for line in out.splitlines() if line.startswith(("weighted F1", "accuracy", "ROC-AUC"))]
    assert len(table) == 3 and len({line.index("[") for line in table if "[" in line}) == 1  # CI column aligned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "high"], "--threshold 'high'"),
        (["--split", "val", "--threshold", "val"], "--split val"),
        (["--split", "val", "--target-sensitivity", "0.9"], "--split val"),
        (["--target-sensitivity", "1.5"], "--target-sensitivity"),
        (["--threshold", "0.3", "--target-sensitivity", "0.9"], "conflict"),
        (["--threshold", "0.5", "--target-sensitivity", "0.9"], "conflict"),
    ],
)
def test_bad_options_are_one_line_errors(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["evaluate", str(small_run), "--bootstrap", "0", "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
