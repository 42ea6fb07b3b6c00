"""Images per second: decoding and resizing every file with Pillow vs reading the warm decoded-image cache.

    python benchmarks/bench_cache.py ../shared/data/cnmc-dev --limit 500 --size 224

Runs in one thread, in a throw-away cache folder unless --cache-dir is given, so the numbers compare the two paths
themselves rather than the machine's core count.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from blastscope.data.cache import RESAMPLING, DecodedCache, decode_resized
from blastscope.data.files import find_image_files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder searched recursively for images")
    parser.add_argument("--limit", type=int, default=500, help="images to use (default 500)")
    parser.add_argument("--size", type=int, default=224, help="side to resize to (default 224)")
    parser.add_argument("--interpolation", choices=sorted(RESAMPLING), default="bilinear")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (default: a temporary one, deleted afterwards)")
    args = parser.parse_args(argv)

    files = find_image_files(args.data).files[: args.limit]
    if not files:
        print(f"no images under {args.data}", file=sys.stderr)
        return 2
    digests = [hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest() for p in files]
    with tempfile.TemporaryDirectory() as scratch:
        cache = DecodedCache(args.cache_dir or Path(scratch))
        cache.clean()

        def through_cache() -> None:
            for path, digest in zip(files, digests, strict=True):
                cache.load(path, digest, args.size, args.interpolation)

        rows = [
            (
                "Pillow decode + resize",
                _rate(files, lambda: [decode_resized(p, args.size, args.interpolation) for p in files]),
            ),
            ("cache, cold (decode + write)", _rate(files, through_cache)),
            ("cache, warm (read)", _rate(files, through_cache)),
        ]
        usage = cache.usage()
    print(f"{len(files)} images from {args.data}, resized to {args.size}x{args.size} ({args.interpolation}), 1 thread")
    for name, rate in rows:
        print(f"  {name:<30} {rate:10.0f} images/s")
    print(f"  warm cache is {rows[2][1] / rows[0][1]:.1f}x faster than decoding; {usage.bytes / 2**20:.1f} MiB on disk")
    return 0


def _rate(files: Sequence[Path], work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return len(files) / (time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
