"""Fixtures shared by the whole suite: one CPU thread, the real C-NMC cells in ../shared, the one small synthetic
dataset and the one tiny trained run made from it."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the whole session, restored at its end.

    The test machine has 2 cores shared with other test runs: there two OpenMP threads spin against each other, which
    makes tiny forwards and training steps several times slower, never faster. Subprocesses (DDP, resume, serve) do not
    inherit it; they get ``OMP_NUM_THREADS=1`` from their tests.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the decoded-image cache of the tests out of the user's cache dir."""
    os.environ["BLASTSCOPE_CACHE"] = str(tmp_path_factory.mktemp("decoded-cache"))


def _shared(name: str, folder: Path = SHARED_DATA) -> Path:
    """``folder/name`` in ../shared; a test needing it skips where it is missing, and fails instead when CI=true."""
    path = folder / name
    if not path.is_dir():
        message = f"{path} is missing: integration tests read it from ../shared"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cases() -> Path:
    """../shared/cases: small inputs as real users' files arrive (its README says what each one is)."""
    return _shared("cases", SHARED_DATA.parent)


@pytest.fixture(scope="session")
def cnmc_dev() -> Path:
    """6,403 files of real C-NMC 2019 cells (CC BY 3.0, SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA)."""
    return _shared("cnmc-dev")


@pytest.fixture(scope="session")
def bccd() -> Path:
    """BCCD (MIT, Shenggan): 364 real 640x480 smear photographs with Pascal-VOC white-cell boxes (its README)."""
    return _shared("bccd")


@pytest.fixture(scope="session")
def cnmc_sample() -> Path:
    """The 52-cell C-NMC sample: 2 cells from each of 26 subjects."""
    return _shared("cnmc-sample")


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's one synthetic C-NMC-layout dataset: 6 subjects per class, 8 cells each, 64x64 pixels, classes 2 SDs
    apart (96 cells). Enough whole subjects for a 60/20/20 split with at least 16 test cells, 3-fold cross-validation
    and a model that learns them; tests copy it before changing it."""
    from blastscope.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth-small")
    synthesize(out, subjects_per_class=6, cells_per_subject=8, image_size=64, seed=0, separation=2.0)
    return out


@pytest.fixture(scope="session")
def tiny_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's one trained run, shared by the session: one epoch of random-init efficientnet_lite0 at 32 px on
    ``synth_small`` (seconds on a CPU, yet every file a real run has). Tests that change a run use ``tiny_run_copy``."""
    return _train_tiny(synth_small, tmp_path_factory.mktemp("runs"))


def _train_tiny(data: Path, out: Path, model: str = "efficientnet_lite0", **recipe: Any) -> Path:
    """One epoch of random-init ``model`` at 32 px on ``data`` into ``out``; ``recipe`` overrides fields."""
    from blastscope.training import TrainConfig, train

    config = TrainConfig(
        data=str(data),
        model=model,
        pretrained="none",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        batch_size=16,
        num_workers=0,
        out=str(out),
        progress=False,
        **recipe,
    )
    return Path(train(config))


@pytest.fixture(scope="session")
def tiny_run_seed1(synth_small: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second trained run like ``tiny_run`` on the same split (its ``split.csv``) but another seed: different
    weights, for ensembles of two runs."""
    from blastscope.training.config import SplitConfig

    split = SplitConfig(csv=str(tiny_run / "split.csv"))
    return _train_tiny(synth_small, tmp_path_factory.mktemp("runs-seed1"), seed=1, split=split)


@pytest.fixture(scope="session")
def tiny_colour_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run like ``tiny_run`` trained with ``--colour-norm subject``: each cell's colours normalised by those of all
    its subject's cells."""
    return _train_tiny(synth_small, tmp_path_factory.mktemp("runs-colour"), colour_norm="subject")


@pytest.fixture(scope="session")
def tiny_three_class_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run like ``tiny_run`` on three classes, ``all``, ``hem`` and ``other`` (the hem cells with new bytes): a
    multi-class run, which has no positive class and decides by the most probable class."""
    data = tmp_path_factory.mktemp("three-classes")
    for name in ("all", "hem", "other"):
        (data / name).mkdir()
    for index, source in enumerate(sorted(synth_small.rglob("*.png"))):
        label = "all" if source.stem.endswith("_all") else "hem"
        shutil.copyfile(source, data / label / f"cell{index}.png")
        if label == "hem":  # new bytes, so the copies are not duplicates
            (data / "other" / f"cell{index}.png").write_bytes(source.read_bytes() + bytes([index % 256]) * 7)
    return _train_tiny(data, tmp_path_factory.mktemp("runs-three"))


@pytest.fixture
def tiny_run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_run`` for a test that changes the run folder."""
    return Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))


@pytest.fixture(scope="session")
def tiny_cnn_run(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run like ``tiny_run`` of the small ``cnn``, for tests that need some exported model: its dynamo ONNX export
    takes a few seconds where efficientnet_lite0's takes 20-30 s on a shared core (tests/cli/test_export_cli.py
    exports the real efficientnet_lite0 run end to end). It calls every cell ALL near p = 0.52, and its Grad-CAM of hem
    is empty: tests that need heat maps of both classes use ``tiny_run``."""
    return _train_tiny(synth_small, tmp_path_factory.mktemp("runs-cnn"), model="cnn")


@pytest.fixture
def tiny_cnn_run_copy(tiny_cnn_run: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_cnn_run`` for a test that changes the run folder (exports it, say)."""
    return Path(shutil.copytree(tiny_cnn_run, tmp_path / tiny_cnn_run.name))


@pytest.fixture(scope="session")
def exported_run(tiny_cnn_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``tiny_cnn_run`` exported with every variant (fp32, int8, bf16), so ``tiny_cnn_run`` stays
    PyTorch-only."""
    from blastscope.export.onnx import export_run
    from blastscope.runs import load_run

    run_dir = shutil.copytree(tiny_cnn_run, tmp_path_factory.mktemp("exported") / tiny_cnn_run.name)
    export_run(load_run(run_dir), int8=True, bf16=True, log=lambda _: None)
    return run_dir


@pytest.fixture(scope="session")
def cell_images(synth_small: Path) -> list[Path]:
    """A few cell images of each class from the synthetic dataset."""
    files = sorted(synth_small.rglob("*.png"))
    return [path for label in ("all", "hem") for path in files if path.parent.name == label][::16]


def _smear_crop(seed: int, path: Path) -> Path:
    """A 180 px crop of a synthetic smear field around its one white cell, saved as PNG at ``path``."""
    import numpy as np
    from PIL import Image

    from blastscope.data.synth import smear_field

    field = smear_field(seed, height=320, width=320, white_cells=1)
    ys, xs = np.nonzero(field.white_cells == 1)
    top, left = (min(max(0, int(c.mean()) - 90), 320 - 180) for c in (ys, xs))
    Image.fromarray(field.image[top : top + 180, left : left + 180]).save(path)
    return path


@pytest.fixture(scope="session")
def natural_crops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three single white cells with their natural background (red cells, plasma), as other laboratories' crops
    arrive, for ``--segment`` to cut out."""
    folder = tmp_path_factory.mktemp("natural-crops")
    return [_smear_crop(seed, folder / f"crop{seed}.png") for seed in range(3)]


@pytest.fixture(scope="session")
def smear_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic smear photograph (240 px) with two whole white cells apart, given where one cell is expected:
    segmentation finds both and cuts out only one (``ModelInput.white_cells`` is 2)."""
    from PIL import Image

    from blastscope.data.synth import smear_field

    path = tmp_path_factory.mktemp("smear-photo") / "smear.png"
    Image.fromarray(smear_field(0, height=240, width=240, white_cells=2, touching=False).image).save(path)
    return path


@pytest.fixture(scope="session")
def natural_crop_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-per-folder dataset (``all/``, ``hem/``; no subject ids) of 6 natural-background crops per class, plus
    ``hem/blank.png``, a bright field without any cell that segmentation cannot find."""
    from PIL import Image

    root = tmp_path_factory.mktemp("natural-crop-data")
    for offset, label in enumerate(("all", "hem")):
        (root / label).mkdir()
        for seed in range(offset * 6, offset * 6 + 6):
            _smear_crop(seed, root / label / f"crop{seed}.png")
    Image.new("RGB", (120, 120), (215, 205, 210)).save(root / "hem" / "blank.png")
    return root


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """``read_only(folder)`` makes ``folder`` refuse new files as a read-only file system does (EROFS), where
    blastscope creates them (``tempfile.mkstemp``: its write probe and atomic writes); the tests run as root, which
    ignores permission bits."""
    folders: set[Path] = set()
    create = tempfile.mkstemp

    def refuse(*args: object, dir: object = None, **kwargs: object) -> tuple[int, str]:  # noqa: A002
        if dir is not None and Path(os.fsdecode(dir)).absolute() in folders:  # type: ignore[arg-type]
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(dir))  # type: ignore[arg-type]
        return create(*args, dir=dir, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return lambda folder: folders.add(Path(folder).absolute())


@pytest.fixture(scope="session")
def running_statistics() -> Callable[[torch.nn.Module], torch.nn.Module]:
    """``running_statistics(module)``: ``module`` in eval mode with seeded, non-trivial batch-norm running statistics
    and affine parameters, so that folding them into convolutions has something to get wrong."""

    def seeded(module: torch.nn.Module) -> torch.nn.Module:
        generator = torch.Generator().manual_seed(0)
        for norm in module.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                size = norm.num_features
                norm.running_mean.copy_(torch.randn(size, generator=generator))
                norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                norm.weight.data.copy_(torch.randn(size, generator=generator))
                norm.bias.data.copy_(torch.randn(size, generator=generator))
        return module.eval()

    return seeded
