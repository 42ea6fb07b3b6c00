"""ONNX export of a real tiny run of the small cnn: self-describing files, PyTorch parity on test cells, scored
variants, backends (tests/cli/test_export_cli.py exports efficientnet_lite0 end to end)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from blastscope.api import load
from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.export import choice
from blastscope.export.onnx import CALIBRATION_CELLS, export_run, max_logit_difference, onnx_model_path
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.inference.predict import batches, predict_logits, probabilities
from blastscope.inference.runners import OnnxRunner, TorchRunner
from blastscope.metrics import weighted_f1
from blastscope.runs import load_run


@pytest.fixture(scope="module")
def record(exported_run: Path) -> dict:
    return json.loads((exported_run / "export" / "export.json").read_text())


@pytest.fixture(scope="module")
def chosen_point_export(tiny_cnn_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OperatingPoint]:
    """A copy of the tiny cnn run with a stored operating point that is not the default (threshold at the median test
    probability, temperature 1.7), then exported with int8 after its validation split was taken away."""
    run_dir = Path(shutil.copytree(tiny_cnn_run, tmp_path_factory.mktemp("chosen-point") / tiny_cnn_run.name))
    trained = load_run(run_dir)
    cells = trained.split.parts["test"]
    logits = predict_logits(trained.runner(), cells, trained.preprocessing, trained.transform)
    point = dataclasses.replace(trained.operating_point, temperature=1.7)
    median = float(np.median(probabilities(logits, point.temperature)[:, point.positive_index]))
    point = dataclasses.replace(point.with_threshold(median, "tests"), temperature=1.7)
    trained.save_operating_point(point)
    trained = load_run(run_dir)
    trained.split.parts["val"] = []  # a run without a validation split
    export_run(trained, int8=True, log=lambda _: None)
    return run_dir, point


def test_files_carry_preprocessing_classes_and_operating_point(exported_run: Path) -> None:
    trained = load_run(exported_run)
    point = trained.operating_point
    for variant in ("fp32", "int8", "bf16"):
        path = onnx_model_path(exported_run, variant)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["blastscope.classes"]) == list(trained.classes)
        assert props["blastscope.positive_class"] == point.positive_class
        assert Preprocessing.from_dict(json.loads(props["blastscope.preprocessing"])) == trained.preprocessing
        assert json.loads(props["blastscope.preprocessing"])["segment"] == "auto" == trained.preprocessing.segment
        assert "cut out onto a black square by blastscope.segmentation (segment=auto)" in props["blastscope.input"]
        assert json.loads(props["blastscope.operating_point"]) == point.to_dict()
        assert f"p({point.positive_class}) >= {point.threshold:.6g}" in props["blastscope.output"]
        assert props["blastscope.variant"] == variant
        runner = OnnxRunner(path)
        assert runner.preprocessing == trained.preprocessing and runner.classes == trained.classes
        assert runner.operating_point == point and runner.variant == variant


def test_metadata_holds_the_runs_chosen_point(chosen_point_export: tuple[Path, OperatingPoint]) -> None:
    run_dir, point = chosen_point_export
    assert point != OperatingPoint.default(point.classes)
    for variant in ("fp32", "int8"):
        path = onnx_model_path(run_dir, variant)
        assert OnnxRunner(path).operating_point == point  # read back equal, temperature and origin included
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props["blastscope.positive_class"] == point.positive_class
        output = props["blastscope.output"]
        assert f"p({point.positive_class}) >= {point.threshold:.6g}" in output
        assert "divide by the temperature 1.7" in output
    record = json.loads((run_dir / "export" / "export.json").read_text())
    assert OperatingPoint.from_dict(record["operating_point"]) == point


def test_scores_are_decided_at_the_runs_point(chosen_point_export: tuple[Path, OperatingPoint]) -> None:
    """The recorded test F1 is the one path's: ONNX logits, temperature, decide at the threshold, weighted F1."""
    run_dir, point = chosen_point_export
    trained = load_run(run_dir)
    cells = trained.split.parts["test"]
    y_true = np.array([trained.classes.index(cell.label) for cell in cells])
    record = json.loads((run_dir / "export" / "export.json").read_text())
    runner = OnnxRunner(onnx_model_path(run_dir, "fp32"))
    probs = probabilities(predict_logits(runner, cells, trained.preprocessing, trained.transform), point.temperature)
    labels = decide(probs, point)
    default_labels = decide(probs, OperatingPoint.default(point.classes))
    assert not np.array_equal(labels, default_labels)  # the point really changes decisions here
    expected = weighted_f1(y_true, probs, labels, point.positive_index)
    assert record["variants"]["fp32"]["test_weighted_f1"] == pytest.approx(expected, abs=1e-9)


def test_run_without_validation_keeps_fp32_and_says_why(chosen_point_export: tuple[Path, OperatingPoint]) -> None:
    run_dir, _ = chosen_point_export
    record = json.loads((run_dir / "export" / "export.json").read_text())
    assert record["val_cells"] == 0 and record["default"] == "fp32"
    assert record["default_reason"] == (
        "int8 not made the default: the run has no validation cells (needs >= 300); fp32 stays the default"
    )
    int8 = record["variants"]["int8"]
    assert not int8["meets_rule"] and "val_weighted_f1" not in int8  # never chosen on test instead
    assert 0.0 <= int8["test_weighted_f1"] <= 1.0 and 0.0 <= int8["test_agreement"] <= 1.0
    assert onnx_model_path(run_dir) == run_dir / "export" / "model.onnx"


def test_fp32_logits_match_pytorch_on_test_cells(exported_run: Path, record: dict) -> None:
    trained = load_run(exported_run)
    cells = trained.split.parts["test"]
    images = batches(cells, trained.preprocessing, trained.transform)
    difference = max_logit_difference(
        TorchRunner(trained.model), OnnxRunner(onnx_model_path(exported_run, "fp32")), images
    )
    assert difference < 1e-4
    assert record["parity"]["max_abs_logit_difference"] < record["parity"]["tolerance"] == 1e-4


def test_parity_runs_on_every_test_cell_and_says_which_cells(record: dict, tiny_cnn_run_copy: Path) -> None:
    """export.json and the parity line name exactly the cells checked: all the test cells (the shared export; its
    printed line is checked in tests/cli/test_export_cli.py), or, for a run without any, the training cells int8
    calibrates on, out of how many."""
    tests = len(load_run(tiny_cnn_run_copy).split.parts["test"])
    assert record["parity"] | {"max_abs_logit_difference": 0} == {
        "cells": tests,
        "split": "test",
        "split_cells": tests,
        "max_abs_logit_difference": 0,
        "tolerance": 1e-4,
    }

    lines: list[str] = []
    trained = load_run(tiny_cnn_run_copy)
    trained.split.parts["test"] = []  # as an ensemble of cross-validation folds has none
    without_tests = export_run(trained, log=lines.append)
    train = len(trained.split.parts["train"])
    checked = min(train, CALIBRATION_CELLS)
    assert (without_tests["parity"]["cells"], without_tests["parity"]["split"]) == (checked, "train")
    assert without_tests["parity"]["split_cells"] == train
    parity = [line for line in lines if line.startswith("parity:")][0]
    assert parity.endswith(f"on {checked} of the run's {train} training cells (it has no test cells)")


def test_max_logit_difference_needs_batches() -> None:
    with pytest.raises(ValueError, match="no batches"):
        max_logit_difference(lambda batch: batch, lambda batch: batch, [])


def test_failed_export_leaves_no_record_nor_models(tiny_run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.export import onnx as onnx_export

    out = tiny_run_copy / "export"
    out.mkdir()
    (out / "export.json").write_text('{"default": "int8", "variants": {"int8": {"file": "model_int8.onnx"}}}')
    (out / "model_int8.onnx").write_bytes(b"stale")

    def half_built(model: object, pre: object, path: Path) -> Path:
        path.write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "export_onnx", half_built)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_export.export_run(load_run(tiny_run_copy), log=lambda _: None)
    assert list(out.iterdir()) == []
    assert onnx_model_path(tiny_run_copy) is None


@pytest.mark.parametrize("text", ["{not json", '{"variants": {}}', '{"default": "fp32", "variants": {"fp32": {}}}'])
def test_corrupt_record_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "export.json").write_text(text)
    with pytest.raises(BlastscopeError, match="re-run `blastscope export"):
        onnx_model_path(tmp_path)


@pytest.mark.parametrize("key", ["blastscope.preprocessing", "blastscope.classes"])
def test_missing_metadata_key_is_a_one_line_error(exported_run: Path, tmp_path: Path, key: str) -> None:
    model = onnx.load(str(onnx_model_path(exported_run, "fp32")))
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(BlastscopeError, match="re-run `blastscope export`|export it with `blastscope export`"):
        OnnxRunner(tmp_path / "model.onnx")


def test_batch_axis_is_dynamic(exported_run: Path) -> None:
    exported = OnnxRunner(onnx_model_path(exported_run, "fp32"))
    size = exported.preprocessing.input_size
    for batch in (1, 5):
        assert exported(torch.zeros(batch, 3, size, size)).shape == (batch, len(exported.classes))


def test_variants_scored_and_default_chosen_by_the_rule(exported_run: Path, record: dict) -> None:
    variants = record["variants"]
    assert set(variants) == {"fp32", "int8", "bf16"}
    split = load_run(exported_run).split
    assert record["test_cells"] == len(split.parts["test"]) and record["val_cells"] == len(split.parts["val"])
    assert record["calibration_cells"] > 0
    assert record["default_rule"] == choice.default_rule()  # the rule is recorded; it is chosen on val only
    assert record["default_rule"]["chosen_on"] == "val"
    for variant, info in variants.items():
        for part in ("val", "test"):
            assert 0.0 <= info[f"{part}_weighted_f1"] <= 1.0
            assert 0.0 <= info[f"{part}_agreement"] <= 1.0
            fp32 = variants["fp32"][f"{part}_weighted_f1"]
            assert info[f"{part}_f1_minus_fp32"] == pytest.approx(info[f"{part}_weighted_f1"] - fp32)
        if variant == "fp32":
            assert info["val_agreement"] == info["test_agreement"] == 1.0 and "meets_rule" not in info
            continue
        verdict = choice.judge(variant, record["val_cells"], info["val_agreement"], info["val_f1_minus_fp32"])
        assert (info["meets_rule"], info["rule_failures"]) == (verdict.meets_rule, list(verdict.failures))
    assert variants["int8"]["bytes"] < variants["fp32"]["bytes"]
    assert variants["bf16"]["bytes"] < variants["fp32"]["bytes"]
    judgements = {
        v: choice.judge(v, record["val_cells"], i["val_agreement"], i["val_f1_minus_fp32"])
        for v, i in variants.items()
        if v != "fp32"
    }
    assert (record["default"], record["default_reason"]) == choice.choose_default(list(variants), judgements)


def test_too_small_validation_split_keeps_fp32_and_says_so(record: dict) -> None:
    """The tiny run's validation split is far below MIN_DECISION_CELLS: int8 is not made the default, whatever its
    scores there, and the record says why."""
    assert 0 < record["val_cells"] < choice.MIN_DECISION_CELLS
    assert record["default"] == "fp32"
    assert record["default_reason"] == (
        f"int8 not made the default: only {record['val_cells']} validation cells (needs >= 300)"
        + "".join(f"; {failure}" for failure in record["variants"]["int8"]["rule_failures"][1:])
        + "; fp32 stays the default"
    )
    assert record["variants"]["int8"]["rule_failures"][0] == (
        f"only {record['val_cells']} validation cells (needs >= 300)"
    )


def test_auto_backend_uses_default_variant(exported_run: Path, record: dict, cell_images: list[Path]) -> None:
    auto = load(exported_run)
    assert auto.backend == f"onnx ({record['default']})"
    fp32 = load(exported_run, variant="fp32")
    torch_only = load(exported_run, backend="torch")
    np.testing.assert_allclose(fp32.predict_proba(cell_images), torch_only.predict_proba(cell_images), atol=1e-5)
    np.testing.assert_allclose(auto.predict_proba(cell_images).sum(axis=1), 1.0, atol=1e-5)
    # Grad-CAM always runs on the PyTorch network, whichever backend predicts.
    assert auto.explain(cell_images[0]).heatmap.shape == (auto.preprocessing.input_size,) * 2


def test_unknown_variant_is_refused(exported_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="no 'fp64' variant"):
        load(exported_run, variant="fp64")


def test_the_multiscale_network_exports_with_parity(
    synth_small: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its stages' maps come from timm's ``forward_intermediates``: the traced graph must still give its logits. Its
    head's batch norm leaves a rank-1 weight that int8 quantises per tensor, without ONNX Runtime's warning line."""
    from blastscope.training import TrainConfig, train

    config = TrainConfig(
        data=str(synth_small), model="efficientnet_lite0_multiscale", image_size=32, epochs_frozen=1,
        epochs_finetune=0, batch_size=16, num_workers=0, out=str(tmp_path), progress=False,
    )  # fmt: skip
    record = export_run(load_run(train(config)), int8=True, log=lambda _: None)
    assert record["parity"]["max_abs_logit_difference"] < record["parity"]["tolerance"]
    assert "int8" in record["variants"]
    assert not [r for r in caplog.records if "out-of-range for weight" in r.getMessage()]
