"""Phase-1 feature caching: the head trains on exactly what the frozen backbone outputs."""

from __future__ import annotations

import csv
from collections.abc import Callable

import torch

from blastscope.runs import load_run
from blastscope.training import TrainConfig, train
from blastscope.training.features import extract_features


def test_cached_features_feed_the_head_what_the_backbone_would(tiny_config: Callable[..., TrainConfig]) -> None:
    from blastscope.data.datamodule import CellDataModule
    from blastscope.models import create_model

    run_dir = train(tiny_config(cached_features=True, epochs_finetune=0))
    with (run_dir / "history.csv").open() as handle:
        assert [row["phase"] for row in csv.DictReader(handle)] == ["frozen"]
    split = load_run(run_dir).split
    bundle = create_model("efficientnet_lite0", image_size=32)
    datamodule = CellDataModule(
        split.parts, ["hem", "all"], bundle.preprocessing, {}, batch_size=4, num_workers=0, seed=0
    )
    dataset = datamodule.dataset("train", augment=False)
    cached = extract_features(bundle.model.train(), dataset, batch_size=4)
    assert bundle.model.training  # extraction ran in eval mode, then restored the mode it found
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():  # in the same batches of 4: convolution kernels pick their algorithm by batch size
        direct = torch.cat([bundle.model.eval().forward_features(batch) for batch in images.split(4)])
    torch.testing.assert_close(cached.tensors[0], direct)
    assert cached.tensors[1].tolist() == [dataset[i][1] for i in range(len(dataset))]


def test_the_multiscale_head_standardises_with_statistics_of_the_cached_features(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    """Its batch norm's running mean is the training features' mean (stages' maps included) after one epoch of a few
    batches, not an exponential average still near its starting zeros, and the run's checkpoint gives it back."""
    from blastscope.data.datamodule import CellDataModule

    recipe = {"cached_features": True, "epochs_finetune": 0, "folded_frozen_stages": False}  # fp32 features here too
    run_dir = train(tiny_config(model="efficientnet_lite0_multiscale", **recipe))
    trained = load_run(run_dir)
    norm = trained.model.head[0]
    assert norm.running_mean.shape == (40 + 112 + 320 + 1280,) and norm.num_batches_tracked > 1
    datamodule = CellDataModule(
        trained.split.parts, ["hem", "all"], trained.preprocessing, {}, batch_size=8, num_workers=0, seed=0
    )
    cached = extract_features(trained.model, datamodule.dataset("train", augment=False), batch_size=8)
    torch.testing.assert_close(norm.running_mean, cached.tensors[0].mean(dim=0), rtol=0.02, atol=0.02)
