"""Each registered model built once per session at the smallest input it supports comfortably."""

from __future__ import annotations

import pytest
import torch

from blastscope.models import ModelBundle, create_model, get_spec


def small_size(name: str) -> int:
    return max(32, get_spec(name).min_input_size)


@pytest.fixture(autouse=True)
def _offline_with_empty_hub_caches(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Tests never reach for the hub, nor find weights a previous download left on this machine."""
    from huggingface_hub import constants

    monkeypatch.setenv("BLASTSCOPE_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path_factory.mktemp("torch-hub")))
    yield
    torch.hub.set_dir(previous)


@pytest.fixture(scope="session")
def built() -> dict[str, ModelBundle]:
    return {}


@pytest.fixture
def bundle_of(built: dict[str, ModelBundle]):
    """``bundle_of(name)``: the session's random-init build of ``name``, reset to all-trainable and eval mode."""

    def get(name: str) -> ModelBundle:
        if name not in built:
            built[name] = create_model(name, pretrained="none", image_size=small_size(name))
        bundle = built[name]
        bundle.model.requires_grad_(True)
        bundle.model.eval()
        return bundle

    return get


@pytest.fixture
def images_for():
    """``images_for(name, batch)``: a fixed random batch at ``name``'s small test size."""

    def make(name: str, batch: int = 3) -> torch.Tensor:
        size = small_size(name)
        return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    return make
