"""A checkpoint that torch.load(weights_only=True) refuses is named as not blastscope's or unsafe, in one line, without
PyTorch's advice to load it with weights_only=False (which would run whatever the file holds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blastscope.errors import BlastscopeError
from blastscope.runs.folder import load_network_weights


class SomeClass:
    """Anything but tensors and plain values: unpickling it could run code."""


def test_a_pickled_object_is_refused_in_one_line_without_pytorchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "x": SomeClass()}, path)
    with pytest.raises(BlastscopeError) as refused:
        load_network_weights(torch.nn.Linear(2, 2), path)  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith(f"{path}: not a blastscope checkpoint, or unsafe to load")
    assert "SomeClass" in message  # what the file holds that a checkpoint must not
    assert "\n" not in message
    assert "weights_only" not in message and "trust" not in message and "add_safe_globals" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # nor in a chained traceback


def test_a_run_with_an_unsafe_checkpoint_fails_to_load_with_that_line(tiny_run_copy: Path) -> None:
    from blastscope.api import load

    checkpoint = tiny_run_copy / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    torch.save({**state, "x": SomeClass()}, checkpoint)  # the real weights, plus an object
    with pytest.raises(BlastscopeError, match="not a blastscope checkpoint, or unsafe to load") as refused:
        load(tiny_run_copy, backend="torch")
    assert "weights_only=False" not in str(refused.value)


def test_a_file_that_is_no_checkpoint_at_all_is_named_so_without_the_advice(tmp_path: Path) -> None:
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BlastscopeError, match="not a blastscope checkpoint, or unsafe to load") as refused:
        load_network_weights(torch.nn.Linear(2, 2), path)  # type: ignore[arg-type]
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)


@pytest.mark.parametrize("content", [{"epoch": 3}, [1, 2]])
def test_a_safe_file_without_network_weights_is_named_in_one_line(tmp_path: Path, content: object) -> None:
    path = tmp_path / "best.ckpt"
    torch.save(content, path)
    with pytest.raises(BlastscopeError, match=r"best\.ckpt: cannot read the checkpoint \(it holds no state_dict\)"):
        load_network_weights(torch.nn.Linear(2, 2), path)  # type: ignore[arg-type]
