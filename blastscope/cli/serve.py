"""``blastscope serve``: the prediction API and drag-and-drop page for one trained run."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from blastscope.errors import BlastscopeError
from blastscope.serving.limits import Limits


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a trained run over HTTP: JSON API, web page, OpenAPI docs",
        description="POST /predict (multipart field `files`, `?explain=true` adds Grad-CAM overlays), GET /health, "
        "GET / (drag-and-drop page), GET /docs (OpenAPI). Binds 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/...)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    limits = Limits()
    parser.add_argument(
        "--max-file-mb",
        type=float,
        default=limits.max_file_mb,
        help=f"largest accepted file in MB (default {limits.max_file_mb:g})",
    )
    parser.add_argument(
        "--max-files",
        type=int,
        default=limits.max_files,
        help=f"most files in one request (default {limits.max_files})",
    )
    parser.add_argument(
        "--max-pixels",
        type=float,
        default=float(limits.max_pixels),
        help=f"largest accepted image in pixels (default {limits.max_pixels:g})",
    )
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    parser.add_argument("--variant", help="exported variant to use (fp32, int8, bf16); default: export.json's choice")
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="decide at p(positive) >= P while this server runs instead of the run's stored operating point",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from blastscope.api import load
    from blastscope.data.classes import positive_class_line
    from blastscope.metrics import display_name
    from blastscope.serving.app import create_app

    if args.max_file_mb <= 0 or args.max_files < 1 or args.max_pixels < 1:
        raise BlastscopeError("--max-file-mb, --max-files and --max-pixels must be positive")
    if not 0 <= args.port <= 65535:
        raise BlastscopeError(f"--port must be between 0 and 65535 (got {args.port})")
    check_port_free(args.host, args.port)
    classifier = load(args.run_dir, backend=args.backend, variant=args.variant, threshold=args.threshold)
    limits = Limits(max_file_mb=args.max_file_mb, max_files=args.max_files, max_pixels=int(args.max_pixels))
    print(f"serving {classifier.name} ({classifier.backend}) on http://{args.host}:{args.port}/  (docs: /docs)")
    point = classifier.operating_point
    print(positive_class_line(point.positive_class, point.classes, "run", display_name))
    print(f"decision: {point.describe()}")
    uvicorn.run(create_app(classifier, limits), host=args.host, port=args.port, log_level="info")
    return 0


def check_port_free(host: str, port: int) -> None:
    """Fail with a one-line fix before loading the model, rather than with uvicorn's traceback after."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise BlastscopeError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); pass another --port"
        ) from None
