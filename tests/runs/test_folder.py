"""The run folder's files read back: config.yaml, checkpoints and operating_point.json, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint
from blastscope.runs import load_run
from blastscope.runs.folder import (
    OPERATING_POINT_FILE,
    checkpoint_path,
    finished,
    load_network_weights,
    read_operating_point,
    write_operating_point,
)

CLASSES = ("hem", "all")
CHOSEN = OperatingPoint(
    CLASSES, "all", threshold=0.3125, temperature=1.5, source="val:weighted_f1", split="val", n_cells=16, score=0.75,
    chosen_by="evaluate",
)  # fmt: skip


@pytest.mark.parametrize("text", ["model: [unclosed\n", "- just\n- a list\n"])
def test_a_damaged_config_yaml_is_a_one_line_error_naming_it(tiny_run_copy: Path, text: str) -> None:
    (tiny_run_copy / "config.yaml").write_text(text)
    with pytest.raises(BlastscopeError, match="config.yaml") as caught:
        load_run(tiny_run_copy)
    assert "\n" not in str(caught.value)


def test_a_folder_without_config_yaml_is_no_run(tmp_path: Path) -> None:
    with pytest.raises(BlastscopeError, match="no config.yaml, so not a training run") as caught:
        load_run(tmp_path)
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_checkpoints_are_named_or_given_as_paths(tiny_run: Path, tmp_path: Path) -> None:
    assert checkpoint_path(tiny_run) == tiny_run / "checkpoints" / "best.ckpt"
    assert checkpoint_path(tiny_run, "last") == tiny_run / "checkpoints" / "last.ckpt"
    assert (
        checkpoint_path(tiny_run, str(tiny_run / "checkpoints" / "last.ckpt")) == tiny_run / "checkpoints" / "last.ckpt"
    )
    missing = tmp_path / "epoch=3.ckpt"
    with pytest.raises(BlastscopeError, match="checkpoint not found") as caught:
        checkpoint_path(tiny_run, str(missing))
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_is_finished_only_with_its_metrics_and_best_checkpoint(tiny_run_copy: Path) -> None:
    assert finished(tiny_run_copy)
    (tiny_run_copy / "checkpoints" / "best.ckpt").unlink()
    assert not finished(tiny_run_copy)  # an answer, not a missing-checkpoint error
    assert not finished(tiny_run_copy.parent / "no-such-run")


def test_a_missing_checkpoint_is_a_one_line_error_naming_it(tiny_run_copy: Path) -> None:
    (tiny_run_copy / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(BlastscopeError, match="best.ckpt: checkpoint not found") as caught:
        load_run(tiny_run_copy)
    assert "\n" not in str(caught.value)
    assert load_run(tiny_run_copy, checkpoint="last").run_dir == tiny_run_copy


def test_a_checkpoint_of_another_network_is_a_one_line_error_naming_it(tiny_run: Path) -> None:
    from blastscope.models import create_model

    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    other = create_model(config["model"], num_classes=len(config["classes"]) + 3, pretrained="none")
    path = checkpoint_path(tiny_run, "best")
    with pytest.raises(BlastscopeError, match="does not fit this network") as caught:
        load_network_weights(other.model, path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_without_operating_point_gets_the_default(tmp_path: Path) -> None:
    assert read_operating_point(tmp_path, CLASSES) == OperatingPoint.default(CLASSES)
    assert read_operating_point(tmp_path, CLASSES).positive_class == "all"  # the last class, as runs were scored then
    assert read_operating_point(tmp_path, CLASSES, positive_class="hem").positive_class == "hem"
    assert not (tmp_path / OPERATING_POINT_FILE).exists()  # reading never writes


def test_an_operating_point_round_trips_through_its_file(tmp_path: Path) -> None:
    path = write_operating_point(tmp_path, CHOSEN)
    assert path == tmp_path / OPERATING_POINT_FILE
    assert read_operating_point(tmp_path, CLASSES) == CHOSEN
    assert read_operating_point(tmp_path, CLASSES, positive_class="hem") == CHOSEN  # the file wins over the default
    assert json.loads(path.read_text())["classes"] == list(CLASSES)  # plain JSON a person can read


def test_writing_replaces_the_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blastscope.runs import folder

    write_operating_point(tmp_path, OperatingPoint.default(CLASSES))
    write_operating_point(tmp_path, CHOSEN)
    assert [path.name for path in tmp_path.iterdir()] == [OPERATING_POINT_FILE]  # no temporary file left behind

    def interrupted(source: Path, destination: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(folder.os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        write_operating_point(tmp_path, OperatingPoint.default(CLASSES))
    assert read_operating_point(tmp_path, CLASSES) == CHOSEN  # a write that fails never leaves half a file


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        '["hem", "all"]',
        '{"positive_class": "all"}',
        json.dumps({**CHOSEN.to_dict(), "threshold": 1.5}),
        json.dumps({**CHOSEN.to_dict(), "positive_class": "blast"}),
    ],
    ids=["not-json", "empty", "a-list", "no-classes", "threshold-out-of-range", "unknown-positive-class"],
)
def test_a_corrupt_operating_point_is_a_one_line_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / OPERATING_POINT_FILE
    path.write_text(text)
    with pytest.raises(BlastscopeError, match="unreadable operating point") as caught:
        read_operating_point(tmp_path, CLASSES)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_an_operating_point_for_other_classes_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = write_operating_point(tmp_path, OperatingPoint.default(("cats", "dogs")))
    with pytest.raises(BlastscopeError, match="written for classes cats, dogs, the run has hem, all") as caught:
        read_operating_point(tmp_path, CLASSES)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    with pytest.raises(BlastscopeError, match="written for classes"):
        read_operating_point(tmp_path, ("all", "hem"))  # the same names in another order are other outputs
