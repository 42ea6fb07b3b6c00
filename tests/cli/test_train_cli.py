"""`blastscope train`: flags, --config re-runs, --resume and one-line errors."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from blastscope.cli import build_parser, main
from blastscope.cli.train import _checkpoint_line, build_config, result_lines
from blastscope.inference.decision import OperatingPoint
from blastscope.runs import load_run
from blastscope.training import engine as engine_module
from blastscope.training import trainer as trainer_module
from blastscope.training.config import TrainConfig

TINY = [
    "--image-size",
    "32",
    "--epochs-frozen",
    "1",
    "--epochs-finetune",
    "1",
    "--batch-size",
    "8",
    "--num-workers",
    "0",
]
TINY += ["--no-progress"]


def test_training_without_data_says_how_to_get_some(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--data" in error and "blastscope synth" in error and len(error.splitlines()) == 1


def test_resuming_something_that_is_no_run_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_resume_refuses_recipe_and_other_flags_it_would_ignore_in_one_line(
    tiny_run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = (tiny_run_copy / "checkpoints" / "last.ckpt").read_bytes()
    args = ["train", "--resume", str(tiny_run_copy), "--lr-head", "0.01", "--num-workers", "0", "--no-progress"]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--lr-head, --num-workers would be ignored" in error
    assert f"`blastscope train --config {tiny_run_copy / 'config.yaml'}` with them" in error
    assert (tiny_run_copy / "checkpoints" / "last.ckpt").read_bytes() == last  # refused before any training
    assert main(["train", "--resume", str(tiny_run_copy), "--config", str(tiny_run_copy / "config.yaml")]) == 2
    assert "--config would be ignored: drop it" in capsys.readouterr().err


def test_every_train_flag_is_named_as_typed() -> None:
    from blastscope.cli import build_parser
    from blastscope.cli.train import NOT_FLAGS, flag_name

    parser = build_parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    actions = [action for action in subcommands.choices["train"]._actions if action.option_strings]
    for action in actions:
        if action.dest not in NOT_FLAGS | {"help", "version"}:
            assert flag_name(action.dest) in action.option_strings


def test_an_ensemble_runs_config_is_refused_in_one_line_saying_how_ensembles_are_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": "ensemble", "members": [{"path": "runs/a"}, {"path": "runs/b"}]}))
    assert main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{path} belongs to an ensemble run" in error
    assert "`blastscope ensemble`" in error and "unknown config keys" not in error


@pytest.mark.parametrize("ratios", ["0.5,0.5,0.5", "0.6,0.2,nan", "0.6,0.2,inf", "0.6,0.2"])
def test_bad_split_ratios_are_refused(ratios: str, capsys: pytest.CaptureFixture[str]) -> None:
    """NaN too: it compares false with everything, so it passed the checks and split into no part at all."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "x", "--split-ratios", ratios])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and error.endswith(
        f"--split-ratios: '{ratios}': give three fractions >= 0 for train,val,test summing to 1, e.g. 0.6,0.2,0.2"
    )


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": "a", "model": "cnn", "lr_head": 0.5, "split": {"by": "image"}}))
    config = build_config({"config": path, "lr_head": 0.1, "split_ratios": (0.7, 0.2, 0.1), "augment": ["hue=0.0"]})
    assert (config.data, config.model, config.lr_head) == ("a", "cnn", 0.1)
    assert (config.split.by, config.split.ratios, config.augmentation) == ("image", (0.7, 0.2, 0.1), {"hue": 0.0})


def test_crop_and_channel_flags_reach_the_recipe() -> None:
    from blastscope.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--crop-fraction", "0.88", "--channels", "hed"])
    config = build_config(vars(args))
    assert (config.crop_fraction, config.channels) == (0.88, "hed")


def test_the_head_fit_flag_reaches_the_recipe() -> None:
    from blastscope.cli import build_parser

    parser = build_parser()
    assert build_config(vars(parser.parse_args(["train", "--data", "d", "--head-fit", "logistic"]))).head_fit == (
        "logistic"
    )
    assert build_config(vars(parser.parse_args(["train", "--data", "d"]))).head_fit == "adam"


def test_the_colour_norm_flag_reaches_the_recipe_and_takes_only_known_modes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from blastscope.cli import build_parser

    parser = build_parser()
    assert build_config(vars(parser.parse_args(["train", "--data", "d", "--colour-norm", "subject"]))).colour_norm == (
        "subject"
    )
    assert build_config(vars(parser.parse_args(["train", "--data", "d"]))).colour_norm == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "d", "--colour-norm", "image"])
    assert "invalid choice: 'image'" in capsys.readouterr().err


def test_the_red_cell_diameter_flag_reaches_the_recipe_and_its_preprocessing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from blastscope.cli import build_parser, main
    from blastscope.data.preprocessing import Preprocessing
    from blastscope.export.onnx import model_metadata
    from blastscope.inference.decision import OperatingPoint

    config = build_config(vars(build_parser().parse_args(["train", "--data", "d", "--red-cell-diameter", "95"])))
    assert config.red_cell_diameter == 95.0
    assert build_config(vars(build_parser().parse_args(["train"]))).red_cell_diameter is None
    pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, red_cell_diameter=config.red_cell_diameter)
    text = model_metadata(pre, OperatingPoint.default(("all", "hem")), "cnn", "fp32")["blastscope.input"]
    assert "(segment=auto), at a red-cell diameter of 95 px;" in text
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", "d", "--red-cell-diameter", "3"])  # the recipe's check takes it (the Python API)
    assert stop.value.code == 2 and "argument --red-cell-diameter: '3' is not a red cell's" in capsys.readouterr().err


def test_label_smoothing_and_class_balance_flags_reach_the_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    from blastscope.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--label-smoothing", "0.1", "--class-balance", "sampler"])
    config = build_config(vars(args))
    assert (config.label_smoothing, config.class_balance) == (0.1, "sampler")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "d", "--class-balance", "oversample"])
    assert exit_info.value.code == 2 and "invalid choice: 'oversample'" in capsys.readouterr().err


def test_a_label_smoothing_of_one_is_refused_in_one_line(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(synth_small), "--out", str(tmp_path), "--label-smoothing", "1", *TINY]) == 2
    error = capsys.readouterr().err.strip()
    assert "label smoothing 1.0 is invalid" in error and len(error.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


def test_speed_switches_reach_the_recipe() -> None:
    from blastscope.cli import build_parser

    args = build_parser().parse_args(
        ["train", "--data", "a", "--no-folded-frozen-stages", "--no-cached-features", "--no-channels-last"]
    )
    config = build_config(vars(args))
    assert not (config.folded_frozen_stages or config.cached_features or config.channels_last)


def test_a_run_repeats_from_its_config_yaml(
    synth_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--data", str(synth_small), "--model", "cnn", *TINY, "--run-dir", str(first)]) == 0
    assert main(["train", "--config", str(first / "config.yaml"), "--run-dir", str(second)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(first), str(second)]  # stdout: only the run folders, for scripts
    _assert_result_lines(captured.err, first)
    assert main(["train", "--config", str(first / "config.yaml"), "--run-dir", str(first)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    configs = [yaml.safe_load((run / "config.yaml").read_text()) for run in (first, second)]
    assert configs[0]["split_hash"] == configs[1]["split_hash"]
    assert configs[0]["epochs_finetune"] == configs[1]["epochs_finetune"] == 1
    metrics = [json.loads((run / "metrics.json").read_text())["test"] for run in (first, second)]
    assert metrics[0] == metrics[1]
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (first, second)
    ]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_config_rerun_reads_the_recorded_data_from_any_folder_and_says_when_the_cells_differ(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.yaml records the data by its absolute path. One recorded as typed (before), re-run from another folder,
    reads what that name means there: a warning line names both paths, as new data for a recipe may be meant."""
    from blastscope.data.synth import synthesize

    project, other = tmp_path / "project", tmp_path / "other"
    shutil.copytree(synth_small, project / "cells")
    synthesize(other / "cells", subjects_per_class=3, cells_per_subject=4, image_size=64, seed=5, separation=2.0)
    monkeypatch.chdir(project)
    assert main(["train", "--data", "cells", "--model", "cnn", *TINY, "--run-dir", "first"]) == 0
    config = project / "first" / "config.yaml"
    assert yaml.safe_load(config.read_text())["data"] == str(project / "cells")

    monkeypatch.chdir(other)
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--run-dir", "same"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert (other / "same" / "split.csv").read_bytes() == (project / "first" / "split.csv").read_bytes()

    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "data": "cells"}))  # as once recorded
    assert main(["train", "--config", str(config), "--run-dir", "new"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {other / 'cells'} holds other cells than the run of {config} trained on from cells (relative to "
        "the folder that run was started in): 24 cells here, 0 of them among its 96 (fine for the same recipe on new "
        "data; to repeat that run, pass --data with its data)"
    ]

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config), "--run-dir", "none"]) == 2
    assert capsys.readouterr().err == (
        f"blastscope: error: {config} records the data as 'cells', relative to the folder its run was started in, and "
        f"{tmp_path / 'cells'} does not exist: run from that folder, or pass --data with the dataset's folder\n"
    )


def _assert_result_lines(err: str, run: Path) -> None:
    """`train` ends with what the run came to: its starting weights, the test split's headline metrics at the
    operating point they were decided at, and where the numbers are, as `evaluate` words them."""
    metrics = json.loads((run / "metrics.json").read_text())
    point = OperatingPoint.from_dict(metrics["operating_point"])
    test = metrics["test"]
    lines = err.splitlines()
    assert "model: cnn (random init); weights: random init" in lines
    assert (
        f"test split ({test['n']} cells): weighted F1 {test['weighted_f1']:.4f}, ROC-AUC {test['roc_auc']:.4f}; "
        f"decision: {point.describe()}"
    ) in lines
    assert any(
        line.startswith(f"metrics in {run / 'metrics.json'}, per epoch in {run / 'history.csv'}") for line in lines
    )


def test_the_result_lines_say_when_nothing_was_scored_and_are_left_out_without_metrics(tiny_run_copy: Path) -> None:
    assert result_lines(tiny_run_copy.parent / "missing") == []
    metrics = json.loads((tiny_run_copy / "metrics.json").read_text())
    (tiny_run_copy / "metrics.json").write_text(json.dumps({**metrics, "test": None}))
    lines = result_lines(tiny_run_copy)
    assert len(lines) == 4 and lines[0].startswith("model: efficientnet_lite0 (random init); weights: ")
    assert lines[1] == "checkpoint: epoch 1 of 1 (full phase), the best val_loss"
    assert lines[2] == "test split: none in this run's split, so nothing was scored"
    assert metrics["data"]["subject_level"] is True  # the tiny run splits by subject
    (tiny_run_copy / "metrics.json").write_text(json.dumps({**metrics, "data": {"subject_level": False}}))
    assert result_lines(tiny_run_copy)[2].endswith(
        "(image-level split: a person may have cells in training and test, so optimistic for new people)"
    )


def test_a_run_asked_to_fine_tune_but_scored_with_its_frozen_head_says_so() -> None:
    """The best checkpoint is chosen over both phases; when fine-tuning never beat the frozen head, nothing said the
    scores were the head-only network's."""
    training = {"best_epoch": 2, "best_phase": "frozen", "epochs_run": 3}
    recipe = {"epochs_finetune": 1, "weights_pretrained": True, "monitor": "val_loss"}
    assert _checkpoint_line(training, recipe) == [
        "checkpoint: epoch 2 of 3 (frozen phase), the best val_loss: fine-tuning never beat the frozen phase's head, "
        "so the run is scored without it"
    ]
    assert _checkpoint_line(training, {**recipe, "epochs_finetune": 0}) == [
        "checkpoint: epoch 2 of 3 (frozen phase), the best val_loss"
    ]
    assert _checkpoint_line({"epochs_run": 3}, recipe) == []  # recorded before metrics.json kept the epoch


def test_train_records_its_segment_mode_and_counts_the_cells_cut_out(
    natural_crop_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Crops with a natural background are cut out (default ``--segment auto``), the blank is skipped with its
    reason, and the run records the mode; a record from before segmentation existed reads back as ``never``."""
    run = tmp_path / "run"
    args = ["train", "--data", str(natural_crop_dataset), "--model", "cnn", *TINY, "--run-dir", str(run)]
    assert main([*args, "--split-ratios", "0.5,0.25,0.25"]) == 0
    assert "segmented 12 of 12 cells (cut out of their background onto black)" in capsys.readouterr().err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["segment"] == "auto" and config["preprocessing"]["segment"] == "auto"
    data = json.loads((run / "metrics.json").read_text())["data"]
    assert sum(part["cut_out"] for part in data["segmented"].values()) == 12
    assert [Path(path).name for path, reason in data["skipped"] if "no white cell found" in reason] == ["blank.png"]

    del config["segment"], config["preprocessing"]["segment"]  # as runs were recorded before --segment
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_run(run).preprocessing.segment == "never"
    assert TrainConfig.load(run / "config.yaml").segment == "never"


class _CtrlC(L.Callback):
    """Ctrl-C at the start of the second epoch (Lightning catches it and exits 1 after a clean shutdown)."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: object) -> None:
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def _train_interrupted_by(callback: L.Callback, data: Path, run: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """``train``'s exit status with ``callback`` among its callbacks (which are then put back)."""
    built = trainer_module.build_callbacks
    monkeypatch.setattr(trainer_module, "build_callbacks", lambda *args: [*built(*args), callback])
    handler = signal.getsignal(signal.SIGINT)
    try:
        return main(["train", "--data", str(data), "--model", "cnn", *TINY, "--run-dir", str(run)])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT from then on
        monkeypatch.setattr(trainer_module, "build_callbacks", built)


def test_a_run_given_relative_data_resumes_after_ctrl_c_from_a_moved_folder_then_says_it_finished(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the README says moved runs resume: the data is recorded by its absolute path, not as typed. Resuming it
    again once finished leaves its files as they are."""
    shutil.copytree(synth_small, tmp_path / "cells")
    monkeypatch.chdir(tmp_path)
    assert _train_interrupted_by(_CtrlC(), Path("cells"), Path("run"), monkeypatch) == 130
    assert "\n\nblastscope: interrupted" not in capsys.readouterr().err  # Lightning's shutdown line ended the ^C line
    moved = Path(shutil.move(tmp_path / "run", tmp_path / "elsewhere" / "moved"))
    monkeypatch.chdir(moved.parent)
    assert main(["train", "--resume", "moved"]) == 0
    metrics = (moved / "metrics.json").read_bytes()

    assert main(["train", "--resume", "moved"]) == 0
    captured = capsys.readouterr()
    assert "moved finished training already (its metrics.json is written): nothing to resume" in captured.err
    assert captured.out.split()[-1] == "moved" and (moved / "metrics.json").read_bytes() == metrics


def test_ctrl_c_says_how_to_resume_and_the_run_resumes(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train_interrupted_by(_CtrlC(), synth_small, run, monkeypatch) == 130
    assert f"blastscope: interrupted; `blastscope train --resume {run}` continues it" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # a display flag, taken
    assert (run / "metrics.json").is_file()


class _CtrlCInShutdown(_CtrlC):
    """Ctrl-C whose shutdown fails, as one in the last epoch's data-loader teardown did with Lightning's
    ``RuntimeError: Please call iter(combined_loader) first``."""

    def on_exception(self, trainer: L.Trainer, module: object, exception: BaseException) -> None:
        raise RuntimeError("Please call `iter(combined_loader)` first.")


def test_ctrl_c_whose_shutdown_fails_is_still_an_interruption(
    synth_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train_interrupted_by(_CtrlCInShutdown(), synth_small, run, monkeypatch) == 130
    err = capsys.readouterr().err
    assert f"blastscope: interrupted; `blastscope train --resume {run}` continues it" in err
    assert "Traceback" not in err


def test_ctrl_c_names_the_run_folder_it_made_or_says_there_is_none_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --run-dir the run's folder is named by the time it started: the interrupt line names it, as it names
    the folder --resume was given; stopped before the run's files were written, it says to run the same command."""
    out, stop_after_writing = tmp_path / "runs", [True]
    (out / "earlier-cnn").mkdir(parents=True)
    (out / "earlier-cnn" / "config.yaml").write_text("model: cnn\n")  # another run's: never named

    def interrupted_train(config: TrainConfig, run_dir: Path | None = None, repeating: Path | None = None) -> Path:
        if stop_after_writing[0]:
            made = out / "20250101-000000-cnn"
            made.mkdir()
            (made / "config.yaml").write_text("model: cnn\n")
        raise KeyboardInterrupt

    def interrupted_resume(run_dir: Path, *, progress: bool | None = None) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_module, "train", interrupted_train)
    monkeypatch.setattr(engine_module, "resume", interrupted_resume)
    argv = ["train", "--data", str(tmp_path), "--model", "cnn", "--out", str(out)]
    assert main(argv) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"blastscope: interrupted; `blastscope train --resume {out / '20250101-000000-cnn'}` continues it"
    stop_after_writing[0] = False
    assert main([*argv[:-1], str(tmp_path / "other")]) == 130
    err = capsys.readouterr().err  # on a line of its own, not after the ^C a terminal echoes
    assert (
        err == "\nblastscope: interrupted; no run was written yet, so nothing to resume: run the same command again\n"
    )
    assert main(["train", "--resume", str(out / "earlier-cnn")]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"blastscope: interrupted; `blastscope train --resume {out / 'earlier-cnn'}` continues it"


EPOCHS = "is not a number of epochs; give a whole number of at least 0, e.g. 5"
LEARNING_RATE = "is not a learning rate; give a finite number above 0, e.g. 1e-3"


@pytest.mark.parametrize(
    ("option", "bad", "refusal"),
    [
        ("--batch-size", "0", "is not a batch size; give a whole number of at least 1, e.g. 32"),
        ("--epochs-frozen", "-1", EPOCHS),
        ("--epochs-finetune", "2.5", EPOCHS),
        ("--patience", "-1", EPOCHS),
        *(("--lr-head", bad, LEARNING_RATE) for bad in ("0", "-1e-3", "nan", "inf")),
        ("--lr-finetune", "fast", LEARNING_RATE),
        ("--seed", "-1", "is not a seed; give a whole number of at least 0, e.g. 0"),
        ("--num-workers", "-1", "is not a number of worker processes; give a whole number of at least 0, e.g. 2"),
        ("--num-nodes", "0", "is not a number of machines; give a whole number of at least 1, e.g. 1"),
    ],
)
def test_unusable_numbers_are_refused_by_argparse_in_one_line_naming_the_option(
    option: str, bad: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As scan and serve refuse them, before the data is read; the recipe's own checks stay for the Python API."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["train", "--data", "d", f"{option}={bad}"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"blastscope train: error: argument {option}: {bad!r} {refusal}"
    )


def test_the_smallest_usable_numbers_reach_the_recipe() -> None:
    """0 epochs in one phase, 0 patience and 0 workers (the main process) are usable."""
    given = ["--red-cell-diameter", "8", "--epochs-frozen", "0", "--patience", "0", "--num-workers", "0"]
    config = build_config(vars(build_parser().parse_args(["train", "--data", "d", *given, "--lr-head", "1e-9"])))
    assert (config.red_cell_diameter, config.epochs_frozen, config.patience, config.num_workers) == (8.0, 0, 0, 0)
    assert config.lr_head == 1e-9
