"""evaluate_predictions (the pure core) and evaluate_run on a small stand-in run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.errors import BlastscopeError, DataError
from blastscope.evaluation.evaluate import evaluate_predictions, evaluate_run, format_summary
from blastscope.metrics import weighted_f1

CLASSES = ("hem", "all")


def _logits_for(p_all: np.ndarray) -> np.ndarray:
    p_all = np.clip(p_all, 1e-4, 1 - 1e-4)
    return np.stack([np.zeros_like(p_all), np.log(p_all / (1 - p_all))], axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def cohort() -> dict[str, np.ndarray | list[str]]:
    """Validation favours a threshold near 0.7; the test cells would favour one near 0.3."""
    rng = np.random.default_rng(0)
    y_val = np.repeat([0, 1], 40)
    p_val = np.where(y_val == 1, rng.uniform(0.7, 1.0, 80), rng.uniform(0.0, 0.68, 80))
    y_test = np.repeat([0, 1], 30)
    p_test = np.where(y_test == 1, rng.uniform(0.32, 1.0, 60), rng.uniform(0.0, 0.3, 60))
    subjects = [f"{'H' if y == 0 else ''}{i // 6}" for i, y in enumerate(y_test)]
    return {
        "y_val": y_val,
        "logits_val": _logits_for(p_val),
        "y_test": y_test,
        "logits_test": _logits_for(p_test),
        "subjects": subjects,
    }


def test_val_threshold_is_chosen_on_validation_not_test(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    result = evaluate_predictions(
        cohort["y_test"],
        _softmax(logits_test),
        cohort["subjects"],
        CLASSES,
        threshold="val",
        logits=logits_test,
        val=(cohort["y_val"], cohort["logits_val"]),
        bootstrap=50,
    )
    chosen = result["threshold"]["value"]
    assert result["threshold"]["source"] == "val:weighted_f1"
    p_val = _softmax(cohort["logits_val"])[:, 1]
    # perfect on validation (above every HEM, at most the lowest ALL); the test cells would want (0.3, 0.32]
    assert p_val[cohort["y_val"] == 0].max() < chosen <= p_val[cohort["y_val"] == 1].min()
    test_score_at_chosen = weighted_f1(cohort["y_test"], _softmax(logits_test), chosen)
    assert result["metrics"]["weighted_f1"] == pytest.approx(test_score_at_chosen) and test_score_at_chosen < 1.0


def test_everything_is_reported_as_plain_json(cohort: dict) -> None:
    logits_test = cohort["logits_test"]
    result = evaluate_predictions(
        cohort["y_test"],
        _softmax(logits_test),
        cohort["subjects"],
        CLASSES,
        logits=logits_test,
        val=(cohort["y_val"], cohort["logits_val"]),
        bootstrap=50,
        seed=3,
    )
    json.dumps(result)
    assert result["threshold"] == {"value": 0.5, "source": "default", "val_score": None}
    assert result["bootstrap"]["unit"] == "subject" and result["bootstrap"]["n_units"] == 10
    assert result["subjects"]["n_subjects"] == 10
    assert result["calibration"]["temperature"] is not None and result["calibration"]["after"] is not None
    assert result["roc"]["fpr"][0] == 0.0 and result["roc"]["tpr"][-1] == 1.0


def test_without_subjects_or_validation(cohort: dict) -> None:
    probabilities = _softmax(cohort["logits_test"])
    result = evaluate_predictions(cohort["y_test"], probabilities, None, CLASSES, bootstrap=20)
    assert result["subjects"] is None and result["bootstrap"]["unit"] == "cell"
    assert result["calibration"]["after"] is None
    assert evaluate_predictions(cohort["y_test"], probabilities, None, CLASSES, bootstrap=0)["bootstrap"] is None


def test_multiclass_has_no_threshold() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 10)
    probabilities = _softmax(rng.normal(size=(30, 3)) + 2 * np.eye(3)[y])
    result = evaluate_predictions(y, probabilities, None, ("a", "b", "c"), threshold="val", bootstrap=10)
    assert result["threshold"]["source"].startswith("argmax") and result["roc"] is None


@pytest.fixture(scope="module")
def small_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-epoch run of the small CNN on 32-pixel synthetic cells."""
    from blastscope.training import TrainConfig, train

    out = tmp_path_factory.mktemp("runs")
    config = TrainConfig(
        data=str(synth_small),
        model="cnn",
        pretrained="none",
        image_size=32,
        epochs_frozen=0,
        epochs_finetune=1,
        num_workers=0,
        progress=False,
        out=str(out),
    )
    return train(config)


def test_evaluate_run_on_the_test_split(small_run: Path) -> None:
    from blastscope.runs import load_run

    result = evaluate_run(small_run, threshold="val", tta=True, bootstrap=30, precision="fp32")
    test_cells = load_run(small_run).split.parts["test"]
    assert result.n_cells == len(test_cells) == len(result.predictions)
    assert result.subject_level and not any("image-level" in note for note in result.notes)
    assert result.weights_source == "random init" and result.display_name == "cnn (random init)"
    assert result.attribution == "synthetic cells generated by blastscope synth, seed 0"
    assert result.plain["threshold"]["source"] == "val:weighted_f1"
    assert result.tta["threshold"] == result.plain["threshold"]  # TTA is scored at the same threshold
    assert result.plain["calibration"]["temperature"] is not None
    assert {"p_hem", "p_all", "p_hem_tta", "p_all_tta"} <= set(result.predictions[0])
    data = json.loads(json.dumps(result.to_dict()))
    assert "predictions" not in data and data["plain"]["metrics"]["n"] == len(test_cells)
    assert "weighted F1" in format_summary(result) and "with TTA" in format_summary(result)


def test_new_data_drops_cells_the_run_has_seen(small_run: Path, synth_small: Path) -> None:
    from blastscope.runs import load_run

    split = load_run(small_run).split
    result = evaluate_run(small_run, data=synth_small, bootstrap=0, precision="fp32")
    assert result.n_cells == len(split.parts["test"])  # the training and validation cells are left out
    assert result.split == "all" and any("left out" in note for note in result.notes)


def test_new_data_with_other_classes_is_refused(small_run: Path, tmp_path: Path) -> None:
    for label in ("tumour", "stroma"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (label == "tumour") * 100, np.uint8)).save(
                tmp_path / label / f"{i}.png"
            )
    with pytest.raises(DataError, match="differ from the run's"):
        evaluate_run(small_run, data=tmp_path, bootstrap=0)


def test_threshold_is_never_tuned_on_the_cells_scored(small_run: Path) -> None:
    with pytest.raises(BlastscopeError, match="--split val"):
        evaluate_run(small_run, split="val", threshold="val")


def test_no_temperature_fitted_on_the_cells_scored(small_run: Path) -> None:
    result = evaluate_run(small_run, split="val", threshold=0.5, bootstrap=0, precision="fp32")
    calibration = result.plain["calibration"]
    assert calibration["temperature"] is None and calibration["after"] is None
    assert any("no temperature scaling" in note for note in result.notes)


@pytest.mark.integration
def test_real_cnmc_cells_as_new_data(small_run: Path, cnmc_sample: Path) -> None:
    """The 52 real C-NMC sample cells (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA) read and scored."""
    result = evaluate_run(small_run, data=cnmc_sample, bootstrap=20, precision="fp32")
    assert result.n_cells == 52 and result.plain["subjects"]["n_subjects"] == 26
    assert result.plain["metrics"]["confusion_matrix"][0][0] + result.plain["metrics"]["confusion_matrix"][0][1] == 26
    assert result.attribution is not None and "TCIA" in result.attribution
