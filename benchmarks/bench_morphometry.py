"""Handcrafted cell morphometry and chromatin texture, cross-validated on the folds of a ``bench_accuracy.py`` run.

Does the network see what a haematologist's measurements see? This trains no network. For every cell it measures,
at the stored 450-px scale, on the cell's mask (the largest bright component of the black C-NMC canvas, holes filled):

- ``size_``: area, perimeter, major and minor axis (px);
- ``shape_``: solidity, eccentricity, extent, circularity, perimeter roughness;
- ``colour_``: mean, s.d., 5/25/50/75/95th percentiles and relative IQR inside the cell (4 px from its edge) of the
  haematoxylin and eosin optical densities (colour deconvolution, Ruifrok & Johnston 2001, scikit-image ``rgb2hed``),
  CIE L*a*b* and RGB, and the mean haematoxylin and grey level in four rings from the centre to the edge;
- ``texture_``: on the grey level stretched to the cell's own 1st-99th percentiles (so the stain's strength drops
  out), grey-level co-occurrence properties at 1, 2, 4 and 8 px (Haralick et al. 1973), uniform local binary pattern
  histograms (P 8, R 1 and P 16, R 3; Ojala et al. 2002) and band energies between Gaussian blurs of 1-8 px.

On each fold of BENCH it fits the classifiers of ``--head`` (boosted trees, logistic regression or a one-hidden-layer
perceptron) on the fold's training cells, keeps the one with the lowest log-loss on the fold's validation people,
chooses the threshold there for the best weighted F1, and pools the test cells as ``bench_linear_probe.py`` does,
printing the paired difference from BENCH's own predictions.
``--with-features`` adds a ``bench_linear_probe.py`` features file (frozen CNN features of the same cells) to the
measurements; ``--without`` drops groups by prefix (``size_`` to ask whether the rest knows more than cell size);
``--blend-with`` averages the ``--head`` model's p(ALL) with a ``bench_accuracy.py`` run's networks' (the same folds)
before the model and threshold are chosen on validation: an equal-weight ensemble of measurements and network.

    OMP_NUM_THREADS=1 python benchmarks/bench_morphometry.py results/frozen-320 --out results/morph-boosting --jobs 2

Writes into ``--out``: ``morphometry.npz`` (the measurements, reused by later runs into the same folder),
``predictions.csv`` (pairs with ``bench_accuracy_delta.py``) and ``results.json``.

Data: C-NMC 2019 (CC BY 3.0), SBI Lab, IIIT-Delhi and AIIMS New Delhi, via TCIA (doi:10.7937/tcia.2019.dc64i46r).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_accuracy import _plain, _write_predictions
from bench_accuracy_delta import paired_delta
from bench_linear_probe import _fold, _pool, _print, logistic_candidates, read_folds
from scipy import ndimage
from skimage.color import rgb2hed, rgb2lab
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import gaussian
from skimage.measure import regionprops
from skimage.morphology import disk
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from blastscope.data.images import read_rgb
from blastscope.data.split import Split
from blastscope.evaluation.evaluate import evaluate_run
from blastscope.models.measurements import EDGE_PX, MIN_INNER_PX, NAMES, PERCENTILES, CellMeasurements
from blastscope.segmentation.background import cell_on_black_mask

GLCM_DISTANCES = (1, 2, 4, 8)  # px at the stored scale
GLCM_LEVELS = 32
LBP_SETTINGS = ((8, 1), (16, 3))  # (points P, radius R in px)
BLUR_SIGMAS = (1, 2, 4, 8)  # px
BOOSTING_RATES = (0.03, 0.1)  # learning rates; each model is judged on the fold's validation every 25th tree
BOOSTING_TREES = 1500  # up to this many (session 21's grid, 100-600 trees at 0.03-0.05, chose 600 on 9 of 10 fits)
MLP_GRID = tuple((width, alpha) for width in (64, 256) for alpha in (0.3, 1.0, 3.0))  # (hidden units, L2 alpha)


def measure(path: str) -> dict[str, float]:
    """The named measurements of one cell image on a black canvas (px and optical densities; see the module doc).

    Raises
    ------
    ValueError
        When the image holds no bright component (no cell on the canvas).
    """
    rgb = np.asarray(read_rgb(path))
    mask = cell_on_black_mask(rgb)
    if not mask.any():
        raise ValueError(f"{path}: no cell on the black canvas")
    rows, cols = np.nonzero(mask)
    box = (slice(max(rows.min() - 12, 0), rows.max() + 13), slice(max(cols.min() - 12, 0), cols.max() + 13))
    rgb, mask = rgb[box], mask[box]
    inner = ndimage.binary_erosion(mask, disk(EDGE_PX))
    inner = inner if inner.sum() >= MIN_INNER_PX else mask
    region = regionprops(mask.astype(np.uint8))[0]
    found = {
        "size_area": float(region.area),
        "size_perimeter": region.perimeter,
        "size_axis_major": region.axis_major_length,
        "size_axis_minor": region.axis_minor_length,
        "shape_solidity": region.solidity,
        "shape_eccentricity": region.eccentricity,
        "shape_extent": region.extent,
        "shape_circularity": 4 * np.pi * region.area / max(region.perimeter, 1.0) ** 2,
        "shape_roughness": region.perimeter / max(region.perimeter_crofton, 1.0),
    }
    hed, lab, grey = rgb2hed(rgb), rgb2lab(rgb), rgb.astype(float).mean(axis=2)
    channels = {"H": hed[..., 0], "E": hed[..., 1], "L": lab[..., 0], "a": lab[..., 1], "b": lab[..., 2]}
    channels |= {name: rgb[..., i].astype(float) for i, name in enumerate("RGB")}
    for name, channel in channels.items():
        found |= _distribution(f"colour_{name}", channel[inner])
    depth = ndimage.distance_transform_edt(mask)
    for ring, (low, high) in enumerate(((0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))):
        band = (depth > low * depth.max()) & (depth <= high * depth.max())
        found[f"colour_ring{ring}_H"] = float(hed[..., 0][band].mean()) if band.any() else 0.0
        found[f"colour_ring{ring}_grey"] = float(grey[band].mean()) if band.any() else 0.0
    low, high = np.percentile(grey[inner], [1, 99])
    stretched = np.clip((grey - low) / max(high - low, 1e-6), 0, 1 - 1e-9)
    return found | _texture(stretched, inner)


def _distribution(prefix: str, values: np.ndarray) -> dict[str, float]:
    quantiles = np.percentile(values, PERCENTILES)
    found = {f"{prefix}_mean": float(values.mean()), f"{prefix}_sd": float(values.std())}
    found |= {f"{prefix}_p{q}": float(x) for q, x in zip(PERCENTILES, quantiles, strict=True)}
    return found | {f"{prefix}_iqr_relative": float((quantiles[3] - quantiles[1]) / (abs(quantiles[2]) + 1e-6))}


def _texture(stretched: np.ndarray, inner: np.ndarray) -> dict[str, float]:
    """Co-occurrence, local binary patterns and blur band energies of a grey image in [0, 1) inside ``inner``."""
    levels = (stretched * GLCM_LEVELS).astype(np.uint8) + 1  # 0 marks outside the cell; dropped below
    levels[~inner] = 0
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    counts = graycomatrix(levels, list(GLCM_DISTANCES), angles, levels=GLCM_LEVELS + 1, symmetric=True)[1:, 1:]
    counts = counts / np.maximum(counts.sum(axis=(0, 1), keepdims=True), 1)
    found = {}
    for prop in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation"):
        for distance, value in zip(GLCM_DISTANCES, graycoprops(counts, prop).mean(axis=1), strict=True):
            found[f"texture_glcm_{prop}_{distance}px"] = float(value)
    for points, radius in LBP_SETTINGS:
        codes = local_binary_pattern((stretched * 255).astype(np.uint8), points, radius, "uniform")[inner]
        shares = np.bincount(codes.astype(int), minlength=points + 2) / codes.size
        found |= {f"texture_lbp_p{points}r{radius}_{code}": float(s) for code, s in enumerate(shares)}
    previous = stretched
    for sigma in BLUR_SIGMAS:
        blurred = gaussian(stretched, sigma)
        found[f"texture_band_{sigma}px"] = float(np.abs(previous - blurred)[inner].mean())
        previous = blurred
    return found


def measure_all(paths: list[str], jobs: int) -> tuple[list[str], np.ndarray]:
    """Names and ``(n_cells, n_measurements)`` of every path, ``jobs`` processes at once."""
    tick = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        found = list(pool.map(measure, paths, chunksize=64))
    print(f"measured {len(paths)} cells in {time.perf_counter() - tick:.0f} s", flush=True)
    names = list(found[0])
    return names, np.array([[cell[name] for name in names] for cell in found])


def measure_in_network(paths: list[str], batch: int = 32) -> tuple[list[str], np.ndarray]:
    """Names and ``(n_cells, 67)`` of every path by :class:`~blastscope.models.measurements.CellMeasurements` at the
    stored size (all C-NMC cells are 450 x 450 px)."""
    tick, module, found = time.perf_counter(), CellMeasurements(), []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            images = np.stack([np.asarray(read_rgb(path)) for path in paths[start : start + batch]])
            found.append(module(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy())
    print(f"measured {len(paths)} cells in the network's module in {time.perf_counter() - tick:.0f} s", flush=True)
    return list(NAMES), np.concatenate(found).astype(np.float64)


def boosting_candidates(
    rates: tuple[float, ...] = BOOSTING_RATES, trees: int = BOOSTING_TREES
) -> list[HistGradientBoostingClassifier]:
    """Gradient-boosted trees (scikit-learn), balanced class weights, ``trees`` trees at each learning rate of
    ``rates`` (``bench_linear_probe`` reads each after every 25th tree for the validation to choose from)."""
    return [
        HistGradientBoostingClassifier(
            learning_rate=rate,
            max_iter=trees,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            class_weight="balanced",
            early_stopping=False,
            random_state=0,
        )
        for rate in rates
    ]


def mlp_candidates() -> list[Pipeline]:
    """One-hidden-layer perceptrons (scikit-learn, ReLU, Adam, 300 epochs) on standardised features, one per
    (width, L2 strength alpha) of ``MLP_GRID``: a head a network could carry, unlike trees."""
    return [
        make_pipeline(
            StandardScaler(),
            MLPClassifier(hidden_layer_sizes=(width,), alpha=alpha, max_iter=300, random_state=0),
        )
        for width, alpha in MLP_GRID
    ]


def network_probabilities(bench: Path, splits: list[Split], out: Path) -> list[dict[str, float]]:
    """Per fold, p(ALL) of ``bench``'s network on that fold's validation and test cells, at its stored temperature
    (``evaluate_run``, fp32, the path ``predict`` takes); cached in ``out``. Exits in one line if its folds differ."""
    cached = out / f"network-{bench.name}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    if [split.hash for split in read_folds(bench)] != [split.hash for split in splits]:
        sys.exit(f"{bench} was made on other folds than these: give one made with the same --data, --folds and seed")
    found = []
    for k in range(1, len(splits) + 1):
        run = bench / "runs" / f"fold-{k}"
        rows = [
            row
            for part in ("val", "test")
            for row in evaluate_run(run, split=part, bootstrap=0, store=False).predictions
        ]
        found.append({row["path"]: float(row["p_all"]) for row in rows})
        print(f"fold {k}: scored {len(rows):,} validation and test cells with {run}", flush=True)
    cached.write_text(json.dumps(found))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a finished bench_accuracy.py --out folder: its folds and baseline")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--head", choices=("boosting", "logistic", "mlp"), default="boosting")
    parser.add_argument("--without", nargs="+", default=[], metavar="PREFIX", help="drop measurements, e.g. size_")
    parser.add_argument("--with-features", type=Path, help="a bench_linear_probe.py features-*.npz of the same cells")
    parser.add_argument(
        "--blend-with",
        type=Path,
        metavar="BENCH",
        help="a bench_accuracy.py --out folder on the same folds: average the --head model's p(ALL) with its networks'",
    )
    parser.add_argument("--learning-rates", type=float, nargs="+", default=BOOSTING_RATES, help="boosting's")
    parser.add_argument(
        "--trees", type=int, default=BOOSTING_TREES, help="boosting's most trees (fit time grows with it)"
    )
    parser.add_argument(
        "--measured-by",
        choices=("scikit-image", "network"),
        default="scikit-image",
        help="network: blastscope.models.measurements, the 67 measurements a forward pass computes",
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes measuring cells")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    splits = read_folds(args.bench)
    args.out.mkdir(parents=True, exist_ok=True)
    stored = args.out / ("morphometry.npz" if args.measured_by == "scikit-image" else "morphometry-network.npz")
    if stored.is_file():
        saved = np.load(stored)
        paths, names, values = [str(p) for p in saved["paths"]], [str(n) for n in saved["names"]], saved["values"]
    else:
        paths = [str(cell.path) for part in splits[0].parts.values() for cell in part]
        names, values = (
            measure_all(paths, args.jobs) if args.measured_by == "scikit-image" else measure_in_network(paths)
        )
        np.savez(stored, paths=np.array(paths), names=np.array(names), values=values)
    keep = [i for i, name in enumerate(names) if not name.startswith(tuple(args.without))]
    features, used = values[:, keep], [names[i] for i in keep]
    if args.with_features:
        cnn = np.load(args.with_features)
        order = {str(path): i for i, path in enumerate(cnn["paths"])}
        if missing := [path for path in paths if path not in order]:
            parser.error(
                f"{args.with_features} lacks {len(missing)} of these cells (e.g. {missing[0]}): "
                f"make it with bench_linear_probe.py {args.bench}"
            )
        features = np.concatenate([features, cnn["features"][[order[path] for path in paths]]], axis=1)
    print(f"{features.shape[1]} features per cell ({len(used)} measurements)", flush=True)
    index = {path: i for i, path in enumerate(paths)}

    def candidates() -> list[Any]:
        if args.head == "boosting":
            return boosting_candidates(tuple(args.learning_rates), args.trees)
        return mlp_candidates() if args.head == "mlp" else logistic_candidates()

    blends = network_probabilities(args.blend_with, splits, args.out) if args.blend_with else [None] * len(splits)
    tick = time.perf_counter()
    folds = [
        _fold(k, split, features, index, candidates(), blend)
        for (k, split), blend in zip(enumerate(splits, start=1), blends, strict=True)
    ]
    fit_seconds = time.perf_counter() - tick
    pooled = _pool(folds, args.resamples)
    _write_predictions(folds, args.out / "predictions.csv")
    results = {
        "recipe": {
            "head": args.head,
            **({"learning_rates": args.learning_rates, "trees": args.trees} if args.head == "boosting" else {}),
            "measurements": used,
            "with_features": str(args.with_features) if args.with_features else None,
            "blended_with": str(args.blend_with) if args.blend_with else None,
        },
        "folds_of": str(args.bench),
        "per_fold": [{key: value for key, value in fold.items() if key != "rows"} for fold in folds],
        "pooled": pooled,
        "delta_against_folds_of": paired_delta(args.bench, args.out, "", args.resamples, 0),
        "fit_seconds_all_folds": round(fit_seconds, 1),
        "machine": {"cpu": platform.processor() or platform.machine()},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=_plain) + "\n")
    _print(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
