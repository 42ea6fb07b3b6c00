"""The ``blastscope`` command: one sub-command per module in this package.

Each module defines ``register(subparsers)``, which adds its parser and sets ``run`` to a function taking the parsed
arguments. Heavy imports (torch) happen inside those functions so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from blastscope import __version__
from blastscope.cli._interrupt import Interrupted
from blastscope.errors import BlastscopeError
from blastscope.hardware import reuse_freed_memory

ORDER = [
    "synth", "data", "cache", "models", "train", "evaluate", "compare", "ensemble", "predict", "scan", "export", "serve"
]  # fmt: skip


def _add_version_everywhere(parser: argparse.ArgumentParser) -> None:
    if not any("--version" in action.option_strings for action in parser._actions):
        parser.add_argument("--version", action="version", version=f"blastscope {__version__}")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_version_everywhere(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blastscope",
        description="Train, compare, explain and serve classifiers of leukemic blasts (ALL) vs normal cells (HEM).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = {module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_")}
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    _add_version_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # a long-lived server hands memory back after each request instead
        reuse_freed_memory()
    try:
        return int(args.run(args) or 0)
    except BlastscopeError as error:
        print(f"blastscope: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as interrupted:  # the command says what it kept and how to go on
        print(f"blastscope: interrupted; {interrupted.advice}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("blastscope: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush at exit must not fail too
        return 141
