"""`blastscope export` on a real tiny run, then `blastscope predict` picking the exported default variant.

The suite's one export of efficientnet_lite0, end to end with its parity check: the other export tests use the small
cnn (``tiny_cnn_run``), which exports in seconds where efficientnet_lite0 takes 20-30 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blastscope.cli import main
from blastscope.export.choice import MIN_DECISION_CELLS


@pytest.fixture
def run_dir(tiny_run_copy: Path) -> Path:
    return tiny_run_copy


def test_export_int8_then_predict_uses_default_variant(run_dir: Path, synth_small: Path, capsys) -> None:
    assert main(["export", str(run_dir), "--format", "onnx", "--quantize", "int8"]) == 0
    report = capsys.readouterr().out
    record = json.loads((run_dir / "export" / "export.json").read_text())
    assert record["model"] == "efficientnet_lite0"
    tests = record["test_cells"]
    parity = [line for line in report.splitlines() if line.startswith("parity: max |logit(PyTorch) - logit(ONNX)|")]
    assert parity[0].endswith(f"on all {tests} of the run's test cells")
    assert set(record["variants"]) == {"fp32", "int8"} and (run_dir / "export" / "model_int8.onnx").is_file()
    assert record["parity"]["max_abs_logit_difference"] < 1e-4
    for variant, info in record["variants"].items():
        assert f"{variant:5s} val {info['val_weighted_f1']:.4f} ({info['val_f1_minus_fp32']:+.4f}, agree" in report
        assert f"test {info['test_weighted_f1']:.4f}" in report
    assert "[default]" in report and "decision in every file and score: ALL when p(ALL) >= 0.5000" in report

    # The tiny run's validation split is too small to decide: fp32 stays the default, in one printed line.
    assert record["val_cells"] < MIN_DECISION_CELLS and record["default"] == "fp32"
    lines = report.splitlines()
    assert record["default_reason"] in lines
    assert record["default_reason"].startswith(
        f"int8 not made the default: only {record['val_cells']} validation cells (needs >= {MIN_DECISION_CELLS})"
    )

    cell = sorted(synth_small.rglob("*.png"))[0]
    assert main(["predict", str(run_dir), str(cell)]) == 0
    assert f"backend onnx ({record['default']})" in capsys.readouterr().err
    assert main(["predict", str(run_dir), str(cell), "--variant", "int8"]) == 0
    assert "backend onnx (int8)" in capsys.readouterr().err
    assert main(["predict", str(run_dir), str(cell), "--variant", "bf16"]) == 2
    assert "no 'bf16' variant" in capsys.readouterr().err


def test_export_of_a_non_run_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a training run" in err and len(err.strip().splitlines()) == 1
