"""The placement search's refusal of too few units, with the way out that applies to holdout parts or to folds."""

from __future__ import annotations

from collections import Counter

import pytest

from blastscope.data.split.placement import Unit, assign
from blastscope.errors import DataError


def _units(per_class: dict[str, int]) -> list[Unit]:
    """Single-class subject groups of 5 cells: ``per_class`` groups of each class."""
    return [
        Unit(f"{label}{index}", [], Counter({label: 5}), None)
        for label, count in per_class.items()
        for index in range(count)
    ]


def test_too_few_groups_for_holdout_parts_suggests_a_ratio_of_zero() -> None:
    with pytest.raises(DataError) as caught:
        assign(_units({"a": 2, "b": 5}), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, subject_level=True)
    assert str(caught.value) == (
        "class 'a' has only 2 subject groups, too few for 3 parts (train, val, test): add subjects, set a part's "
        "ratio to 0 (e.g. --ratios 0.8,0.2,0 (data split) / --split-ratios 0.8,0.2,0 (train)), or split by image "
        "(--split-by image)"
    )


def test_too_few_groups_for_the_folds_suggests_fewer_folds_not_ratios() -> None:
    """Folds take no ratios; the fold count that fits is that of the class with the fewest groups."""
    folds = {f"fold {index + 1}": 1 / 6 for index in range(6)}
    with pytest.raises(DataError) as caught:
        assign(_units({"a": 5, "b": 4}), folds, seed=0, subject_level=True)
    message = str(caught.value)
    assert message.startswith("class 'a' has only 5 subject groups, too few for 6 parts (fold 1, ")
    assert message.endswith(
        ": add subjects, use at most 4 folds (--cv 4 (data split, compare) / --folds 4 (train)), or split by image "
        "(--split-by image)"
    )
    with pytest.raises(DataError) as caught:
        assign(_units({"a": 2, "b": 4}), {"fold 1": 1 / 3, "fold 2": 1 / 3, "fold 3": 1 / 3}, 0, subject_level=False)
    assert str(caught.value).endswith("too few for 3 parts (fold 1, fold 2, fold 3): add subjects")
