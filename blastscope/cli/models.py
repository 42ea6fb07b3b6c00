"""``blastscope models``: the model zoo at a glance, with where each model's weights would come from."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the models that can be trained",
        description="List the registered models: size, the input size `train` uses without --image-size, "
        "normalisation, and where `--pretrained auto` would take their weights from (checked offline, nothing is "
        "downloaded).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (with descriptions and training defaults)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = model_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def model_rows() -> list[dict[str, Any]]:
    """One row per registered model, in registry order.

    ``input_size`` is the pretrained config's (what the weights were trained at); ``train_image_size`` the size
    ``train`` uses without ``--image-size``: the model's training default when it has one, else that same size."""
    from blastscope.models import get_spec, list_models, parameter_count
    from blastscope.models.weights import describe_weights

    rows = []
    for name in list_models():
        spec = get_spec(name)
        preprocessing = spec.preprocessing()
        train_size = spec.defaults.image_size or preprocessing.input_size  # as `train` resolves an unset --image-size
        rows.append(
            {
                "name": name,
                "parameters_millions": round(parameter_count(name, image_size=train_size) / 1e6, 2),
                **preprocessing.to_dict(),
                "train_image_size": train_size,
                "min_input_size": spec.min_input_size,
                "weights": describe_weights(spec),
                "description": spec.description,
                "defaults": spec.defaults.to_dict(),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns; numbers right-aligned so their magnitudes line up. The input size shown is the one ``train``
    uses by default, which can differ from the pretrained config's (``--json`` gives both)."""
    header = [
        "model",
        "params (M)",
        "train px",
        "min px",
        "interpolation",
        "mean",
        "std",
        "weights (--pretrained auto)",
    ]
    right = {1, 2, 3}
    cells = [
        [
            row["name"],
            f"{row['parameters_millions']:.2f}",
            str(row["train_image_size"]),
            str(row["min_input_size"]),
            row["interpolation"],
            " ".join(f"{v:.3f}" for v in row["mean"]),
            " ".join(f"{v:.3f}" for v in row["std"]),
            row["weights"],
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    own = ", ".join(
        f"{row['name']} {row['train_image_size']} px, pretrained at {row['input_size']}"
        for row in rows
        if row["train_image_size"] != row["input_size"]
    )
    note = (
        f"train px: the input size `train` uses without --image-size: the model's training default ({own or 'none'}), "
        "else its preprocessing config's (`--json`: train_image_size and input_size); min px: the smallest "
        "--image-size it takes"
    )
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells), "", note])
