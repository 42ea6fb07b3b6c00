"""Training resolves the positive class from the class names (or --positive-class), prints it, records it, keeps it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from blastscope.cli import main
from blastscope.cli.train import build_config
from blastscope.errors import DataError
from blastscope.runs import load_run
from blastscope.runs.folder import OPERATING_POINT_FILE
from blastscope.training import TrainConfig, resume, train
from blastscope.training.config import SplitConfig
from blastscope.training.prepare import complete_recipe, resolve_positive_class, scan_data


def _renamed(cells: Path, target: Path, names: dict[str, str]) -> Path:
    """The C-NMC-layout cells as a class-per-folder tree whose folders are renamed (``all`` -> ``names["all"]``)."""
    for index, source in enumerate(sorted(cells.rglob("*.png"))):
        label = "all" if source.stem.endswith("_all") else "hem"
        destination = target / names[label] / f"cell{index}.png"
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target


@pytest.fixture(scope="module")
def cats_dogs(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _renamed(synth_small, tmp_path_factory.mktemp("pets"), {"all": "cats", "hem": "dogs"})


@pytest.fixture(scope="module")
def cats_run(cats_dogs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on cats/dogs with the positive class named in upper case: a run whose positive class is no name's."""
    config = TrainConfig(
        data=str(cats_dogs),
        positive_class="CATS",
        model="efficientnet_lite0",
        pretrained="none",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        batch_size=8,
        num_workers=0,
        out=str(tmp_path_factory.mktemp("runs")),
        progress=False,
    )
    return Path(train(config))


@pytest.mark.parametrize(
    ("names", "positive"),
    [
        ({"all": "ALL", "hem": "HEM"}, "ALL"),
        ({"all": "All", "hem": "Hem"}, "All"),
        ({"all": "blast", "hem": "normal"}, "blast"),
        ({"all": "Abnormal", "hem": "Normal"}, "Abnormal"),
    ],
)
def test_the_positive_class_is_read_from_the_names_not_their_order(
    synth_small: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], names: dict[str, str], positive: str
) -> None:
    data = _renamed(synth_small, tmp_path / "data", names)
    config = complete_recipe(tiny_config(data=str(data)))
    table = scan_data(config)
    recipe, resolved = resolve_positive_class(config, table)
    assert resolved == positive and recipe.positive_class is None  # the recipe keeps "by the names"


def test_names_that_do_not_say_stop_training_before_a_run_folder_exists(
    cats_dogs: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    with pytest.raises(DataError, match="--positive-class cats or --positive-class dogs") as error:
        train(tiny_config(data=str(cats_dogs)))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_the_command_line_names_the_flag_in_one_line(
    cats_dogs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(["train", "--data", str(cats_dogs), "--model", "cnn", "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--positive-class" in error and "cats" in error and "dogs" in error
    assert not out.exists()
    assert build_config({"positive_class": "dogs"}).positive_class == "dogs"


def test_positive_class_with_multi_class_data_is_an_error(
    synth_small: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    data = _renamed(synth_small, tmp_path / "data", {"all": "a", "hem": "b"})
    shutil.copytree(data / "a", data / "c")
    for index, file in enumerate(sorted((data / "c").iterdir())):  # new bytes, so the copies are not duplicates
        file.write_bytes(file.read_bytes() + bytes([index % 256]) * 7)
    with pytest.raises(DataError, match="exactly two classes"):
        train(tiny_config(data=str(data), positive_class="a"))
    assert not (tmp_path / "runs").exists()


def test_an_explicit_positive_class_is_recorded_and_decides(cats_run: Path) -> None:
    recipe = yaml.safe_load((cats_run / "config.yaml").read_text())
    assert recipe["classes"] == ["cats", "dogs"]
    assert recipe["positive_class"] == recipe["resolved_positive_class"] == "cats"  # the class's own spelling
    stored = json.loads((cats_run / OPERATING_POINT_FILE).read_text())
    assert stored["positive_class"] == "cats" and stored["chosen_by"] == "train"
    assert json.loads((cats_run / "metrics.json").read_text())["test"]["positive_class"] == "cats"
    run = load_run(cats_run)
    assert run.operating_point.positive_class == "cats"
    assert "ALL" not in run.operating_point.describe() and "cats when p(cats)" in run.operating_point.describe()
    assert TrainConfig.load(cats_run / "config.yaml").positive_class == "cats"  # --config repeats it


def test_the_positive_class_is_printed_at_the_start(
    cats_dogs: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = SplitConfig(csv=str(tmp_path / "missing.csv"))
    with pytest.raises(DataError):  # the next step after the line fails: nothing trains
        train(tiny_config(data=str(cats_dogs), positive_class="dogs", split=missing))
    assert "positive class: dogs (as given by --positive-class or the config)" in capsys.readouterr().err


def test_a_run_without_operating_point_file_decides_on_its_recorded_class(cats_run: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(cats_run, tmp_path / "run"))
    (run_dir / OPERATING_POINT_FILE).unlink()
    assert load_run(run_dir).operating_point.positive_class == "cats"  # from config.yaml
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    del recipe["positive_class"], recipe["resolved_positive_class"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert load_run(run_dir).operating_point.positive_class == "dogs"  # a run from before: the last class, as then


def test_resume_keeps_the_runs_positive_class(
    cats_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a run written before the class was recorded (only its operating point names it) keeps it."""
    run_dir = Path(shutil.copytree(cats_run, tmp_path / "run"))
    (run_dir / "metrics.json").unlink()  # stopped while scoring: a finished run is left as it is
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    del recipe["positive_class"], recipe["resolved_positive_class"]  # cats/dogs: resolving it again would stop
    (run_dir / "config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    resume(run_dir)
    assert "positive class: cats (recorded in the run)" in capsys.readouterr().err
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["positive_class"] == "cats"
    assert load_run(run_dir).operating_point.positive_class == "cats"
