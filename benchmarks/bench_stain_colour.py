"""How coloured are real cells on black? The margin behind ``segmentation.background.STAIN_CHROMA``.

A cut-out on black whose lit pixels' median chroma (largest minus smallest channel, 8-bit levels) is at most
``STAIN_CHROMA`` is refused as holding no stained cell (``lacks_stain_colour``). This prints that median's lowest
values and percentiles over every cell image under ``--data`` and how many cells the rule would refuse (it must be 0):

    python benchmarks/bench_stain_colour.py --data ../shared/data/cnmc-dev
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from blastscope.data.images import is_image_file, read_rgb
from blastscope.segmentation.background import CELL_LEVEL, STAIN_CHROMA, lacks_stain_colour


def median_chroma(rgb: np.ndarray) -> float:
    """Median of max - min channel over the pixels whose brightest channel reaches ``CELL_LEVEL``."""
    lit = rgb.max(axis=2) >= CELL_LEVEL
    return float(np.median(rgb.max(axis=2).astype(np.int16)[lit] - rgb.min(axis=2)[lit]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of cell images (searched recursively)")
    args = parser.parse_args()
    files = sorted(path for path in args.data.rglob("*") if is_image_file(path))
    medians, refused = [], []
    for path in files:
        rgb = np.asarray(read_rgb(path))
        medians.append(median_chroma(rgb))
        if lacks_stain_colour(rgb):
            refused.append(path)
    values = np.array(medians)
    lowest = ", ".join(f"{files[i].name} {values[i]:.0f}" for i in np.argsort(values)[:3])
    print(f"{args.data}: {len(files):,} images; median chroma of lit pixels (8-bit levels)")
    percentiles = ", ".join(f"{q}% {np.percentile(values, q):.1f}" for q in (0.1, 1, 50))
    print(f"  lowest {values.min():.0f} ({lowest}); percentiles {percentiles}")
    print(
        f"  refused as colourless (median <= {STAIN_CHROMA}): {len(refused)}" + "".join(f"\n    {p}" for p in refused)
    )


if __name__ == "__main__":
    main()
