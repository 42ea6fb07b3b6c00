"""ONNX export of a trained run: self-describing model files, checked against PyTorch on the run's own test cells.

Every file carries what a consumer needs to feed it (every preprocessing step in the order applied, with its
parameters: ``--segment``, ``--crop-fraction``, resize, ``--colour-norm``, ``--augment denoise`` and ``stain_norm``
with the reference's numbers, ``--channels``, mean/std; segmentation, which no stand-alone rule states, says so), to
read its output (class names) and to decide (the run's operating point: positive class, threshold, temperature) as
ONNX ``metadata_props`` under ``blastscope.*`` keys, exactly the keys ``inference.runners.OnnxRunner`` reads back.
``export/export.json`` records the parity check, each variant's weighted F1 and label agreement with fp32 on the
validation and test splits, and the variant ``predict`` and ``serve`` use by default with the reason, chosen by the
rule of ``blastscope.export.choice`` on validation only.

Every score goes through the one inference path: ``predict_logits`` with an ``OnnxRunner``, ``probabilities`` at the
point's temperature, ``decide`` at its threshold, then ``metrics.weighted_f1``, as ``evaluate`` and ``predict`` do.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from blastscope import __version__
from blastscope.data.augment import AugmentConfig, augment_config
from blastscope.data.cache import DecodedCache
from blastscope.data.preprocessing import Preprocessing
from blastscope.data.stain import (
    DEFAULT_LAB,
    LIGHT,
    MACENKO_LOW_DENSITY,
    MIN_CELL_PIXELS,
    RIM,
    LabStatistics,
    MacenkoStains,
    StainNormalizer,
)
from blastscope.data.table import Cell
from blastscope.data.transforms import Transform
from blastscope.errors import BlastscopeError, DataError
from blastscope.export import choice
from blastscope.export.quantize import bf16_weights, quantize_int8
from blastscope.inference.decision import OperatingPoint, decide
from blastscope.inference.predict import (
    Item,
    batches,
    by_person,
    fit_colour,
    predict_logits,
    probabilities,
    readable,
    resized_pixels,
)
from blastscope.inference.runners import METADATA_PREFIX, ONNX_INPUT, ONNX_OUTPUT, OnnxRunner, Runner, TorchRunner
from blastscope.metrics import weighted_f1
from blastscope.models.base import CellClassifier
from blastscope.segmentation.background import CELL_LEVEL

EXPORT_DIR = "export"
RECORD_NAME = "export.json"
PARITY_TOLERANCE = 1e-4
"""Largest absolute logit difference between PyTorch and ONNX Runtime (fp32) that counts as a faithful export."""
CALIBRATION_CELLS = 64
"""Training cells the int8 activation ranges are calibrated on."""
SCORE_BATCH_SIZE = 32
SEGMENT_TEXT = {
    "auto": "an image not already on black (as C-NMC cells are) has its white cell cut out onto a black square by "
    "blastscope.segmentation (segment=auto)",
    "always": "every image has its white cell cut out onto a black square by blastscope.segmentation (segment=always)",
}
"""How the ``blastscope.input`` metadata describes each ``Preprocessing.segment`` mode other than ``never``."""
SEGMENT_CAVEAT = (
    "; this step has no stand-alone rule: run blastscope.segmentation.cell_for_model on the decoded image (an image "
    "it leaves unchanged needs nothing)"
)
"""Said after every segmentation step: an ONNX Runtime user cannot reproduce it from the metadata alone."""


def _numbers(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{value:.9g}" for value in values) + "]"


def _rows(matrix: np.ndarray) -> str:
    return "[" + ", ".join(_numbers(row) for row in matrix) + "]"


CELL_RULE = f"cell pixels are those whose brightest channel is >= {CELL_LEVEL} of 255"
"""Which pixels stain normalisation, colour normalisation and the stain channels treat as cell
(``blastscope.data.stain.cell_pixels``), stated so that it can be reproduced."""
LAB_RULE = "CIE L*a*b* values (skimage.color.rgb2lab of RGB / 255: D65, 2-degree observer)"
BACK_TO_UINT8 = "back to RGB (skimage.color.lab2rgb), x 255, rounded half to even and clipped to uint8"

COLOUR_NORM_TEXT = {
    "none": "",
    "subject": "each cell's colours are mapped by the L*a*b* mean and std pooled over all cells of its person onto "
    f"the C-NMC reference (blastscope.data.stain.SubjectColour, colour_norm=subject): {CELL_RULE}; pool the "
    f"{LAB_RULE} of the cell pixels of all of a person's cells into a per-channel mean m and (population) std s; "
    "map each cell pixel's L*a*b* x to (x - m) * std_ref / max(s, 1e-6) + mean_ref, with mean_ref = "
    f"{_numbers(DEFAULT_LAB.mean)} and std_ref = {_numbers(DEFAULT_LAB.std)}, {BACK_TO_UINT8}; other pixels stay "
    f"as they are, and a person with under {MIN_CELL_PIXELS} cell pixels in all is left as decoded: feed all of a "
    "person's cells together",
}
"""How the ``blastscope.input`` metadata describes each ``Preprocessing.colour_norm``, with the reference's numbers
so that ONNX Runtime users can reproduce it."""

DENOISE_TEXT = {
    "median": "3x3 median filter of each channel of the uint8 image, edges mirrored with the edge pixel repeated "
    "(scipy.ndimage.median_filter(x, size=(3, 3, 1)), mode 'reflect') (denoise=median)",
    "bilateral": "skimage.restoration.denoise_bilateral(x / 255, sigma_color=0.05, sigma_spatial=1.5, "
    "channel_axis=-1), x 255, rounded half to even and clipped to uint8 (denoise=bilateral)",
    "nl_means": "skimage.restoration.denoise_nl_means(x / 255, h=0.04, fast_mode=True, patch_size=5, "
    "patch_distance=6, channel_axis=-1), x 255, rounded half to even and clipped to uint8 (denoise=nl_means)",
}
"""How the ``blastscope.input`` metadata states each ``--augment denoise`` (``blastscope.data.transforms.denoise``);
tests/export check each statement against it."""

OD_RULE = f"-ln((v + 1) / {LIGHT:g}), v the uint8 value, in float64"
"""Optical density as ``blastscope.data.stain.optical_density`` computes it."""


def stain_target(augment: AugmentConfig) -> MacenkoStains | LabStatistics | None:
    """The reference ``--augment stain_norm`` maps every cell onto (the C-NMC default, or fitted on
    ``stain_reference``); None without stain normalisation.

    Raises ``BlastscopeError`` (or ``ImageError``) when the reference image cannot be read or fitted, as training's
    transform would."""
    if augment.stain_norm is None:
        return None
    return StainNormalizer.from_reference_file(augment.stain_norm, augment.stain_reference).target  # type: ignore[arg-type]


def stain_norm_text(augment: AugmentConfig, target: MacenkoStains | LabStatistics) -> str:
    """``--augment stain_norm`` as one step of the ``blastscope.input`` text: the rule and its reference numbers."""
    source = (
        "the C-NMC default reference"
        if augment.stain_reference is None
        else f"the reference fitted on {Path(augment.stain_reference).name}"
    )
    common = (
        f"each image on its own (blastscope.data.stain.StainNormalizer, stain_norm={augment.stain_norm}): {CELL_RULE}; "
        f"an image with under {MIN_CELL_PIXELS} cell pixels is left unchanged; only cell pixels change"
    )
    if isinstance(target, LabStatistics):
        return (
            f"Reinhard stain normalisation of {common}: take the {LAB_RULE} of the image's cell pixels, their "
            "per-channel mean m and (population) std s; map each cell pixel's L*a*b* x to "
            f"(x - m) * std_ref / max(s, 1e-6) + mean_ref, with mean_ref = {_numbers(target.mean)} and std_ref = "
            f"{_numbers(target.std)} ({source}), {BACK_TO_UINT8}"
        )
    return (
        f"Macenko stain normalisation of {common}: with OD = {OD_RULE} per channel, fit the image's stains: its "
        f"interior is the cell pixels eroded {RIM} times by the 3x3 cross (scipy.ndimage.binary_erosion, the border "
        "counting as background); D = the interior's OD rows whose three values are all > "
        f"{MACENKO_LOW_DENSITY:g} (under "
        f"{MIN_CELL_PIXELS} rows: image unchanged); P = the eigenvectors of D^T D for its two largest eigenvalues, "
        "smaller first (numpy.linalg.eigh's columns 1 and 2), each column multiplied by the sign of its sum; angles = "
        "atan2(second, first column of D P); lo, hi = their 1st and 99th percentiles (numpy.percentile, linear); "
        "V = P [[cos lo, cos hi], [sin lo, sin hi]] with unit columns, the two swapped when V[0,0] < V[0,1]; "
        "c = the 99th percentile of each row of pinv(V) D^T. Then each cell pixel's concentrations "
        "C = max(pinv(V) OD^T, 0), multiplied per stain by c_ref / max(c, 1e-6), give "
        f"RGB = {LIGHT:g} exp(-V_ref C) - 1, rounded half to even and clipped to uint8, with V_ref (3x2, rows R, G, B) "
        f"= {_rows(target.vectors)} and c_ref = {_numbers(target.max_concentrations)} ({source})"
    )


def channels_text(pre: Preprocessing) -> str:
    """The step from uint8 RGB to the [0, 1] scale ``mean`` and ``std`` apply to, for ``pre.channels``."""
    if pre.channels == "rgb":
        return "to float32 RGB / 255"
    if pre.channels == "od":
        values = (
            f"each channel's optical density {OD_RULE}, divided by ln({LIGHT:g}) (x {_numbers(pre.channel_scale)}"
            " per channel; channels=od)"
        )
    else:
        values = (
            "the haematoxylin, eosin and DAB amounts skimage.color.rgb2hed(RGB / 255), multiplied by "
            f"{_numbers(pre.channel_scale)} per channel (channels=hed)"
        )
    return (
        f"{values}; then all three set to 0 at every pixel whose brightest channel (max of R, G, B of the uint8 image "
        f"from the step before) is < {CELL_LEVEL} of 255 (the black canvas carries no stain); as float32"
    )


CHANNEL_NAMES = {"rgb": "RGB", "od": "optical densities of R, G, B", "hed": "haematoxylin, eosin, DAB amounts"}


def input_steps(pre: Preprocessing, augment: AugmentConfig) -> list[str]:
    """Every step from an image file to the model's input, in the order blastscope applies them, each stated so that
    it can be reproduced (or said plainly when it cannot): the ``blastscope.input`` metadata.

    Raises ``BlastscopeError`` when the run's stain reference image cannot be read or fitted.
    """
    steps = ["decode to upright 8-bit RGB (EXIF orientation applied, transparency composited on black)"]
    if pre.segment != "never":
        diameter = (
            f", at a red-cell diameter of {pre.red_cell_diameter:g} px"
            if pre.red_cell_diameter is not None
            else ", the red-cell diameter measured on each image"
        )
        steps.append(SEGMENT_TEXT[pre.segment] + diameter + SEGMENT_CAVEAT)
    if pre.crop_fraction < 1.0:
        steps.append(
            f"keep the centred square of side s = max(1, round({pre.crop_fraction:.9g} x min(W, H))) px (round half to "
            "even), left = floor((W - s) / 2), top = floor((H - s) / 2): PIL Image.crop((left, top, left + s, "
            f"top + s)) (crop_fraction={pre.crop_fraction:.9g})"
        )
    steps.append(
        f"resize to {pre.input_size}x{pre.input_size} with Pillow's {pre.interpolation} filter (PIL Image.resize on "
        "the uint8 RGB image; an image already that size is left as is)"
    )
    if pre.colour_norm != "none":
        steps.append(COLOUR_NORM_TEXT[pre.colour_norm])
    if augment.denoise is not None:
        steps.append(DENOISE_TEXT[augment.denoise])
    target = stain_target(augment)
    if target is not None:
        steps.append(stain_norm_text(augment, target))
    steps.append(channels_text(pre))
    steps.append(f"(x - mean) / std per channel, mean = {_numbers(pre.mean)}, std = {_numbers(pre.std)}")
    return steps


def input_text(pre: Preprocessing, augment: AugmentConfig) -> str:
    """The ``blastscope.input`` metadata: the input tensor, then :func:`input_steps` numbered."""
    steps = "; ".join(f"({number}) {step}" for number, step in enumerate(input_steps(pre, augment), start=1))
    return (
        f"float32 NCHW, {pre.input_size}x{pre.input_size}, channels {CHANNEL_NAMES[pre.channels]}; from each image, in "
        f"this order: {steps}"
    )


def preprocessing_record(pre: Preprocessing, augment: AugmentConfig) -> dict[str, Any]:
    """The ``blastscope.preprocessing`` metadata: ``pre.to_dict()`` plus the run's stain normalisation (with its
    reference numbers), denoising, the colour-norm reference, and the names of the steps in order.

    Raises ``BlastscopeError`` when the run's stain reference image cannot be read or fitted.
    """
    target = stain_target(augment)
    reference: dict[str, Any] | None = None
    if isinstance(target, LabStatistics):
        reference = {"lab_mean": list(map(float, target.mean)), "lab_std": list(map(float, target.std))}
    elif target is not None:
        reference = {
            "vectors": [list(map(float, row)) for row in target.vectors],
            "max_concentrations": list(map(float, target.max_concentrations)),
        }
    if reference is not None:
        reference["fitted_on"] = None if augment.stain_reference is None else Path(augment.stain_reference).name
    steps = [
        "decode",
        *(["segment"] if pre.segment != "never" else []),
        *(["crop"] if pre.crop_fraction < 1.0 else []),
        "resize",
        *(["colour_norm"] if pre.colour_norm != "none" else []),
        *(["denoise"] if augment.denoise is not None else []),
        *(["stain_norm"] if augment.stain_norm is not None else []),
        "channels",
        "normalise",
    ]
    return {
        **pre.to_dict(),
        "cell_level": CELL_LEVEL,
        "colour_norm_reference": (
            {"lab_mean": list(map(float, DEFAULT_LAB.mean)), "lab_std": list(map(float, DEFAULT_LAB.std))}
            if pre.colour_norm == "subject"
            else None
        ),
        "denoise": augment.denoise,
        "stain_norm": augment.stain_norm,
        "stain_reference": reference,
        "steps": steps,
    }


VARIANT_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "bf16": "model_bf16.onnx"}
VARIANT_NOTES = {
    "fp32": "float32 weights and compute",
    "int8": "static QDQ quantisation: int8 per-channel weights, uint8 activations calibrated on training cells",
    "bf16": "bfloat16-stored weights cast to float32 in the graph; ONNX Runtime CPU computes in fp32",
}


def decision_text(point: OperatingPoint) -> str:
    """How to turn the file's logits into a label at ``point``, in words (the ``blastscope.output`` metadata)."""
    scaling = f"divide by the temperature {point.temperature:.6g}, " if point.temperature != 1.0 else ""
    if point.binary:
        others = [label for label in point.classes if label != point.positive_class]
        rule = f"{point.positive_class} when p({point.positive_class}) >= {point.threshold:.6g}, else {others[0]}"
    else:
        rule = "the most probable class"
    return (
        f"logits (N, C) in blastscope.classes order; to decide as blastscope does: {scaling}softmax, then {rule} "
        f"(blastscope.operating_point: {point.origin()})"
    )


def model_metadata(
    pre: Preprocessing, point: OperatingPoint, model_name: str, variant: str, augment: AugmentConfig | None = None
) -> dict[str, str]:
    """The ``metadata_props`` of an exported file: how to preprocess its input, name its output and decide.

    Parameters
    ----------
    pre : Preprocessing
        The run's input size, normalisation, interpolation, segmentation, crop, channels and colour normalisation.
    point : OperatingPoint
        The run's operating point at export time; its classes name the output columns.
    model_name, variant : str
        The architecture (``config.yaml``'s ``model``) and ``fp32``, ``int8`` or ``bf16``.
    augment : AugmentConfig, optional
        The run's ``augmentation``, whose stain normalisation and denoising apply at every door; None: neither.

    Returns
    -------
    dict of str to str
        Keys under ``blastscope.``; ``positive_class`` only for binary points.

    Raises
    ------
    BlastscopeError
        When the run's stain reference image cannot be read or fitted.
    """
    augment = augment or AugmentConfig.off()
    key = METADATA_PREFIX
    metadata = {
        f"{key}classes": json.dumps(list(point.classes)),
        f"{key}preprocessing": json.dumps(preprocessing_record(pre, augment)),
        f"{key}operating_point": json.dumps(point.to_dict()),
        f"{key}input": input_text(pre, augment),
        f"{key}output": decision_text(point),
        f"{key}model": model_name,
        f"{key}variant": variant,
        f"{key}version": __version__,
    }
    if point.positive_class is not None:
        metadata[f"{key}positive_class"] = point.positive_class
    return metadata


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file at ``path`` with ``metadata``, in place."""
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))


def export_onnx(model: CellClassifier, pre: Preprocessing, path: Path) -> Path:
    """Trace ``model`` to ONNX with torch.export (dynamo): batch axis dynamic, weights inline.

    Parameters
    ----------
    model : CellClassifier
        Maps a normalised (N, 3, S, S) float32 batch to logits (N, C); S = ``pre.input_size``.
    pre : Preprocessing
    path : Path
        The file to write; input ``ONNX_INPUT`` (N, 3, S, S), output ``ONNX_OUTPUT`` (N, C).

    Returns
    -------
    Path
        ``path``, without metadata yet (see :func:`set_metadata`).
    """
    example = torch.zeros(2, 3, pre.input_size, pre.input_size)
    batch = torch.export.Dim("batch", min=1)
    # The exporter prints progress lines and warns about internals; neither helps the user of `blastscope export`.
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: batch},),
            optimize=True,
            external_data=False,
            verbose=False,
        )
    return path


def max_logit_difference(reference: Runner, candidate: Runner, images: Iterable[torch.Tensor]) -> float:
    """The largest absolute logit difference between two runners over the given batches.

    Parameters
    ----------
    reference, candidate : Runner
        E.g. ``TorchRunner(trained.model)`` and ``OnnxRunner(path)``.
    images : iterable of Tensor
        Normalised float32 (B, 3, S, S) batches (``inference.predict.batches``).

    Returns
    -------
    float
        max |reference(x) - candidate(x)| over every logit, in logit units.

    Raises
    ------
    ValueError
        If ``images`` yields no batch.
    """
    differences = [float((reference(batch) - candidate(batch)).abs().max()) for batch in images]
    if not differences:
        raise ValueError("no batches to compare the runners on")
    return max(differences)


def decided_labels(
    runner: Runner,
    cells: Sequence[Cell],
    pre: Preprocessing,
    transform: Transform,
    point: OperatingPoint,
    cache: DecodedCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and decided labels of ``runner`` on ``cells`` at ``point``: the path predict and serve take.

    Parameters
    ----------
    runner : Runner
    cells : sequence of Cell
        Dataset cells, decoded through ``cache`` as training saw them.
    pre : Preprocessing
    transform : Transform
        The run's eval transform (``TrainedRun.transform``).
    point : OperatingPoint
        Decides the labels; its temperature scales the logits.
    cache : DecodedCache, optional

    Returns
    -------
    probabilities : array of float32, shape (N, C)
        Softmax of logits / ``point.temperature`` (no test-time augmentation, as ``predict`` by default).
    labels : array of int64, shape (N,)
        Indices into ``point.classes`` from ``decide``.

    Raises
    ------
    ValueError
        For no cells. ``ImageError`` for an unreadable cell image.
    """
    logits = predict_logits(runner, cells, pre, transform, batch_size=SCORE_BATCH_SIZE, cache=cache)
    probs = probabilities(logits, point.temperature)
    return probs, decide(probs, point)


def export_run(
    trained: Any, *, int8: bool = False, bf16: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Export a loaded run to RUN_DIR/export: fp32, optional int8/bf16, parity check, scores, export.json.

    Parameters
    ----------
    trained : TrainedRun
        From ``blastscope.runs.load_run``; its operating point is written into every file and decides every score.
    int8, bf16 : bool
        Also build the int8 (static QDQ, calibrated on training cells) and bf16-weight variants.
    log : callable
        Receives the parity line.

    Returns
    -------
    dict
        What export.json holds: parity, the operating point, the default rule, per-variant ``{val,test}_weighted_f1``,
        ``{val,test}_f1_minus_fp32``, ``{val,test}_agreement`` (share of labels equal to fp32's), the rule's verdict,
        and ``default`` with ``default_reason``.

    Raises
    ------
    DataError
        If the run's split has neither test nor training cells (the parity check runs on test cells, or on training
        cells for a run without held-out cells, such as an ensemble of cross-validation folds), or ``int8`` without
        training cells to calibrate on.
    BlastscopeError
        If the ONNX logits differ from PyTorch's by more than ``PARITY_TOLERANCE`` (nothing is left behind then).
    """
    test_cells = _usable(trained, "test", log)
    calibration = _usable(trained, "train", log, CALIBRATION_CELLS)
    if not test_cells and not calibration:
        raise DataError(f"{trained.run_dir}: the run's split has no test or training cells to check the export against")
    if int8 and not calibration:
        raise DataError(f"{trained.run_dir}: the run's split has no training cells to calibrate int8 on")
    point: OperatingPoint = trained.operating_point
    if point.classes != tuple(trained.classes):
        raise BlastscopeError(
            f"{trained.run_dir}: the operating point is for classes {', '.join(point.classes)}, the run has "
            f"{', '.join(trained.classes)}; choose it again with `blastscope evaluate`"
        )
    out = Path(trained.run_dir) / EXPORT_DIR
    out.mkdir(exist_ok=True)
    for stale in (*out.glob("model*.onnx"), out / RECORD_NAME):
        stale.unlink(missing_ok=True)  # export.json goes with the models: it must never point at deleted files
    try:
        record = _build(trained, out, test_cells, calibration, int8=int8, bf16=bf16, log=log)
    except BaseException:
        for built in out.glob("model*.onnx"):
            built.unlink(missing_ok=True)  # nor may a half-built or unfaithful model be left for `predict` to find
        raise
    (out / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")  # last: it exists only for a whole export
    return record


def _build(
    trained: Any,
    out: Path,
    test_cells: list[Cell],
    calibration: list[Cell],
    *,
    int8: bool,
    bf16: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every variant's file in ``out``, checked and scored; the record that export.json will hold."""
    pre, transform, point = trained.preprocessing, trained.transform, trained.operating_point
    model_name = trained.model_name
    augment = augment_config(trained.config.get("augmentation") or {})
    cache = DecodedCache()
    built = {"fp32": export_onnx(trained.model, pre, out / VARIANT_FILES["fp32"])}
    set_metadata(built["fp32"], model_metadata(pre, point, model_name, "fp32", augment))
    # every readable test cell: one more PyTorch and ONNX pass over the split, a few seconds for a few hundred cells;
    # without test cells, the training cells int8 calibrates on (faithfulness needs inputs, not held-out ones)
    parity_part, parity_cells = ("test", test_cells) if test_cells else ("train", calibration)
    in_split = len(trained.split.parts.get(parity_part, []))
    parity_inputs = _as_inferred(trained, parity_cells, cache)
    difference = max_logit_difference(
        TorchRunner(trained.model), OnnxRunner(built["fp32"]), batches(parity_inputs, pre, transform, cache=cache)
    )
    if not test_cells:
        checked = f"{len(parity_cells)} of the run's {in_split} training cells (it has no test cells)"
    elif len(test_cells) == in_split:
        checked = f"all {in_split} of the run's test cells"
    else:
        checked = f"the {len(test_cells)} readable ones of the run's {in_split} test cells"
    log(f"parity: max |logit(PyTorch) - logit(ONNX)| = {difference:.2e} on {checked}")
    if not difference < PARITY_TOLERANCE:
        raise BlastscopeError(
            f"{built['fp32']}: ONNX logits differ from PyTorch by {difference:.2e} (> {PARITY_TOLERANCE:g}); "
            "the export is not faithful, keep using --backend torch"
        )
    if int8:
        inputs = _as_inferred(trained, calibration, cache)
        arrays = (batch.numpy() for batch in batches(inputs, pre, transform, batch_size=16, cache=cache))
        built["int8"] = quantize_int8(
            built["fp32"], out / VARIANT_FILES["int8"], ONNX_INPUT, arrays, trained.model.float_modules
        )
    if bf16:
        built["bf16"] = bf16_weights(built["fp32"], out / VARIANT_FILES["bf16"], trained.model.float_modules)
    for variant, path in built.items():
        if variant != "fp32":
            set_metadata(path, model_metadata(pre, point, model_name, variant, augment))

    val_cells = _usable(trained, "val", log)
    splits = {name: cells for name, cells in (("val", val_cells), ("test", test_cells)) if cells}
    runners = {variant: OnnxRunner(path) for variant, path in built.items()}
    scores = {name: _score_split(runners, cells, trained, cache) for name, cells in splits.items()}
    judgements = {
        variant: choice.judge(
            variant,
            len(val_cells),
            scores["val"][variant]["agreement"] if val_cells else None,
            scores["val"][variant]["f1_minus_fp32"] if val_cells else None,
        )
        for variant in built
        if variant != choice.REFERENCE
    }
    default, reason = choice.choose_default(list(built), judgements)
    return {
        "model": model_name,
        "display_name": trained.display_name,
        "classes": list(trained.classes),
        "preprocessing": preprocessing_record(pre, augment),
        "operating_point": point.to_dict(),
        "parity": {
            "cells": len(parity_cells),
            "split": parity_part,
            "split_cells": in_split,
            "max_abs_logit_difference": difference,
            "tolerance": PARITY_TOLERANCE,
        },
        "val_cells": len(val_cells),
        "test_cells": len(test_cells),
        "calibration_cells": len(calibration) if int8 else 0,
        "default_rule": choice.default_rule(),
        "variants": {
            variant: _variant_record(variant, path, scores, judgements.get(variant)) for variant, path in built.items()
        },
        "default": default,
        "default_reason": reason,
    }


def _as_inferred(trained: Any, cells: list[Cell], cache: DecodedCache) -> Sequence[Item]:
    """``cells`` as inference feeds them to the network: for a run that normalises colours per person, each
    normalised by the statistics of all its subject's readable cells in the run's split (:func:`by_person`), so the
    parity check and the int8 ranges see the colours the model sees; the cells themselves for other runs."""
    pre = trained.preprocessing
    if pre.colour_norm != "subject":
        return cells
    subjects = {cell.subject for cell in cells}
    pool = [cell for part in trained.split.parts.values() for cell in part if cell.subject in subjects]
    kept = readable(pool, pre, cache).items
    colour = fit_colour((cell.subject, resized_pixels(cell, pre, cache).pixels) for cell in kept)  # type: ignore[union-attr]
    return by_person(cells, pre, cache, colour=colour)


def _usable(trained: Any, part: str, log: Callable[[str], None], limit: int | None = None) -> list[Cell]:
    """The first ``limit`` (default all) cells of the run's ``part`` that can be read and, when the run segments,
    whose cell is found, as training kept them; the others are counted in one logged line."""
    cells = list(trained.split.parts.get(part, []))
    found = readable(cells[:limit] if limit is not None else cells, trained.preprocessing, DecodedCache())
    if found.skipped:
        cell, reason = found.skipped[0]
        log(
            f"skipped {len(found.skipped)} {part} cells that cannot be read or whose cell is not found, e.g. "
            f"{getattr(cell, 'path', cell)}: {reason}"
        )
    return list(found.items)  # type: ignore[arg-type]


def _score_split(
    runners: dict[str, OnnxRunner], cells: list[Cell], trained: Any, cache: DecodedCache
) -> dict[str, dict[str, float]]:
    """Each variant's weighted F1 on ``cells``, its difference from fp32's, and the share of labels equal to fp32's."""
    point = trained.operating_point
    y_true = np.array([trained.classes.index(cell.label) for cell in cells], dtype=np.int64)
    decided = {
        variant: decided_labels(runner, cells, trained.preprocessing, trained.transform, point, cache)
        for variant, runner in runners.items()
    }
    f1 = {
        variant: weighted_f1(y_true, probs, labels, point.positive_index)
        for variant, (probs, labels) in decided.items()
    }
    reference = decided[choice.REFERENCE][1]
    return {
        variant: {
            "weighted_f1": f1[variant],
            "f1_minus_fp32": f1[variant] - f1[choice.REFERENCE],
            "agreement": float(np.mean(labels == reference)),
        }
        for variant, (_, labels) in decided.items()
    }


def _variant_record(
    variant: str, path: Path, scores: dict[str, dict[str, dict[str, float]]], judgement: choice.Judgement | None
) -> dict[str, Any]:
    record: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
    for split, by_variant in scores.items():
        record[f"{split}_weighted_f1"] = by_variant[variant]["weighted_f1"]
        record[f"{split}_f1_minus_fp32"] = by_variant[variant]["f1_minus_fp32"]
        record[f"{split}_agreement"] = by_variant[variant]["agreement"]
    if judgement is not None:  # fp32 is the reference, not judged
        record["meets_rule"] = judgement.meets_rule
        record["rule_failures"] = list(judgement.failures)
    record["notes"] = VARIANT_NOTES[variant]
    return record


def onnx_model_path(run_dir: Path, variant: str | None = None) -> Path | None:
    """The exported file to predict with: ``variant``, else export.json's default.

    Parameters
    ----------
    run_dir : Path
        A training run directory.
    variant : str, optional
        ``fp32``, ``int8`` or ``bf16``; ``None`` for export.json's default.

    Returns
    -------
    Path or None
        ``None`` when nothing is exported (and no variant other than fp32 was asked for).

    Raises
    ------
    BlastscopeError
        If export.json is unreadable or lacks the variant, or a variant other than fp32 is asked for without it.
    """
    out = Path(run_dir) / EXPORT_DIR
    record_path = out / RECORD_NAME
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            chosen = variant or record["default"]
            variants = record["variants"]
            if chosen not in variants:
                raise BlastscopeError(
                    f"{record_path}: no {chosen!r} variant (exported: {', '.join(variants)}); "
                    f"run `blastscope export {run_dir} --format onnx` with the matching option"
                )
            return out / variants[chosen]["file"]
        except (OSError, KeyError, TypeError, ValueError) as error:  # JSONDecodeError and UnicodeError included
            raise BlastscopeError(
                f"{record_path}: unreadable or corrupt ({type(error).__name__}: {error}); "
                f"re-run `blastscope export {run_dir} --format onnx`"
            ) from None
    if variant not in (None, "fp32"):
        raise BlastscopeError(
            f"{out}: no export.json listing variants; run `blastscope export {run_dir} --format onnx`"
        )
    fp32 = out / VARIANT_FILES["fp32"]
    return fp32 if fp32.is_file() else None
