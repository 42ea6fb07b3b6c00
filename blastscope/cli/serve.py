"""``blastscope serve``: the prediction API and drag-and-drop page for one trained run."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from blastscope.cli._arguments import (
    MIN_RED_CELL_DIAMETER,
    PIXEL_LIMIT_HELP,
    pixel_count,
    positive_number,
    probability_threshold,
    red_cell_diameter,
    whole_number,
)
from blastscope.data.preprocessing import SEGMENT_MODES
from blastscope.errors import BlastscopeError
from blastscope.serving.limits import DECODING_BYTES_PER_LIMIT_PIXEL, Capacity, Limits


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a trained run over HTTP: JSON API, web page, OpenAPI docs",
        description="POST /predict (multipart field `files`, `?explain=true` adds Grad-CAM overlays), GET /health, "
        "GET / (drag-and-drop page), GET /docs (OpenAPI). Binds 127.0.0.1 unless --host says otherwise. "
        "Decoding memory is shared by all requests under --max-decoding-mb; /health answers whatever the load; "
        "slow and idle connections are closed after --request-timeout and --keep-alive seconds.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run directory (runs/...)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--port",
        type=whole_number("a port", "8000", minimum=0, maximum=65535),
        default=8000,
        help="default 8000; 0: any free port",
    )
    limits = Limits()
    parser.add_argument(
        "--max-file-mb",
        type=positive_number("a size in MB", "20"),
        metavar="MB",
        default=limits.max_file_mb,
        help=f"largest accepted file in MB (default {limits.max_file_mb:g})",
    )
    parser.add_argument(
        "--max-files",
        type=whole_number("a number of files", "32"),
        metavar="N",
        default=limits.max_files,
        help=f"most files in one request (default {limits.max_files})",
    )
    parser.add_argument(
        "--max-pixels",
        type=pixel_count,
        default=limits.max_pixels,
        metavar="N",
        help=f"largest accepted image in pixels (default {limits.max_pixels:,}; {PIXEL_LIMIT_HELP})",
    )
    capacity = Capacity()
    parser.add_argument(
        "--max-decoding-mb",
        type=positive_number("a size in MB", "572"),
        metavar="MB",
        help="memory all requests together may use to decode images; an image's share is estimated from its header "
        "before decoding, and an image larger than the whole budget decodes alone "
        f"(default {DECODING_BYTES_PER_LIMIT_PIXEL} bytes per pixel of --max-pixels: "
        f"{capacity.decoding_mb(limits):.0f} MB for {limits.max_pixels:,} pixels)",
    )
    parser.add_argument(
        "--decode-wait",
        type=positive_number("a number of seconds", "10"),
        default=capacity.decode_wait_s,
        metavar="S",
        help="how long a request waits for decoding memory before its waiting files are answered 503 with "
        f"Retry-After (default {capacity.decode_wait_s:g})",
    )
    parser.add_argument(
        "--predict-threads",
        type=whole_number("a number of threads", "4"),
        default=capacity.predict_threads,
        metavar="N",
        help=f"requests decoded and classified at once; others queue (default {capacity.predict_threads})",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_number("a number of seconds", "60"),
        default=capacity.request_timeout_s,
        metavar="S",
        help="a request's head and body must arrive within S seconds of its first byte, else 408 and the "
        f"connection is closed (default {capacity.request_timeout_s:g})",
    )
    parser.add_argument(
        "--keep-alive",
        type=positive_number("a number of seconds", "5"),
        default=capacity.keep_alive_s,
        metavar="S",
        help=f"close a connection idle between requests after S seconds (default {capacity.keep_alive_s:g})",
    )
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    parser.add_argument("--variant", help="exported variant to use (fp32, int8, bf16); default: export.json's choice")
    parser.add_argument(
        "--threshold",
        type=probability_threshold,
        metavar="P",
        help="decide at p(positive) >= P while this server runs instead of the run's stored operating point",
    )
    parser.add_argument(
        "--segment",
        choices=SEGMENT_MODES,
        help="cut cells out of their background as this mode says instead of as the run was trained (default: the "
        "run's own)",
    )
    parser.add_argument(
        "--red-cell-diameter",
        type=red_cell_diameter,
        metavar="PX",
        help="cut cells out at this red-cell diameter (px of the uploaded images) instead of the run's own (measured "
        "on each image unless the run was trained with one); /scan takes it as its photographs' red-cell diameter, "
        "as `blastscope scan --red-cell-diameter` does (default there: 1/6.4 of each photograph's longer side); at "
        f"least {MIN_RED_CELL_DIAMETER:g} px, below which the segmentation's smallest sizes are under a pixel",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from blastscope.api import load
    from blastscope.data.classes import positive_class_line
    from blastscope.metrics import class_display_name
    from blastscope.serving.app import create_app
    from blastscope.serving.connections import serve

    check_port_free(args.host, args.port)
    classifier = load(
        args.run_dir,
        backend=args.backend,
        variant=args.variant,
        threshold=args.threshold,
        segment=args.segment,
        red_cell_diameter=args.red_cell_diameter,
        threshold_by="serve --threshold",
    )
    limits = Limits(max_file_mb=args.max_file_mb, max_files=args.max_files, max_pixels=args.max_pixels)
    capacity = Capacity(
        max_decoding_mb=args.max_decoding_mb,
        decode_wait_s=args.decode_wait,
        predict_threads=args.predict_threads,
        request_timeout_s=args.request_timeout,
        keep_alive_s=args.keep_alive,
    )
    print(f"serving {classifier.name} ({classifier.backend}) on http://{args.host}:{args.port}/  (docs: /docs)")
    point = classifier.operating_point
    print(positive_class_line(point.positive_class, point.classes, "run", class_display_name))
    print(f"decision: {point.describe()}")
    print(f"referral: {classifier.describe_referral()}")
    for line in classifier.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if classifier.per_person:
        print(
            "colours normalised per person: a /predict request's cells by the subject in their C-NMC names when "
            "every name has one, else the request as one person's; each /scan photograph as its own person"
        )
    print(
        f"decoding memory: {memory_size(capacity.decoding_bytes(limits))} shared by all requests (waits up to "
        f"{capacity.decode_wait_s:g} s, then 503); requests must arrive within {capacity.request_timeout_s:g} s, "
        f"idle connections close after {capacity.keep_alive_s:g} s"
    )
    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} makes the service reachable from other machines, and it has no "
            "authentication or encryption: put it behind a proxy that has both",
            file=sys.stderr,
        )
    app = create_app(classifier, limits, capacity, scan_red_cell_diameter=args.red_cell_diameter)
    serve(app, args.host, args.port, capacity)
    return 0


def memory_size(size: int) -> str:
    """``size`` bytes in MB, or KB or bytes under 1 MB: a small ``--max-pixels`` or ``--max-decoding-mb`` gives a
    budget that "0 MB" would misstate."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size} bytes"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only: ``localhost``, 127.0.0.0/8 or ``::1``."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


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
