"""TrainedRun: a run loaded back from its folder, with its input size and operating point."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from blastscope.errors import BlastscopeError
from blastscope.inference.decision import OperatingPoint
from blastscope.runs import load_run
from blastscope.runs.folder import OPERATING_POINT_FILE


def test_image_size_is_the_size_the_run_was_trained_at(tiny_run: Path) -> None:
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    run = load_run(tiny_run)
    assert run.image_size == run.preprocessing.input_size == config["preprocessing"]["input_size"] == 32


def test_the_operating_point_is_the_one_training_stored(tiny_run: Path) -> None:
    stored = json.loads((tiny_run / OPERATING_POINT_FILE).read_text())
    point = load_run(tiny_run).operating_point
    assert point == OperatingPoint.from_dict(stored)
    assert point.classes == ("hem", "all") and point.positive_class == "all"
    assert (point.threshold, point.temperature, point.source, point.chosen_by) == (0.5, 1.0, "default", "train")


def test_a_saved_operating_point_is_what_the_next_load_reads(tiny_run_copy: Path) -> None:
    run = load_run(tiny_run_copy)
    point = run.operating_point.with_threshold(0.25, chosen_by="evaluate")
    assert run.save_operating_point(point) == tiny_run_copy / OPERATING_POINT_FILE
    assert run.operating_point == point
    assert load_run(tiny_run_copy).operating_point == point


def test_a_run_from_before_operating_points_decides_at_the_default(tiny_run_copy: Path) -> None:
    (tiny_run_copy / OPERATING_POINT_FILE).unlink()
    point = load_run(tiny_run_copy).operating_point
    assert point == OperatingPoint.default(("hem", "all")) and point.positive_class == "all"


def test_a_corrupt_operating_point_stops_loading_in_one_line(tiny_run_copy: Path) -> None:
    (tiny_run_copy / OPERATING_POINT_FILE).write_text("{not json")
    with pytest.raises(BlastscopeError, match=OPERATING_POINT_FILE) as caught:
        load_run(tiny_run_copy)
    assert "\n" not in str(caught.value)


def test_temperature_warnings_name_the_point_and_each_ensemble_member_at_a_bound() -> None:
    from blastscope.runs.trained import temperature_warnings

    point = OperatingPoint.default(("all", "hem"), "all")
    assert temperature_warnings({"model": "cnn"}, point) == []
    [own] = temperature_warnings({"model": "cnn"}, replace(point, temperature=0.05))
    assert own.startswith("temperature 0.05 sits at the lower bound of its fit")
    members = [{"path": "runs/a", "temperature": 1.3}, {"path": "runs/b", "temperature": 20.0}]
    [member] = temperature_warnings({"model": "ensemble", "members": members}, point)
    assert member.startswith("ensemble member 2 (runs/b), whose probabilities it averages: temperature 20 sits at")


def test_a_run_whose_training_did_not_end_is_named_in_one_warning_line(tiny_run_copy: Path) -> None:
    from blastscope.runs.trained import unfinished_warnings

    config = load_run(tiny_run_copy).config
    assert unfinished_warnings(tiny_run_copy, config) == []
    (tiny_run_copy / "metrics.json").unlink()  # killed mid-training, or still training: best.ckpt is an early epoch's
    [line] = unfinished_warnings(tiny_run_copy, config)
    assert line.startswith(f"{tiny_run_copy}: training did not end (no metrics.json)")
    assert f"`blastscope train --resume {tiny_run_copy}`" in line and "\n" not in line
    assert unfinished_warnings(tiny_run_copy, {"model": "ensemble"}) == []  # an ensemble has no metrics.json to write
