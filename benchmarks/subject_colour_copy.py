"""A copy of a C-NMC-layout dataset with every cell colour-normalised per subject at full resolution, for measuring
per-person colour normalisation with ``bench_accuracy.py`` before (or apart from) ``--colour-norm subject``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subject_colour_copy.py ../shared/data/cnmc-dev /tmp/cnmc-colour
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_accuracy.py --data /tmp/cnmc-colour --setting full \\
        --out results/full-160-subject-colour

Each subject's cells are mapped by :class:`blastscope.data.stain.SubjectColour` (Reinhard et al. 2001 with the L*a*b*
mean and standard deviation pooled over all cell pixels of the subject's cells, onto the C-NMC reference), on the
450-px images as stored, before blastscope resizes them; ``--colour-norm subject`` does the same on the resized
model inputs. The subject of each file comes from ``MANIFEST.csv``. Exact duplicate files (also across subjects) get
one output, the first's, so the copy deduplicates, links subjects and folds exactly as the original does, and
``bench_accuracy_delta.py`` can pair the two. Files are written as lossless WebP under the same relative paths, with
the same ``MANIFEST.csv``.

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from blastscope.data.stain import SubjectColour


def manifest(root: Path) -> list[tuple[Path, str]]:
    """(relative path, subject) of every row of ``root/MANIFEST.csv``, in its order."""
    with (root / "MANIFEST.csv").open(newline="") as handle:
        return [(Path(row["path"]), row["subject"]) for row in csv.DictReader(handle)]


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a dataset with MANIFEST.csv (path, subject columns)")
    parser.add_argument("out", type=Path, help="new folder for the normalised copy")
    args = parser.parse_args(argv)
    rows = manifest(args.data)

    def images() -> Iterator[tuple[str, np.ndarray]]:
        for path, subject in rows:
            yield subject, read(args.data / path)

    colour = SubjectColour.fit(images())
    written: dict[str, Path] = {}
    for index, (path, subject) in enumerate(rows):
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.blake2b((args.data / path).read_bytes(), digest_size=16).hexdigest()
        if digest in written:
            target.write_bytes(written[digest].read_bytes())
            continue
        written[digest] = target
        Image.fromarray(colour(read(args.data / path), subject)).save(target, lossless=True)
        if index % 1000 == 0:
            print(f"{index:,} of {len(rows):,}", file=sys.stderr, flush=True)
    (args.out / "MANIFEST.csv").write_bytes((args.data / "MANIFEST.csv").read_bytes())
    print(f"{len(rows):,} files of {len(colour.cells)} subjects normalised into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
