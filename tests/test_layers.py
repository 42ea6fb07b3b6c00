"""The package's layers: data flows one way, and no module hides an import in a function to dodge a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "blastscope"
LAZY_BY_DESIGN = {
    # The command line imports each command's machinery (PyTorch, Lightning) only when that command runs.
    *(path.relative_to(ROOT).as_posix() for path in (PACKAGE / "cli").glob("*.py")),
    # `blastscope.load` and `blastscope.training.train` load PyTorch on first use (module-level __getattr__).
    "blastscope/__init__.py",
    "blastscope/training/__init__.py",
}


def test_import_contracts_in_pyproject_hold() -> None:
    # In its own process: import-linter configures logging with dictConfig, which disables every logger that already
    # exists, so in the test process every later test that reads blastscope's log records (caplog) would see none.
    lint = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))"
    )
    done = subprocess.run([sys.executable, "-c", lint], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_the_data_layer_imports_no_model_code() -> None:
    probe = (
        "import sys, pkgutil, importlib, blastscope.data as d\n"
        "for m in pkgutil.walk_packages(d.__path__, 'blastscope.data.'): importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith('blastscope.') and not n.startswith('blastscope.data')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "blastscope.models" not in loaded and "blastscope.inference" not in loaded, loaded


def test_no_function_local_imports_of_blastscope_outside_lazy_entry_points() -> None:
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in LAZY_BY_DESIGN:
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blastscope"):
                    hidden.append(f"{name}:{node.lineno} from {node.module}")
                elif isinstance(node, ast.Import) and any(a.name.startswith("blastscope") for a in node.names):
                    hidden.append(f"{name}:{node.lineno} import {node.names[0].name}")
    assert not hidden, "imports inside functions (move them to the top of the module):\n" + "\n".join(hidden)
