"""CellDataset: (tensor, class index) per cell, unreadable files counted and left out up front."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from blastscope.data.augment import AugmentConfig
from blastscope.data.cache import DecodedCache
from blastscope.data.dataset import CellDataset
from blastscope.data.discover import scan_dataset
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.table import Cell, CellTable
from blastscope.data.transforms import eval_transform, train_transform
from blastscope.errors import DataError

PRE = Preprocessing(32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear")


@pytest.fixture(scope="module")
def table(synth_small: Path) -> CellTable:
    return scan_dataset(synth_small)


def broken(tmp_path: Path, name: str) -> Cell:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return Cell(path, "all", "99", "f" * 32)


def test_items_are_normalised_tensors_with_class_indices(table: CellTable, tmp_path: Path) -> None:
    dataset = CellDataset(table.cells, table.classes, PRE, eval_transform(PRE), DecodedCache(tmp_path))
    assert len(dataset) == len(table.cells) and dataset.skipped == []
    for index in (0, len(dataset) - 1):
        image, target = dataset[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert target == table.classes.index(table.cells[index].label)
    assert sorted(set(dataset.targets)) == [0, 1]
    assert DecodedCache(tmp_path).usage().entries == len(table.cells), "building the dataset warmed the cache"


def test_unreadable_images_are_counted_logged_and_left_out(
    table: CellTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cells = [*table.cells[:4], broken(tmp_path, "bad.png"), table.cells[4]]
    with caplog.at_level(logging.WARNING, logger="blastscope.data.dataset"):
        dataset = CellDataset(cells, table.classes, PRE, eval_transform(PRE), DecodedCache(tmp_path / "c"))
    assert len(dataset) == 5
    assert [path.name for path, _ in dataset.skipped] == ["bad.png"]
    assert "skipped 1 of 6 images" in caplog.text and "bad.png" in caplog.text
    assert all(image.shape == (3, 32, 32) for image, _ in (dataset[i] for i in range(len(dataset))))


def test_no_readable_image_or_an_unknown_label_is_a_data_error(table: CellTable, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="none of the 2 images"):
        CellDataset([broken(tmp_path, "a.png"), broken(tmp_path, "b.png")], table.classes, PRE, eval_transform(PRE))
    stray = Cell(table.cells[0].path, "mystery", "1", table.cells[0].digest)
    with pytest.raises(DataError, match="mystery"):
        CellDataset([stray], table.classes, PRE, eval_transform(PRE))


def test_without_a_cache_images_are_decoded_directly(table: CellTable, tmp_path: Path) -> None:
    cached = CellDataset(table.cells[:3], table.classes, PRE, eval_transform(PRE), DecodedCache(tmp_path))
    direct = CellDataset(table.cells[:3], table.classes, PRE, eval_transform(PRE), cache=None)
    for index in range(3):
        assert torch.equal(direct[index][0], cached[index][0])


def test_batches_through_dataloader_worker_processes(table: CellTable, tmp_path: Path) -> None:
    transform = train_transform(AugmentConfig(), PRE)
    dataset = CellDataset(table.cells[:8], table.classes, PRE, transform, DecodedCache(tmp_path))
    images, targets = next(iter(DataLoader(dataset, batch_size=8, num_workers=2)))
    assert images.shape == (8, 3, 32, 32) and targets.tolist() == dataset.targets
