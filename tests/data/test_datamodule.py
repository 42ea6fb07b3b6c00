"""The data module's epoch-reproducible sampling and augmentation seeds: the basis of exact resume."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from blastscope.data.datamodule import (
    BATCH_TAG,
    SAMPLE_TAG,
    SHUFFLE_TAG,
    EpochSampler,
    EpochSeededDataset,
    derived_seed,
    lone_last_sample,
)


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
    }
    assert len(seeds) == 3
