"""Wall time of one two-phase recipe (efficientnet_lite0, ImageNet weights) done three ways, side by side.

(a) plain: a straightforward fp32 eager PyTorch loop, one process, that decodes and resizes every image with PIL in
    every epoch and runs the frozen backbone on every batch of phase 1;
(b) blastscope default: ``blastscope.training.train`` as ``blastscope train`` runs it (precision auto, which is fp32
    for EfficientNets; frozen backbone stages as folded bf16 copies where the CPU has AMX/AVX512-BF16; channels_last,
    DataLoader workers, decoded-image cache filled during the run, phase 1 on backbone features computed once without
    augmentation);
(c) blastscope --no-cached-features: (b), but phase 1 re-runs the frozen backbone on augmented images every epoch.
All three use the same cells, split, augmentation, batch size, epochs, learning rates and unfrozen stages, validate
after every epoch, and end by scoring the test cells. Times include image decoding; (b) and (c) start from an empty
decoded cache. Totals run from model build to test scores; (b) and (c) also scan and hash the files first.

    python benchmarks/bench_training.py --data ../shared/data/cnmc-dev --limit 2000 --image-size 224 --epochs 2

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

MODEL = "efficientnet_lite0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder, e.g. ../shared/data/cnmc-dev")
    parser.add_argument("--limit", type=int, default=1000, help="cells sampled from the dataset (default 1000)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per phase (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--unfreeze-stages", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the blastscope runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", help="of the blastscope runs (default auto: bf16 on AMX CPUs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        scratch_dir = Path(scratch)
        os.environ["BLASTSCOPE_CACHE"] = str(scratch_dir / "cache-default")
        manifest = limited_manifest(args.data, args.limit, args.seed, scratch_dir / "cells.csv")
        print(
            f"{args.limit} cells of {args.data}, {args.image_size} px, {args.epochs}+{args.epochs} epochs, "
            f"batch {args.batch_size}, {torch.get_num_threads()} torch threads, blastscope precision {args.precision}",
            flush=True,
        )
        results = {"default": blastscope_run(args, manifest, scratch_dir, cached=True)}
        os.environ["BLASTSCOPE_CACHE"] = str(scratch_dir / "cache-uncached")
        results["uncached"] = blastscope_run(args, manifest, scratch_dir, cached=False)
        results["plain"] = plain_run(args, scratch_dir / "runs")
    report(results, args.epochs)
    return 0


def limited_manifest(data: Path, limit: int, seed: int, out: Path) -> Path:
    """A CSV manifest of ``limit`` randomly chosen cells, so every way trains on the very same files."""
    from blastscope.data.discover import scan_dataset

    cells = list(scan_dataset(data).cells)
    random.Random(seed).shuffle(cells)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subject"])
        writer.writerows([str(cell.path), cell.label, cell.subject or ""] for cell in cells[:limit])
    return out


def blastscope_run(args: argparse.Namespace, manifest: Path, scratch: Path, cached: bool) -> dict[str, float]:
    from blastscope.training import TrainConfig, train

    config = TrainConfig(
        data=str(manifest),
        model=MODEL,
        pretrained="auto",
        image_size=args.image_size,
        epochs_frozen=args.epochs,
        epochs_finetune=args.epochs,
        unfreeze_stages=args.unfreeze_stages,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        cached_features=cached,
        precision=args.precision,
        patience=10**6,
        out=str(scratch / "runs"),
        progress=False,
    )
    started = time.perf_counter()
    run_dir = train(config)
    total = time.perf_counter() - started
    seconds: dict[str, float] = defaultdict(float)
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        seconds[row["phase"]] += float(row["epoch_seconds"])
    last_frozen = [float(row["epoch_seconds"]) for row in rows if row["phase"] == "frozen"][-1]
    args.run_dir = run_dir  # the plain loop reuses this run's split
    return {"frozen": seconds["frozen"], "finetune": seconds["finetune"], "total": total, "last_frozen": last_frozen}


# -- (a) the plain loop -------------------------------------------------------------------------------------------


def plain_run(args: argparse.Namespace, runs: Path) -> dict[str, float]:
    """fp32, eager, no workers, no cache: PIL-decode every image every epoch; phase 1 re-runs the frozen backbone.

    Like ``blastscope train``, its total includes building the model and scoring the test cells at the end.
    """
    from blastscope.data.augment import AugmentConfig
    from blastscope.data.images import read_rgb
    from blastscope.data.transforms import eval_transform, train_transform
    from blastscope.models import create_model
    from blastscope.training import load_run

    torch.manual_seed(args.seed)
    trained = load_run(args.run_dir)  # for its split only: same cells in train, val and test as the blastscope runs
    classes = list(trained.classes)
    started = time.perf_counter()
    bundle = create_model(MODEL, num_classes=len(classes), pretrained="auto", image_size=args.image_size)
    model, pre = bundle.model, bundle.preprocessing
    augment, evaluate = train_transform(AugmentConfig(), pre), eval_transform(pre)

    def batches(cells: list, transform, shuffle: bool):  # noqa: ANN001, ANN202
        order = list(range(len(cells)))
        if shuffle:
            random.shuffle(order)
        for start in range(0, len(order), args.batch_size):
            chosen = [cells[i] for i in order[start : start + args.batch_size]]
            images = [np.asarray(read_rgb(c.path).resize((pre.input_size, pre.input_size))) for c in chosen]
            yield (
                torch.stack([transform(image) for image in images]),
                torch.tensor([classes.index(c.label) for c in chosen]),
            )

    counts = torch.tensor(
        [sum(c.label == label for c in trained.split.parts["train"]) for label in classes], dtype=torch.float32
    )
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts.clamp(min=1)))

    def epoch(optimizer: torch.optim.Optimizer, frozen: bool) -> None:
        model.train()
        if frozen:
            model.backbone.eval()
        for layer in model.backbone.modules():  # as blastscope's recipe: pretrained batch-norm statistics stay fixed
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()
        for images, labels in batches(trained.split.parts["train"], augment, shuffle=True):
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, labels in batches(trained.split.parts["val"], evaluate, shuffle=False):
                loss_fn(model(images), labels)

    seconds = {}
    mark = time.perf_counter()
    model.backbone.requires_grad_(False)
    head = torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(args.epochs):
        epoch(head, frozen=True)
    seconds["frozen"], mark = time.perf_counter() - mark, time.perf_counter()
    for stage in model.stages()[-args.unfreeze_stages :]:
        stage.requires_grad_(True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    finetune = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=1e-4)
    for _ in range(args.epochs):
        epoch(finetune, frozen=False)
    seconds["finetune"] = time.perf_counter() - mark
    model.eval()
    with torch.no_grad():
        for images, _ in batches(trained.split.parts["test"], evaluate, shuffle=False):
            model(images).softmax(dim=1)
    seconds["total"] = time.perf_counter() - started
    return seconds


def report(results: dict[str, dict[str, float]], epochs: int) -> None:
    plain, default, uncached = results["plain"], results["default"], results["uncached"]
    print()
    print(
        f"{'seconds':<22}{'(a) plain fp32':>16}{'(b) blastscope':>16}{'(c) --no-cached-features':>26}"
        f"{'a/b':>7}{'a/c':>7}"
    )
    for key, label in (("frozen", "phase 1 (frozen)"), ("finetune", "phase 2 (fine-tune)"), ("total", "total")):
        print(
            f"{label:<22}{plain[key]:>16.1f}{default[key]:>16.1f}{uncached[key]:>26.1f}"
            f"{plain[key] / default[key]:>6.1f}x{plain[key] / uncached[key]:>6.1f}x"
        )
    print(
        f"\nphase-1 epoch, re-running the backbone vs cached features (both blastscope, last frozen epoch): "
        f"{uncached['last_frozen']:.2f} s vs {default['last_frozen']:.2f} s = "
        f"{uncached['last_frozen'] / default['last_frozen']:.1f}x; over all {epochs} phase-1 epochs, the one "
        f"feature pass included: {uncached['frozen'] / default['frozen']:.1f}x"
    )
    print(
        "Totals include model build and test-set scoring, and for (b)/(c) scanning/hashing the files and the split; "
        "(b)/(c) phases are sums of history.csv epoch_seconds. C-NMC 2019 data: CC BY 3.0, SBI Lab, IIIT-Delhi and "
        "AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r)."
    )


if __name__ == "__main__":
    sys.exit(main())
