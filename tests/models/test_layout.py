"""The package's import graph: every module imports downwards only, so no import has to hide inside a function."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import blastscope.models

PACKAGE = Path(blastscope.models.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(blastscope modules imported at module level, those imported inside functions or classes) by ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    top_level = {id(node) for node in tree.body}
    at_top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            continue
        names = {name for name in names if name.startswith("blastscope.")}
        (at_top if id(node) in top_level else nested).update(names)
    return at_top, nested


def _sibling_imports(module: str) -> set[str]:
    return {name.split(".")[2] for name in _imports(module)[0] if name.startswith("blastscope.models.")} & set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_blastscope_import_hides_inside_a_function(module: str) -> None:
    assert not _imports(module)[1]


def test_the_modules_import_each_other_without_a_cycle() -> None:
    graph = {module: _sibling_imports(module) for module in MODULES}
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle: {error.args[1]}")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("base", {"registry", "factory", "weights", "backbones"}),
        ("registry", {"factory", "weights", "backbones", "cnn", "timm_classifiers", "attention"}),
        ("backbones", {"registry", "factory", "weights"}),
        ("weights", {"factory", "cnn", "timm_classifiers", "attention"}),
    ],
)
def test_the_registry_records_and_the_factory_builds(module: str, forbidden: set[str]) -> None:
    """As in timm, the registry only records: building networks and resolving weights live below the factory."""
    assert not _sibling_imports(module) & forbidden


def test_the_registry_does_not_touch_timm() -> None:
    tree = ast.parse((PACKAGE / "registry.py").read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in modules if name and name.split(".")[0] == "timm"}
