"""What a comparison is asked for: the models, the data, the shared budget and where each run decides.

:class:`CompareConfig` is the request (``blastscope compare``'s options); :class:`Budget` the training and evaluation
budget every model shares, from a preset in :data:`BUDGETS` with any explicitly given numbers on top.
:func:`check_request` refuses a bad request in one line before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blastscope.data.text_table import in_words
from blastscope.errors import BlastscopeError
from blastscope.evaluation.referral import check_refer_error
from blastscope.evaluation.threshold import parse_threshold
from blastscope.models import list_models
from blastscope.workflows.report import DEFAULT_RANK_METRIC, TTA_SUFFIX, rank_metric_choices

ON_REQUEST = (
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite0_multiscale",
    "efficientnet_lite0_measured",
)
DEFAULT_MODELS = tuple(name for name in list_models() if name not in ON_REQUEST)
"""The seven models users ask for and efficientnet_lite0; Lite0's variants (more capacity, multi-scale features,
measured size and colour, offline weights) on request."""


@dataclass(frozen=True, slots=True)
class Budget:
    """One training and evaluation budget shared by every compared model; ``image_size=None`` keeps each model's own."""

    name: str
    image_size: int | None
    epochs_frozen: int
    epochs_finetune: int
    batch_size: int
    bootstrap: int
    purpose: str

    def describe(self) -> str:
        """The budget in one line, as ``blastscope compare`` prints it first.

        Returns
        -------
        str
            E.g. ``budget demo (...): image size 48 px, epochs 1 frozen + 2 fine-tuning, batch 16, 200 bootstrap
            resamples``.
        """
        size = f"{self.image_size} px" if self.image_size else "each model's own input size"
        return (
            f"budget {self.name} ({self.purpose}): image size {size}, epochs {self.epochs_frozen} frozen + "
            f"{self.epochs_finetune} fine-tuning, batch {self.batch_size}, {self.bootstrap} bootstrap resamples"
        )


BUDGETS = {
    "demo": Budget("demo", 48, 1, 2, 16, 200, "built-in synthetic cells, all 8 models in minutes on 2 CPU cores"),
    "standard": Budget("standard", None, 5, 10, 32, 1000, "a real dataset on a workstation or one GPU"),
    "full": Budget("full", None, 10, 20, 32, 2000, "final numbers for a paper or a decision"),
}

BUDGET_FIELD_NAMES = {
    "image_size": "image size",
    "epochs_frozen": "frozen epochs",
    "epochs_finetune": "fine-tuning epochs",
    "batch_size": "batch size",
    "bootstrap": "bootstrap resamples",
}


@dataclass(slots=True)
class CompareConfig:
    """What ``blastscope compare`` was asked for; unset budget fields fall back to the budget preset."""

    data: Path | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    out: Path = Path("blastscope-out")
    budget: str | None = None
    cv: int | None = None
    epochs_frozen: int | None = None
    epochs_finetune: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    bootstrap: int | None = None
    seed: int = 0
    pretrained: str = "auto"
    threshold: str | None = None
    """``None`` scores each run at the operating point stored in it. ``val`` or a number chooses a new point in each
    run (temperature fitted on its validation split; threshold with the best validation weighted F1, or as given),
    scores it and stores it in the run with ``chosen_by="compare"``, as ``blastscope evaluate --threshold`` does."""
    refer_error: float | None = None
    """Also choose and store each run's refer band on its validation split for this error rate among called cells
    (as ``blastscope evaluate --refer-error`` does); ``None`` keeps each run's stored band (or drops it when
    ``threshold`` chooses a new point)."""
    positive_class: str | None = None
    """The class sensitivity and thresholds are about; ``None`` reads it from the class names (``--positive-class``)."""
    tta: bool = False
    """Also score every model with test-time augmentation (8 flips and 90° rotations) at the same operating point."""
    rank_by: str = DEFAULT_RANK_METRIC
    """The metric the models are ranked by: one of ``rank_metric_choices(tta)`` (the ``_tta`` ones need ``tta``)."""
    progress: bool = True
    train_overrides: dict[str, Any] = field(default_factory=dict)
    """Further TrainConfig fields shared by every model (e.g. num_workers), for callers that need them."""

    def resolved_budget(self) -> Budget:
        """The budget every model is trained and evaluated with.

        Returns
        -------
        Budget
            The preset (``demo`` without data, ``standard`` with) with any explicitly given numbers applied on top;
            its ``purpose`` then names what the flags changed, so no report calls a 1-epoch run "standard".

        Raises
        ------
        BlastscopeError
            For an unknown budget name.
        """
        name = self.budget or ("demo" if self.data is None else "standard")
        if name not in BUDGETS:
            raise BlastscopeError(f"budget {name!r} is unknown: use one of {', '.join(BUDGETS)}")
        preset = BUDGETS[name]
        given = {
            "image_size": self.image_size,
            "epochs_frozen": self.epochs_frozen,
            "epochs_finetune": self.epochs_finetune,
            "batch_size": self.batch_size,
            "bootstrap": self.bootstrap,
        }
        changed = {key: value for key, value in given.items() if value is not None and value != getattr(preset, key)}
        if not changed:
            return preset
        flags = in_words([BUDGET_FIELD_NAMES[key] for key in changed])
        return replace(preset, **changed, purpose=f"{preset.purpose}; {flags} set by flags")


def check_request(config: CompareConfig) -> None:
    """Refuse a request that cannot run, before any data is drawn or model trained.

    Parameters
    ----------
    config : CompareConfig

    Raises
    ------
    BlastscopeError
        For unknown or no models, fewer than 3 cross-validation folds, an unknown ``pretrained`` choice, a
        threshold that is neither ``val`` nor a probability, a ``refer_error`` outside (0, 1), or a ``rank_by`` that
        is unknown or ranks by TTA numbers without ``tta``.
    """
    known = list_models()
    unknown = [name for name in config.models if name not in known]
    if unknown:
        raise BlastscopeError(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    if not config.models:
        raise BlastscopeError("no models to compare: pass --models a,b (see `blastscope models`)")
    if config.cv is not None and config.cv < 3:
        raise BlastscopeError(
            f"--cv {config.cv} is too few folds: use 3 or more (one tests, one validates), or leave --cv out"
        )
    if config.pretrained not in ("auto", "none"):
        raise BlastscopeError(f"--pretrained {config.pretrained!r} is unknown: use auto or none")
    parse_threshold(config.threshold)
    check_refer_error(config.refer_error)
    check_rank_by(config.rank_by, config.tta)


def check_rank_by(metric: str, tta: bool) -> None:
    """Refuse a ranking metric the comparison will not measure.

    Parameters
    ----------
    metric : str
        ``--rank-by``.
    tta : bool
        Whether the comparison scores with test-time augmentation (``--tta``).

    Raises
    ------
    BlastscopeError
        For a name outside ``rank_metric_choices(True)``, or a TTA variant without ``tta``.
    """
    if metric in rank_metric_choices(tta):
        return
    if metric in rank_metric_choices(True):
        raise BlastscopeError(
            f"--rank-by {metric} ranks by the numbers with test-time augmentation: add --tta, or rank by "
            f"{metric.removesuffix(TTA_SUFFIX)}"
        )
    raise BlastscopeError(
        f"--rank-by {metric!r} is unknown: choose from {', '.join(rank_metric_choices(False))} "
        f"(with --tta also each with {TTA_SUFFIX}, e.g. weighted_f1{TTA_SUFFIX})"
    )


def threshold_text(threshold: str | float | None) -> str:
    """Where each run's decisions come from, for the printed budget line and the report's budget table.

    Parameters
    ----------
    threshold : str, float or None
        ``CompareConfig.threshold``.

    Returns
    -------
    str
        ``each run's stored operating point`` for ``None``; otherwise how the point is chosen, ending in
        ``stored in each run``.
    """
    spec = parse_threshold(threshold)
    if spec is None:
        return "each run's stored operating point"
    chosen = "chosen on each run's validation split (best weighted F1)" if spec == "val" else f"{spec:g}"
    return f"{chosen}, with a temperature fitted on the validation split; stored in each run"
