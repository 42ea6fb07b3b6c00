"""The data module's epoch-reproducible sampling and augmentation seeds: the basis of exact resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from blastscope.data import datamodule
from blastscope.data.datamodule import (
    BALANCE_TAG,
    BATCH_TAG,
    SAMPLE_TAG,
    SHUFFLE_TAG,
    BalancedEpochSampler,
    CellDataModule,
    EpochSampler,
    EpochSeededDataset,
    _KeyedTensors,
    derived_seed,
    lone_last_sample,
)
from blastscope.data.discover import scan_dataset
from blastscope.data.preprocessing import Preprocessing
from blastscope.errors import DataError


def test_order_is_a_function_of_seed_and_epoch() -> None:
    first, again, other_seed = EpochSampler(50, 0, True), EpochSampler(50, 0, True), EpochSampler(50, 1, True)
    for sampler in (first, again, other_seed):
        sampler.set_epoch(3)
    assert list(first) == list(again)
    assert list(first) != list(other_seed)
    order_3 = list(first)
    first.set_epoch(4)
    assert list(first) != order_3
    assert sorted(index for _, index in order_3) == list(range(50))
    assert {epoch for epoch, _ in order_3} == {3}


def test_a_pass_takes_its_epoch_from_the_loop_when_it_starts() -> None:
    """Worker processes draw the first keys as soon as the iterator exists, which on resume is before Lightning calls
    set_epoch: the pass must belong to the loop's epoch all the same, and keep it to its end."""
    loop_epoch = 3
    sampler = EpochSampler(20, 0, True, epoch_now=lambda: loop_epoch)
    keys = iter(sampler)
    first = next(keys)  # prefetched
    sampler.set_epoch(0)
    reference = EpochSampler(20, 0, True)
    reference.set_epoch(3)
    assert [first, *keys] == list(reference)


def test_a_restored_position_wins_over_the_loop_for_one_pass() -> None:
    sampler = EpochSampler(20, 0, True, epoch_now=lambda: 9)
    sampler.resume_at(4, 5)
    reference = EpochSampler(20, 0, True)
    reference.set_epoch(4)
    assert list(sampler) == list(reference)[5:]
    assert {epoch for epoch, _ in sampler} == {9}


def test_ranks_share_the_epoch_between_them() -> None:
    shards = [list(EpochSampler(11, 0, True, rank=r, world_size=3)) for r in range(3)]
    assert all(len(shard) == 4 for shard in shards)
    assert {index for shard in shards for _, index in shard} == set(range(11))


class _Noise(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3)


def test_augmentation_randomness_depends_on_seed_epoch_and_index_only() -> None:
    data = EpochSeededDataset(_Noise(), seed=7)
    sample = data[(2, 1)]
    torch.rand(100)  # whatever ran before must not matter
    assert torch.equal(data[(2, 1)], sample)
    assert not torch.equal(data[(3, 1)], sample)
    assert not torch.equal(data[(2, 2)], sample)
    drawn_twice = data[(2, 1, 0)], data[(2, 1, 1)]  # a class-balanced epoch's first and second draw of a cell
    assert torch.equal(data[(2, 1, 1)], drawn_twice[1])
    assert not torch.equal(*drawn_twice)


def test_a_lone_trailing_sample_is_dropped_per_rank_but_tiny_shards_are_kept() -> None:
    assert lone_last_sample(9, 4)  # 4 + 4 + 1: the batch of one would break batch-norm
    assert not lone_last_sample(10, 4)
    assert not lone_last_sample(8, 4)
    assert not lone_last_sample(1, 4)  # fewer cells than a batch: keep them
    assert not lone_last_sample(5, 1)
    shard = len(EpochSampler(17, 0, True, rank=0, world_size=2))  # 9 keys per rank
    assert lone_last_sample(shard, 4)


def test_seed_uses_are_kept_apart_by_their_tags() -> None:
    assert derived_seed(5, 1, 2, 0) == derived_seed(5, 1, 2)  # why the tags exist
    seeds = {
        derived_seed(SHUFFLE_TAG, 5, 1),
        derived_seed(SAMPLE_TAG, 5, 1, 0),
        derived_seed(BATCH_TAG, 5, 1, 0, 0),
        derived_seed(BALANCE_TAG, 5, 1),
    }
    assert len(seeds) == 4


# -- class-balanced sampling (--class-balance sampler) ---------------------------------------------------------------

TARGETS = [0] * 40 + [1] * 7 + [2] * 3  # 80% / 14% / 6%


def _classes(sampler: EpochSampler) -> Counter[int]:
    return Counter(TARGETS[key[1]] for key in sampler)


def test_balanced_draws_give_every_class_an_equal_share_of_each_epoch() -> None:
    sampler = BalancedEpochSampler(TARGETS, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert len(keys) == len(sampler) == len(TARGETS)
        counts = _classes(sampler)
        assert sorted(counts.values()) == [16, 17, 17] and set(counts) == {0, 1, 2}
        assert len(set(keys)) == len(keys)  # a repeat of a cell is its own key, augmented anew
        assert {epoch for epoch, *_ in keys} == {epoch}
        drawn = Counter(key[1] for key in keys)
        for rare in (range(40, 47), range(47, 50)):  # every rare cell drawn, and as often as the others of its class
            assert max(drawn[index] for index in rare) - min(drawn[index] for index in rare) <= 1
            assert min(drawn[index] for index in rare) >= 2
        assert max(drawn[index] for index in range(40)) == 1  # the common class is subsampled without repeats
        assert {key[2] for key in keys if key[1] < 40} == {0}


def test_each_batch_draws_the_classes_equally_in_expectation() -> None:
    sampler = BalancedEpochSampler(TARGETS, seed=3)
    first_batches: Counter[int] = Counter()
    for epoch in range(300):
        sampler.set_epoch(epoch)
        first_batches.update(TARGETS[key[1]] for key in list(sampler)[:8])
    shares = [first_batches[target] / (300 * 8) for target in range(3)]
    assert all(abs(share - 1 / 3) < 0.03 for share in shares), shares


def test_balanced_draws_are_a_function_of_seed_and_epoch_and_resume_mid_epoch() -> None:
    first, again, other_seed = (BalancedEpochSampler(TARGETS, seed) for seed in (0, 0, 1))
    for sampler in (first, again, other_seed):
        sampler.set_epoch(2)
    assert list(first) == list(again) != list(other_seed)
    order_2 = list(first)
    first.set_epoch(3)
    assert list(first) != order_2
    resumed = BalancedEpochSampler(TARGETS, 0, epoch_now=lambda: 9)
    resumed.resume_at(2, 13)
    assert list(resumed) == order_2[13:]
    assert list(BalancedEpochSampler(TARGETS, 0, epoch_now=lambda: 2)) == order_2


def test_balanced_ranks_share_the_epoch_between_them() -> None:
    whole = BalancedEpochSampler(TARGETS, 0)
    shards = [list(BalancedEpochSampler(TARGETS, 0, rank=rank, world_size=3)) for rank in range(3)]
    assert all(len(shard) == 17 for shard in shards)
    assert set(whole) == {key for shard in shards for key in shard}


def test_the_data_module_balances_images_and_cached_features_alike() -> None:
    """The frozen phase on cached features draws as the image phases do: by the features' own labels."""
    features = _KeyedTensors(TensorDataset(torch.zeros(len(TARGETS), 4), torch.tensor(TARGETS)))
    module = CellDataModule({}, ["a", "b", "c"], None, {}, batch_size=8, num_workers=0, seed=0, balance_classes=True)
    sampler = module._sampler(features, shuffle=True)
    assert isinstance(sampler, BalancedEpochSampler)
    assert sorted(_classes(sampler).values()) == [16, 17, 17]
    plain = CellDataModule({}, ["a", "b", "c"], None, {}, batch_size=8, num_workers=0, seed=0)._sampler(features, True)
    assert type(plain) is EpochSampler


def test_cells_the_crop_window_cuts_into_are_warned_about_once_per_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run loads its training part twice (frozen-phase features, then fine-tuning): its warning still comes once."""
    yy, xx = np.mgrid[:64, :64]
    disc = np.where(((yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 30**2)[..., None], 180, 0).astype(np.uint8)
    for shade, label in enumerate(("all", "hem")):
        (tmp_path / label).mkdir()
        for index in range(3):  # cells filling their frame: a 50% window cuts into every one
            stained = np.repeat(disc, 3, axis=2) * np.array([0.8, 0.6, 1.0])  # purple: grey on black is no cell
            cell = stained // (1 + (disc > 0) * (3 * shade + index) / 20)
            Image.fromarray(cell.astype(np.uint8)).save(tmp_path / label / f"{index}.png")
    table = scan_dataset(tmp_path)
    parts = {"train": table.cells[:4], "val": table.cells[4:]}
    pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, crop_fraction=0.5)
    warned: list[str] = []
    record = SimpleNamespace(warning=lambda message, *args: warned.append(message % args))
    monkeypatch.setattr(datamodule, "log", record)
    module = CellDataModule(parts, table.classes, pre, {}, batch_size=8, num_workers=0, seed=0)
    for part in ("train", "train", "val"):
        assert len(module.dataset(part, augment=False).clipped) == len(parts[part])
    assert [message.split(" cells extend")[0] for message in warned] == ["4 of 4 train", "2 of 2 val"]
    assert all("--crop-fraction 0.5 window" in message for message in warned)


def test_a_part_whose_every_cell_of_one_class_is_unreadable_is_refused(tmp_path: Path) -> None:
    """Every HEM cell grey: training on the rest would learn one class and score perfectly, silently."""
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 12**2)[..., None]
    for label, colour in (("all", (170, 120, 200)), ("hem", (150, 150, 150))):
        (tmp_path / label).mkdir()
        for index in range(2):
            cell = (disc * (np.array(colour) + index)).astype(np.uint8)  # two different cells, not duplicates
            Image.fromarray(cell).save(tmp_path / label / f"{index}.png")
    table = scan_dataset(tmp_path)
    pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3)
    module = CellDataModule({"train": table.cells}, table.classes, pre, {}, batch_size=4, num_workers=0, seed=0)
    with pytest.raises(DataError, match=r"no hem cell of the train part could be read \(e\.g\. .*hem.*no stained cell"):
        module.dataset("train", augment=False)
    scored = CellDataModule({"test": table.cells}, table.classes, pre, {}, batch_size=4, num_workers=0, seed=0)
    assert len(scored.dataset("test", augment=False)) == 2  # a test part is scored, and its summary warns
