"""Train several models on one shared split with one shared budget, evaluate them alike, and write the report.

Every model sees the same split, seed, epochs per phase and image size (raised only where an architecture needs more,
e.g. inception_v3). Runs live under ``OUT/runs``; a finished run whose recipe and split hash match is reused, so an
interrupted comparison picks up where it stopped. ``cv=K`` repeats all of it on K subject-grouped folds. Each run is
scored at its stored operating point, unless ``threshold`` (``val`` or a number) chooses a new one, stored in the run.

The package is laid out by concern: the request and the shared budget in :mod:`~blastscope.workflows.compare.config`,
the runs (data, shared split, train / reuse / resume, evaluate) in :mod:`~blastscope.workflows.compare.jobs`, the
report's records from evaluations in :mod:`~blastscope.workflows.compare.results`, the dataset card and training
history in :mod:`~blastscope.workflows.compare.cards`, and :func:`run_compare` in
:mod:`~blastscope.workflows.compare.pipeline`. Import from here; the submodules are the layout, not the interface.
"""

from __future__ import annotations

from blastscope.workflows.compare.cards import dataset_card, read_history
from blastscope.workflows.compare.config import (
    BUDGETS,
    DEFAULT_MODELS,
    Budget,
    CompareConfig,
    check_request,
    threshold_text,
)
from blastscope.workflows.compare.jobs import IGNORED_WHEN_REUSING, find_run, image_size_for
from blastscope.workflows.compare.pipeline import run_compare
from blastscope.workflows.compare.results import (
    TRAINING_SETTINGS,
    decision_fields,
    model_result_from_evaluation,
    training_settings,
)

__all__ = [
    "BUDGETS",
    "DEFAULT_MODELS",
    "IGNORED_WHEN_REUSING",
    "TRAINING_SETTINGS",
    "Budget",
    "CompareConfig",
    "check_request",
    "dataset_card",
    "decision_fields",
    "find_run",
    "image_size_for",
    "model_result_from_evaluation",
    "read_history",
    "run_compare",
    "threshold_text",
    "training_settings",
]
