"""ONNX export of a real tiny run: self-describing files, PyTorch parity on test cells, scored variants, backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from blastscope.api import load
from blastscope.api.classifier import cell_batches
from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import BlastscopeError
from blastscope.export.onnx import (
    F1_TOLERANCE,
    OnnxModel,
    max_logit_difference,
    onnx_model_path,
)
from blastscope.runs import load_run


@pytest.fixture(scope="module")
def record(exported_run: Path) -> dict:
    return json.loads((exported_run / "export" / "export.json").read_text())


def test_files_carry_preprocessing_and_classes(exported_run: Path) -> None:
    trained = load_run(exported_run)
    for variant in ("fp32", "int8", "bf16"):
        path = onnx_model_path(exported_run, variant)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["blastscope.classes"]) == list(trained.classes)
        assert props["blastscope.positive_class"] == trained.classes[-1]
        assert Preprocessing.from_dict(json.loads(props["blastscope.preprocessing"])) == trained.preprocessing
        assert props["blastscope.variant"] == variant
        assert OnnxModel(path).preprocessing == trained.preprocessing


def test_fp32_logits_match_pytorch_on_test_cells(exported_run: Path, record: dict) -> None:
    trained = load_run(exported_run)
    cells = trained.split.parts["test"]
    batches = cell_batches(cells, trained.preprocessing, trained.transform)
    difference = max_logit_difference(trained.model, OnnxModel(onnx_model_path(exported_run, "fp32")), batches)
    assert difference < 1e-4
    assert record["parity"]["max_abs_logit_difference"] < record["parity"]["tolerance"] == 1e-4


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


def test_missing_metadata_key_is_a_one_line_error(exported_run: Path, tmp_path: Path) -> None:
    model = onnx.load(str(onnx_model_path(exported_run, "fp32")))
    kept = [p for p in model.metadata_props if p.key != "blastscope.preprocessing"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(BlastscopeError, match="re-run `blastscope export`"):
        OnnxModel(tmp_path / "model.onnx")


def test_batch_axis_is_dynamic(exported_run: Path) -> None:
    exported = OnnxModel(onnx_model_path(exported_run, "fp32"))
    size = exported.preprocessing.input_size
    for batch in (1, 5):
        assert exported(torch.zeros(batch, 3, size, size)).shape == (batch, len(exported.classes))


def test_variants_scored_and_default_within_tolerance(exported_run: Path, record: dict) -> None:
    variants = record["variants"]
    assert set(variants) == {"fp32", "int8", "bf16"}
    split = load_run(exported_run).split
    assert record["test_cells"] == len(split.parts["test"]) and record["val_cells"] == len(split.parts["val"])
    assert record["calibration_cells"] > 0
    assert record["default_chosen_on"] == "val"  # the test split stays unseen by the choice
    for info in variants.values():
        for part in ("val", "test"):
            assert 0.0 <= info[f"{part}_weighted_f1"] <= 1.0
            fp32 = variants["fp32"][f"{part}_weighted_f1"]
            assert info[f"{part}_f1_minus_fp32"] == pytest.approx(info[f"{part}_weighted_f1"] - fp32)
        assert info["within_tolerance"] == (abs(info["val_f1_minus_fp32"]) <= F1_TOLERANCE)
    assert variants["int8"]["bytes"] < variants["fp32"]["bytes"]
    assert variants["bf16"]["bytes"] < variants["fp32"]["bytes"]
    expected_default = "int8" if variants["int8"]["within_tolerance"] else "fp32"
    assert record["default"] == expected_default


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
