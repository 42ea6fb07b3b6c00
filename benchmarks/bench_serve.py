"""`blastscope serve` under load: the server's peak RSS and /health latency while it decodes and classifies.

    python benchmarks/bench_serve.py                        # trains a tiny run first; 4, 8, 16 uploads; 48 heavy
    python benchmarks/bench_serve.py --run runs/<run> --uploads 4 8 16 --heavy 48
    python benchmarks/bench_serve.py --modes                # the decoder's peak bytes a pixel, by image kind

Scenarios, each against a fresh `blastscope serve` on a free 127.0.0.1 port (nothing else is contacted):

* N concurrent uploads of the memory case, ../shared/cases/memory/bomb_7000_gray16.png (a 95 KB 16-bit grey PNG of
  7000x7000 pixels, under the 50-megapixel limit; generated identically in memory when the file is missing);
* H concurrent heavy requests: each the most files a request may carry (32) real 450x450 C-NMC cells from
  ../shared/data/cnmc-sample (synthetic cells when missing), with `?explain=true` (a Grad-CAM overlay per cell);
* 1,500 connections that each send half a request head and stop: how many the server closes, and when (it waits
  for the server's request timeout plus 10 s, or 30 s where /health does not name one).

While they run, /health is asked every 50 ms on a connection of its own. Printed: the answers by status, the wall
time, the server's RSS at rest and its peak (VmHWM, reset before each scenario), and /health latency percentiles.
Every request and every scenario is bounded (600 s). Extra arguments after ``--`` go to `serve`.
"""

from __future__ import annotations

import argparse
import io
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEMORY_CASE = SHARED / "cases" / "memory" / "bomb_7000_gray16.png"
CELLS = SHARED / "data" / "cnmc-sample"
REQUEST_LIMIT_S, SCENARIO_LIMIT_S = 600.0, 600.0


def gray16_png(width: int, height: int) -> bytes:
    """A valid 16-bit grey PNG of zeros, as the memory case is."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\0" * (2 * width + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_run(out: Path) -> Path:
    """A real run in seconds: efficientnet_lite0 at 32 px, one frozen epoch on synthetic cells (as the tests use)."""
    from blastscope.data.synth import synthesize
    from blastscope.training import TrainConfig, train

    data = out / "synth"
    synthesize(data, subjects_per_class=6, cells_per_subject=8, image_size=64, seed=0, separation=2.0)
    config = TrainConfig(
        data=str(data),
        model="efficientnet_lite0",
        pretrained="none",
        image_size=32,
        epochs_frozen=1,
        epochs_finetune=0,
        batch_size=16,
        num_workers=0,
        out=str(out / "runs"),
        progress=False,
    )
    return Path(train(config))


def heavy_files(count: int) -> list[tuple[str, bytes]]:
    cells = sorted(CELLS.rglob("*.png"))[:count] if CELLS.is_dir() else []
    if len(cells) == count:
        return [(path.name, path.read_bytes()) for path in cells]
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (450, 450, 3), dtype=np.uint8)).save(buffer, format="PNG")
        files.append((f"synthetic_{i}.png", buffer.getvalue()))
    return files


class Server:
    def __init__(self, run: Path, serve_args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "blastscope", "serve", str(run), "--port", str(self.port), *serve_args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"`{' '.join(command)}` did not come up")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def scenario(server: Server, label: str, requests: int, files: list[tuple[str, bytes]], query: str = "") -> None:
    """``requests`` concurrent POST /predict of ``files``, /health asked every 50 ms meanwhile; one printed line."""
    pid = server.process.pid
    warm_up = [("files", files[-1])] if files[-1][0].startswith(("UID", "synthetic")) else []
    warm_up += [("files", ("gray16.png", gray16_png(600, 400)))]  # what every request uses, imported and allocated
    httpx.post(f"{server.url}/predict?explain=true", files=warm_up, timeout=REQUEST_LIMIT_S).raise_for_status()
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
    at_rest, _ = memory(pid)
    answers: list[int | str] = []

    def post() -> None:
        try:
            upload = [("files", (name, data)) for name, data in files]
            answers.append(
                httpx.post(f"{server.url}/predict{query}", files=upload, timeout=REQUEST_LIMIT_S).status_code
            )
        except httpx.HTTPError as error:
            answers.append(type(error).__name__)

    threads = [threading.Thread(target=post, daemon=True) for _ in range(requests)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    with httpx.Client(timeout=60) as prober:
        while any(thread.is_alive() for thread in threads) and time.monotonic() - started < SCENARIO_LIMIT_S:
            asked = time.monotonic()
            try:
                prober.get(f"{server.url}/health")
                latencies.append(time.monotonic() - asked)
            except httpx.HTTPError:
                latencies.append(float("inf"))
            time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=max(0.0, SCENARIO_LIMIT_S - (time.monotonic() - started)))
    wall = time.monotonic() - started
    _, peak = memory(pid)
    ms = np.percentile(np.array(latencies) * 1000, [50, 90, 99, 100]) if latencies else [float("nan")] * 4
    statuses = " ".join(f"{status}x{count}" for status, count in sorted(Counter(map(str, answers)).items()))
    print(
        f"{label:34s} {statuses:16s} {wall:7.1f} s  RSS {at_rest:5d} -> peak {peak:5d} MiB (+{peak - at_rest:5d})  "
        f"/health ms p50 {ms[0]:6.1f} p90 {ms[1]:6.1f} p99 {ms[2]:6.1f} max {ms[3]:7.1f}  (n={len(latencies)})",
        flush=True,
    )


def half_open(server: Server, count: int) -> None:
    """``count`` connections that each send half a request head and stop: when are they closed?"""
    capacity = httpx.get(f"{server.url}/health", timeout=10).json().get("capacity") or {}
    limit = capacity.get("request_timeout_s", 20.0) + 10
    connections = []
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        connection.setblocking(False)
        selector.register(connection, selectors.EVENT_READ)
        connections.append(connection)
    asked = time.monotonic()
    httpx.get(f"{server.url}/health", timeout=60).raise_for_status()
    health_ms = (time.monotonic() - asked) * 1000
    open_ = set(connections)
    last_closed = None
    while open_ and time.monotonic() - started < limit:
        for key, _ in selector.select(timeout=0.5):
            connection = key.fileobj
            try:
                data = connection.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(connection)
                open_.discard(connection)
                last_closed = time.monotonic() - started
    for connection in connections:
        connection.close()
    selector.close()
    closed = count - len(open_)
    print(
        f"{count} half-sent requests: {closed} closed by the server"
        + (f", the last {last_closed:.1f} s after the first was opened" if last_closed else "")
        + (f"; {len(open_)} still open after {limit:.0f} s" if open_ else "")
        + f"; /health meanwhile {health_ms:.1f} ms",
        flush=True,
    )


MODES = (
    "png-L png-I16 png-RGB png-RGBA png-LA png-P png-RGB48 png-RGBA64 jpeg-L jpeg-RGB jpeg-CMYK jpeg-RGB-rotated "
    "tiff-I tiff-I16 tiff-RGB webp-RGB webp-RGBA bmp-RGB"
).split()


def kind_bytes(kind: str, side: int) -> bytes:
    from PIL import Image

    def png(depth: int, color: int) -> bytes:
        def chunk(name: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(name + data))

        channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        compressor, row = zlib.compressobj(9), b"\0" * (side * channels * depth // 8 + 1)
        pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
        header = struct.pack(">IIBBBBB", side, side, depth, color, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")

    raw = {"png-L": (8, 0), "png-I16": (16, 0), "png-RGB": (8, 2), "png-RGBA": (8, 6), "png-LA": (8, 4)}
    raw |= {"png-RGB48": (16, 2), "png-RGBA64": (16, 6)}
    if kind in raw:
        return png(*raw[kind])
    form, mode = kind.split("-")[:2]
    image, options = Image.new({"I16": "I;16"}.get(mode, mode), (side, side)), {}
    if kind.endswith("rotated"):
        exif = image.getexif()
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    options |= {"tiff": {"compression": "tiff_deflate"}, "webp": {"lossless": True}}.get(form, {})
    buffer = io.BytesIO()
    image.save(
        buffer, format={"jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP", "png": "PNG"}[form], **options
    )
    return buffer.getvalue()


def measure_mode(kind: str, side: int) -> None:
    """In this (fresh) process: the peak RSS of decoding one image of ``kind`` and shrinking it as the server does."""
    import logging

    from blastscope.data.cache import model_input
    from blastscope.serving.app import decode_upload
    from blastscope.serving.memory import decoding_cost

    logging.disable(logging.WARNING)
    data = kind_bytes(kind, side)
    Path("/proc/self/clear_refs").write_text("5")
    at_rest, _ = memory(os.getpid())
    model_input(decode_upload(data, kind, side * side), 224, "bilinear")  # a run that does not segment
    _, peak = memory(os.getpid())
    measured, estimate = (peak - at_rest) * 2**20 / side**2, decoding_cost(data, side * side) / side**2
    verdict = "ok" if estimate >= measured else "UNDER-ESTIMATED"
    print(f"{kind:18s} {measured:6.1f} B/px measured   {estimate:5.1f} B/px reserved   {verdict}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a training run (default: train a tiny one in a temporary folder)")
    parser.add_argument("--uploads", type=int, nargs="*", default=[4, 8, 16], help="concurrent memory-case uploads")
    parser.add_argument("--heavy", type=int, nargs="*", default=[48], help="concurrent heavy requests")
    parser.add_argument("--heavy-files", type=int, default=32, help="cells in each heavy request (default 32)")
    parser.add_argument("--half-open", type=int, default=1500, help="half-sent requests held open (0: skip)")
    parser.add_argument("--modes", action="store_true", help="measure the decoder's peak bytes a pixel by image kind")
    parser.add_argument("--side", type=int, default=5000, help="image side for --modes (default 5000)")
    parser.add_argument("--measure-mode", help=argparse.SUPPRESS)
    parser.add_argument("serve_args", nargs="*", help="after --: extra arguments for `blastscope serve`")
    args = parser.parse_args()
    if args.measure_mode:
        measure_mode(args.measure_mode, args.side)
        return
    if args.modes:
        print(f"peak decoding memory of one {args.side}x{args.side} image, decoded and shrunk to 224 px as served")
        for kind in MODES:
            command = [sys.executable, __file__, "--measure-mode", kind, "--side", str(args.side)]
            subprocess.run(command, check=True, timeout=SCENARIO_LIMIT_S)
        return
    if MEMORY_CASE.is_file():
        bomb, source = MEMORY_CASE.read_bytes(), str(MEMORY_CASE.relative_to(SHARED.parent))
    else:
        bomb, source = gray16_png(7000, 7000), "generated 7000x7000 16-bit grey PNG"
    heavy = heavy_files(args.heavy_files)
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or tiny_run(Path(scratch))
        print(f"run {run.name}; memory case: {source} ({len(bomb) / 1024:.0f} KB); serve {' '.join(args.serve_args)}")
        print(f"heavy request: {len(heavy)} cells of {sum(len(d) for _, d in heavy) / 2**20:.1f} MB, ?explain=true")
        for requests in args.uploads:
            server = Server(run, args.serve_args)
            try:
                scenario(server, f"{requests} memory-case uploads", requests, [("bomb_7000_gray16.png", bomb)])
            finally:
                server.stop()
        for requests in args.heavy:
            server = Server(run, args.serve_args)
            try:
                scenario(server, f"{requests} heavy requests", requests, heavy, "?explain=true")
            finally:
                server.stop()
        if args.half_open:
            server = Server(run, args.serve_args)
            try:
                half_open(server, args.half_open)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
