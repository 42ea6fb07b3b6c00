"""The synthetic demo cells: C-NMC layout, determinism, and classes that differ on every trait without separating."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blastscope.data.discover import scan_dataset
from blastscope.data.synth import synthesize
from blastscope.errors import DataError

NAME = re.compile(r"UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.png")


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("training_data/fold_*/*/*.png"))


def _cell_areas(root: Path, label: str) -> np.ndarray:
    return np.array([(np.asarray(Image.open(f)).max(axis=2) >= 12).mean() for f in root.glob(f"**/{label}/*.png")])


def test_layout_subjects_and_folds(tmp_path: Path) -> None:
    synthesize(tmp_path, subjects_per_class=4, cells_per_subject=3, image_size=32, seed=1)
    files = _files(tmp_path)
    assert len(files) == 2 * 4 * 3
    folds_of: dict[str, set[str]] = {}
    for file in files:
        match = NAME.fullmatch(file.name)
        assert match, file.name
        subject, label = match.group(1), match.group(4)
        assert file.parent.name == label
        assert subject.startswith("H") == (label == "hem")
        folds_of.setdefault(subject, set()).add(file.parent.parent.name)
    assert set(folds_of) == {"1", "2", "3", "4", "H1", "H2", "H3", "H4"}
    assert all(len(folds) == 1 for folds in folds_of.values()), "a subject must sit in one fold"
    assert set().union(*folds_of.values()) == {"fold_0", "fold_1", "fold_2"}


def test_images_are_rgb_cells_centred_on_black(tmp_path: Path) -> None:
    synthesize(tmp_path, subjects_per_class=1, cells_per_subject=2, image_size=48)
    for file in _files(tmp_path):
        pixels = np.asarray(Image.open(file))
        assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
        assert pixels[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0, "corners are background"
        assert pixels[24, 24].max() > 20, "the centre is a stained cell"
        assert pixels[24, 24, 1] < pixels[24, 24, 2], "stained purple: less green than blue"


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    def draw(name: str, seed: int) -> list[bytes]:
        return [f.read_bytes() for f in _files(synthesize(tmp_path / name, 2, 3, image_size=32, seed=seed))]

    assert draw("a", seed=5) == draw("b", seed=5)
    assert draw("a", seed=5) != draw("c", seed=6)


def test_scanned_as_cnmc_with_all_positive(synth_small: Path) -> None:
    table = scan_dataset(synth_small)
    assert table.kind == "cnmc"
    assert table.classes == ("hem", "all")
    assert len(table.cells) == 2 * 6 * 8 and not table.skipped and not table.duplicates
    assert {cell.subject for cell in table.cells} == {*map(str, range(1, 7)), *(f"H{i}" for i in range(1, 7))}


def test_blasts_are_larger_but_sizes_overlap(tmp_path: Path) -> None:
    root = synthesize(tmp_path, subjects_per_class=6, cells_per_subject=10, image_size=32)
    blasts, normal = _cell_areas(root, "all"), _cell_areas(root, "hem")
    assert blasts.mean() > normal.mean()
    assert blasts.min() < normal.max(), "size alone must not separate the classes"


def test_zero_separation_makes_the_classes_alike(tmp_path: Path) -> None:
    root = synthesize(tmp_path, subjects_per_class=6, cells_per_subject=10, image_size=32, separation=0.0)
    blasts, normal = _cell_areas(root, "all"), _cell_areas(root, "hem")
    spread = np.concatenate([blasts, normal]).std()
    assert abs(blasts.mean() - normal.mean()) < 0.5 * spread


@pytest.mark.parametrize(
    "arguments",
    [{"subjects_per_class": 0}, {"cells_per_subject": 0}, {"image_size": 8}, {"separation": -1.0}],
)
def test_impossible_requests_are_data_errors(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(DataError):
        synthesize(tmp_path, **arguments)
