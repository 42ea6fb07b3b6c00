"""``blastscope cache``: where the decoded-image cache is, how big it is, and emptying it."""

from __future__ import annotations

import argparse

CACHE_ENV = "BLASTSCOPE_CACHE"
"""``blastscope.data.cache.CACHE_ENV``, spelled out: importing the cache at start-up would load the segmentation's
image-analysis libraries (about a second) for every command's ``--help``."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="show or empty the cache of decoded, resized images",
        description=f"Images are decoded and resized once per size into an on-disk cache that later epochs and runs "
        f"reuse. It lives in the user cache directory unless {CACHE_ENV} names another folder.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("info", help="print the cache's location, entry count and size").set_defaults(run=info)
    actions.add_parser("clean", help="delete every cached image (they are re-made on demand)").set_defaults(run=clean)


def info(args: argparse.Namespace) -> int:
    from blastscope.data.cache import DecodedCache

    usage = DecodedCache().usage()
    print(f"location: {usage.location}")
    print(f"entries:  {usage.entries}")
    print(f"size:     {_human(usage.bytes)}")
    return 0


def clean(args: argparse.Namespace) -> int:
    from blastscope.data.cache import DecodedCache

    freed = DecodedCache().clean()
    print(f"removed {freed.entries} entries ({_human(freed.bytes)}) from {freed.location}")
    return 0


def _human(size: int) -> str:
    value, units = float(size), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"
