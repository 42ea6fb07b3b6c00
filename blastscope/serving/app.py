"""The web service: a JSON prediction API, a drag-and-drop page for people, and OpenAPI docs at /docs.

Uploads are untrusted: each file's size, the number of files and each image's pixel count are limited, and content
is identified by decoding it (never by its name). /predict answers per file: one bad file among good ones (an
AppleDouble ``._x.png`` beside ``x.png``) gets its own entry ``{"file", "error", "status"}`` while the others are
classified, and the request succeeds (200) when at least one file was. When none was, the status is the files' own
(415, 413, 422 or 400; 400 when they differ; 503 when one found no room to decode) with every file's entry. When the
run segments (``Preprocessing.segment``), each image's cell is cut out of its background before it is shrunk, and its
entry says so (``segmented``); an image whose cell cannot be found is answered 422 with the reason, and one in which
segmentation finds several whole white cells (a smear photograph sent as one cell) is classified by the one nearest
its centre, its entry's ``white_cells`` saying how many and its ``note`` that /scan classifies every one. An entry is
``referred`` when its p(positive) lies in the run's refer band (``Prediction.referred``). A rejection
of the request as a whole (an oversized body, too many files, a malformed request) is a 4xx JSON
``{"detail": ..., "file": null}``. The server keeps serving. /scan takes whole smear photographs the same way and
answers each with its white cells, verdict and overlay (:mod:`blastscope.workflows.scan`); a photograph it cannot
scan (a grey one, or one cell already on black) gets its own 422 entry with the reason.

A run trained with ``--colour-norm subject`` normalises each cell's colours by its person's: a /predict request's
images are grouped as ``predict --person-by auto`` groups files (by the subject in their C-NMC names when every name
has one, else the request is one person's; a request where only some names have one is refused, 422), so serve and
``predict`` give the same numbers for the same files; the answer says how in ``people``, and carries a ``warning``
when a person has fewer than ``FEW_CELLS`` images in it. Each /scan photograph's cells are one person's. /health says
how the run groups colours (``colour_norm``).

Under load (see :class:`~blastscope.serving.limits.Capacity`): decoding memory across all requests is bounded by a
budget (:mod:`blastscope.serving.memory`); a file that finds no room in it within ``decode_wait_s`` is answered 503,
and so is the request, with ``Retry-After``, when no file of it was classified. Predictions run on a bounded thread
pool of their own, while /health runs on the event loop and touches no lock, so it answers at once whatever the load.
Slow or idle connections are closed by the server's protocol (:mod:`blastscope.serving.connections`).
"""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image

from blastscope import __version__
from blastscope.api.classifier import Classifier
from blastscope.data.cache import ModelInput, model_input
from blastscope.data.images import EMPTY_FILE_REASON, decode_image_bytes
from blastscope.data.people import ONE_PERSON, People, group_people
from blastscope.data.stain import SubjectColour
from blastscope.errors import BlastscopeError, ImageError, ImageTooLargeError
from blastscope.inference.predict import FEW_CELLS, several_cells, several_cells_line
from blastscope.metrics import class_display_name
from blastscope.segmentation.modes import CellNotFoundError
from blastscope.serving.limits import Capacity, Limits
from blastscope.serving.memory import DecodingBudget, DecodingBusy, decoding_cost, scan_cost, segmenting_cost

STATIC_DIR = Path(__file__).with_name("static")

_FILE_ERRORS = "every file's entry is then {file, error, status}"
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "At least one file classified; a file that is not a usable image has an error entry"},
    400: {"description": f"No file classified, for different reasons or because all were empty; {_FILE_ERRORS}"},
    413: {"description": f"Too many files or body too large; or no file classified, all over a limit; {_FILE_ERRORS}"},
    415: {"description": f"No file classified: none is a BMP, PNG, JPEG, TIFF or WebP image; {_FILE_ERRORS}"},
    422: {"description": f"No file classified: no cell was found in any of the images (segmentation); {_FILE_ERRORS}"},
    503: {
        "description": "No file classified and at least one found no room in the server's decoding memory in time: "
        f"retry after the `Retry-After` seconds; {_FILE_ERRORS}",
    },
}


SCAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PREDICT_RESPONSES,
    200: {"description": "At least one photograph scanned; a file that is not a usable image has an error entry"},
    422: {
        "description": "No photograph scanned: none could be (a grey photograph or a cell already on black, say); "
        + _FILE_ERRORS
    },
}


class UploadRejected(Exception):
    """An upload the service refuses, with the HTTP status that says why.

    ``reason`` is the why alone; ``detail`` names the file in front of it when one file is at fault.
    """

    def __init__(self, status: int, reason: str, file: str | None = None) -> None:
        self.status, self.reason, self.file = status, reason, file
        self.detail = f"{file}: {reason}" if file is not None else reason
        super().__init__(self.detail)

    def entry(self) -> dict[str, Any]:
        """This file's entry among a request's results."""
        return {"file": self.file, "error": self.reason, "status": self.status}


def only_query_parameters(*names: str) -> Callable[[Request], None]:
    """A dependency refusing (422) query parameters its endpoint does not take, which FastAPI would drop unsaid: a
    client sending ``?threshold=0.1`` would get answers decided at the server's own threshold."""

    def check(request: Request) -> None:
        if unknown := sorted(set(request.query_params) - set(names)):
            takes = f"takes only {', '.join(names)}" if names else "takes none"
            raise UploadRejected(
                422,
                f"unknown query parameter {', '.join(unknown)}: {request.url.path} {takes}; the threshold and every "
                "other setting are the server's (blastscope serve --threshold P ...)",
            )

    return check


class BodyTooLarge(HTTPException):
    """The request body passed ``Limits.max_request_bytes`` while it was being read.

    An HTTPException so that FastAPI passes it on instead of turning it into a 400 "error parsing the body".
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class RequestSizeLimit:
    """ASGI middleware refusing request bodies over ``max_bytes``, whether declared by Content-Length or chunked."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            detail = f"request of {int(declared):,} bytes is over the limit of {self.max_bytes:,}"
            await JSONResponse({"detail": detail, "file": None}, status_code=413)(scope, receive, send)
            return
        received, started = 0, False

        async def counting_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as error:
            if started:
                raise
            await JSONResponse({"detail": error.detail, "file": None}, status_code=413)(scope, receive, send)


def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The RGB image in ``data``, judged by its content (BMP, PNG, JPEG, TIFF or WebP only, as for files on disk); the
    pixel count is checked from the header before decoding. Whatever goes wrong is a 4xx, never a 500."""
    if not data:
        raise UploadRejected(400, EMPTY_FILE_REASON, name)
    try:
        return decode_image_bytes(data, name, max_pixels)
    except ImageTooLargeError as error:  # over the pixel limit, decompression bombs included
        raise UploadRejected(413, error.reason, name) from None
    except ImageError as error:  # the reason `blastscope predict` prints for the same file
        raise UploadRejected(415, error.reason, name) from None
    except Exception as error:  # an undecodable upload must never become a 500
        raise UploadRejected(415, f"cannot be decoded ({type(error).__name__}: {error})", name) from None


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(
    classifier: Classifier,
    limits: Limits | None = None,
    capacity: Capacity | None = None,
    *,
    scan_red_cell_diameter: float | None = None,
) -> FastAPI:
    """The FastAPI application serving ``classifier`` under ``limits`` and ``capacity`` (defaults: ``Limits()``,
    ``Capacity()``). ``app.state.decoding_budget`` is the :class:`DecodingBudget` its requests share.

    ``scan_red_cell_diameter`` (photograph px; ``serve --red-cell-diameter``) is the scale /scan cuts cells out at, as
    ``blastscope scan --red-cell-diameter`` is the command's; None: 1/6.4 of each photograph's longer side, as there.
    The run's own diameter is not used for photographs, as ``scan`` does not use it either."""
    limits, capacity = limits or Limits(), capacity or Capacity()
    budget = DecodingBudget(capacity.decoding_bytes(limits))
    predict_threads = anyio.CapacityLimiter(capacity.predict_threads)
    app = FastAPIOffline(  # serves the /docs assets itself: the service runs offline
        title="blastscope",
        version=__version__,
        description=(
            "Classify single-cell microscopy images as leukemic blast (ALL) or normal cell (HEM), with Grad-CAM "
            "explanations, or scan whole smear photographs for every white cell (POST /scan). Research use only, "
            "not a diagnostic device." + (f" Trained on {classifier.attribution}." if classifier.attribution else "")
        ),
    )
    app.state.decoding_budget = budget
    classes = [{"name": label, "display": class_display_name(label)} for label in classifier.classes]
    point = classifier.operating_point
    served = {  # computed once: /health reads no shared state but the budget's counter
        "status": "ok",
        "version": __version__,
        "model": classifier.name,
        "backend": classifier.backend,
        "classes": classes,
        "limits": asdict(limits),
        "capacity": {**asdict(capacity), "max_decoding_mb": round(capacity.decoding_mb(limits), 1)},
        "attribution": classifier.attribution or None,
        "warnings": list(classifier.warnings),
        "segment": classifier.preprocessing.segment,
        "colour_norm": {
            "mode": classifier.preprocessing.colour_norm,
            "description": (
                "colours normalised per person: a /predict request's cells by the subject in their C-NMC names "
                "(UID_<subject>_...) when every name has one, else the whole request as one person's; each /scan "
                f"photograph's cells as its own person's. Upload up to {limits.max_files} of a person's cells per "
                "request; for more, use `blastscope predict` on the person's folder"
                if classifier.per_person
                else "colours as decoded"
            ),
        },
        "operating_point": {
            **point.to_dict(),
            "description": point.describe(),
            "referral": classifier.describe_referral(),
        },
    }

    @app.exception_handler(UploadRejected)
    async def rejected(_: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": error.detail, "file": error.file}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg', 'invalid')}"
            for problem in error.errors()
        )
        return JSONResponse({"detail": f"invalid request: {problems}", "file": None}, status_code=422)

    @app.exception_handler(BodyTooLarge)
    async def too_large(_: Request, error: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": error.detail, "file": None}, status_code=413)

    app.add_middleware(RequestSizeLimit, max_bytes=limits.max_request_bytes)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and what is being served: model, backend, classes, operating point (with its ``refer_band`` and
        the ``referral`` rule in words), ``segment`` mode, upload limits and capacity.

        Runs on the event loop, never queued behind predictions; ``decoding_mb_reserved`` is the decoding memory
        reserved by requests in flight."""
        return {**served, "decoding_mb_reserved": round(budget.reserved / 2**20, 1)}

    @app.post("/predict", responses=PREDICT_RESPONSES, dependencies=[Depends(only_query_parameters("explain"))])
    async def predict(
        files: Annotated[list[UploadFile], File(description="One or more cell images (multipart field `files`)")],
        explain: Annotated[bool, Query(description="Add each image's Grad-CAM overlay as a base64 PNG")] = False,
    ) -> Any:
        """One entry per uploaded file, in upload order: the class and per-class probabilities of each image, with
        the threshold that decided it and where that threshold came from, and ``referred`` (its p(positive) lies in
        the run's refer band: "uncertain — refer"), ``white_cells`` (whole white cells segmentation found; more than
        one: only the one nearest the image's centre was classified, and ``note`` says so), or, for a file that is
        not a usable image,
        ``{"file", "error", "status"}``. 200 when at least one file was classified; otherwise the files' status
        (503 with ``Retry-After`` when a file found no room in the server's decoding memory in time). For a run that
        normalises colours per person, ``people`` says how the files were grouped into people (as ``predict
        --person-by auto``) and ``warning`` when a person has too few of them."""
        return await anyio.to_thread.run_sync(partial(classify, files, explain), limiter=predict_threads)

    def decode_within_budget(data: bytes, name: str, deadline: float) -> ModelInput:
        """The upload as the model takes it (its cell cut out when the run segments, at the model's input size),
        decoded and segmented under a reservation of the peak memory of both."""
        if not data:
            raise UploadRejected(400, EMPTY_FILE_REASON, name)
        pre = classifier.preprocessing
        cost = decoding_cost(data, limits.max_pixels) + segmenting_cost(data, limits.max_pixels, pre.segment)
        try:
            with budget.reserve(cost, deadline):
                image = decode_upload(data, name, limits.max_pixels)
                return model_input(
                    image, pre.input_size, pre.interpolation, pre.segment, pre.crop_fraction, pre.red_cell_diameter
                )
        except DecodingBusy as busy:
            raise UploadRejected(503, str(busy), name) from None
        except CellNotFoundError as error:
            raise UploadRejected(422, served_reason(error, pre.segment), name) from None

    def classify(files: list[UploadFile], explain: bool) -> Any:
        if len(files) > limits.max_files:
            raise UploadRejected(413, f"{len(files)} files in one request, over the limit of {limits.max_files}")
        deadline = time.monotonic() + capacity.decode_wait_s  # for all the files of the request together
        names = [upload.filename or f"file {i + 1}" for i, upload in enumerate(files)]
        entries: list[dict[str, Any]] = []
        decoded: list[tuple[int, ModelInput]] = []
        for upload, name in zip(files, names, strict=True):
            try:
                image = decode_within_budget(_read_capped(upload, name, limits), name, deadline)
            except UploadRejected as rejected_file:
                entries.append(rejected_file.entry())
                continue
            decoded.append((len(entries), image))
            entries.append({})
        images = [image for _, image in decoded]
        people = _people(classifier, [names[index] for index, _ in decoded])
        ids = people.ids if people else [ONE_PERSON] * len(images)
        colour = classifier.fit_colour(images, ids) if people and images else None
        predicted = classifier.predict(images, people=ids, colour=colour) if images else []
        for (index, image), prediction, person in zip(decoded, predicted, ids, strict=True):
            label = class_display_name(prediction.label)
            entry = {**prediction.to_dict(), "file": names[index], "display_label": label, "note": None}
            if several_cells(prediction.white_cells):
                scan = "POST /scan (the page's smear-photograph mode)"
                entry["note"] = several_cells_line([(names[index], prediction.white_cells)], scan)
            if people:
                entry["person"] = person
            if explain:
                entry.update(_explanation_fields(classifier, image, prediction.label, person, colour))
            entries[index] = entry
        body = {
            "model": classifier.name,
            "backend": classifier.backend,
            "classes": classes,
            "classified": len(decoded),
            "failed": len(entries) - len(decoded),
            "people": people.line if people else None,
            "warning": _few_cells_warning(ids, limits.max_files) if people else None,
            "predictions": entries,
        }
        return body if decoded else _none_done(entries, body, capacity, "classified")

    @app.post("/scan", responses=SCAN_RESPONSES, dependencies=[Depends(only_query_parameters())])
    async def scan(
        files: Annotated[list[UploadFile], File(description="One or more smear photographs (multipart `files`)")],
    ) -> Any:
        """One entry per uploaded photograph, in upload order: every white cell found (red cells and platelets
        ignored, touching cells split), cut out onto black as C-NMC cells are and classified, with its box,
        centroid, class, probabilities and uncertain flag; the cells left out (cut by the border) with the reason;
        the verdict (``n of m white cells called ALL``) and the overlay as a base64 PNG. A file that is not a
        usable image, or cannot be scanned (a grey photograph, a cell already on black: 422), gets
        ``{"file", "error", "status"}``; statuses as for /predict. Each photograph reserves its decoding and scanning
        memory before it is decoded."""
        return await anyio.to_thread.run_sync(partial(scan_photographs, files), limiter=predict_threads)

    def scan_one(data: bytes, name: str, deadline: float) -> dict[str, Any]:
        """One photograph scanned under a reservation of its peak decoding and scanning memory. A photograph that
        decodes but cannot be scanned (a grey field, a cell already on black) is answered 422 with the reason, as
        /predict answers a cell it cannot cut out: its own entry, not the request's 500."""
        if not data:
            raise UploadRejected(400, EMPTY_FILE_REASON, name)
        try:
            with budget.reserve(scan_cost(data, limits.max_pixels, scan_red_cell_diameter), deadline):
                result = classifier.scan(
                    decode_upload(data, name, limits.max_pixels), red_cell_diameter=scan_red_cell_diameter, name=name
                )
        except DecodingBusy as busy:
            raise UploadRejected(503, str(busy), name) from None
        except ImageError as error:
            raise UploadRejected(422, error.reason, name) from None
        except BlastscopeError as error:
            raise UploadRejected(422, str(error), name) from None
        return {**result.to_dict(), "overlay_png": png_base64(result.overlay)}

    def scan_photographs(files: list[UploadFile]) -> Any:
        if len(files) > limits.max_files:
            raise UploadRejected(413, f"{len(files)} files in one request, over the limit of {limits.max_files}")
        deadline = time.monotonic() + capacity.decode_wait_s
        entries: list[dict[str, Any]] = []
        for i, upload in enumerate(files):
            name = upload.filename or f"file {i + 1}"
            try:
                entries.append(scan_one(_read_capped(upload, name, limits), name, deadline))
            except UploadRejected as rejected_file:
                entries.append(rejected_file.entry())
        scanned = sum("error" not in entry for entry in entries)
        body = {
            "model": classifier.name,
            "backend": classifier.backend,
            "classes": classes,
            "operating_point": served["operating_point"],
            "scanned": scanned,
            "failed": len(entries) - scanned,
            "scans": entries,
        }
        return body if scanned else _none_done(entries, body, capacity, "scanned")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _none_done(entries: list[dict[str, Any]], body: dict[str, Any], capacity: Capacity, done: str) -> JSONResponse:
    """The answer when no file of a request could be used: the files' own status (503 with ``Retry-After`` when one
    found no room to decode, 400 when they differ), every file's entry, and a detail naming each file's reason."""
    statuses = {entry["status"] for entry in entries}
    status = 503 if 503 in statuses else statuses.pop() if len(statuses) == 1 else 400
    if len(entries) == 1:
        detail, file = f"{entries[0]['file']}: {entries[0]['error']}", entries[0]["file"]
    else:
        listed = "; ".join(f"{entry['file']}: {entry['error']}" for entry in entries)
        detail, file = f"none of the {len(entries)} files could be {done}: {listed}", None
    headers = {"Retry-After": str(capacity.retry_after_s)} if status == 503 else None
    return JSONResponse({"detail": detail, "file": file, **body}, status_code=status, headers=headers)


def served_reason(error: CellNotFoundError, segment: str) -> str:
    """The 422 reason for a cell that cannot be cut out: its cause, and a ``--segment never`` fix addressed to the
    server's operator, who chose the mode (the page's user has no such switch)."""
    if error.without_segmenting is None:
        return error.cause
    return (
        f"{error.cause}; this server cuts cells out (--segment {segment}): its operator can serve with --segment never "
        f"{error.without_segmenting}"
    )


def _read_capped(upload: UploadFile, name: str, limits: Limits) -> bytes:
    """The upload's bytes, refusing it as soon as it passes the per-file limit."""
    data = upload.file.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        limit = f"{limits.max_file_mb:g} MB ({limits.max_file_bytes:,} bytes)"
        fix = "shrink or compress the image, or start the server with a larger --max-file-mb"
        raise UploadRejected(413, f"over the limit of {limit} for a file; {fix}", name)
    return data


def _people(classifier: Classifier, names: list[str]) -> People | None:
    """Whose cells are whose among a request's classified files, as ``predict --person-by auto`` groups them; None
    for a run that does not normalise colours per person. A request mixing C-NMC names and others is refused (422):
    pooling them would mix named subjects' colours."""
    if not classifier.per_person or not names:
        return None
    try:
        return group_people(names, "auto", door="serve")
    except BlastscopeError as error:
        raise UploadRejected(422, str(error)) from None


def _few_cells_warning(ids: list[str], max_files: int) -> str | None:
    """When a person has too few images in a request for steady colour statistics; None otherwise."""
    counts = Counter(ids)
    few = {person: n for person, n in counts.items() if n < FEW_CELLS}
    if not few:
        return None
    person, n = next(iter(few.items()))
    over = (
        f"colour normalised over {n} image{'s' * (n != 1)} of one person"
        if person == ONE_PERSON
        else f"{len(few)} of {len(counts)} subjects have under {FEW_CELLS} images here (e.g. {person}: {n})"
    )
    return (
        f"{over}, too few for steady colour statistics (at least {FEW_CELLS}); upload up to {max_files} of a "
        "person's cells per request, and for more use `blastscope predict` on the person's folder"
    )


def _explanation_fields(
    classifier: Classifier, image: ModelInput, label: str, person: str, colour: SubjectColour | None
) -> dict[str, Any]:
    """``gradcam_png`` (null when the heat map shows nothing), ``gradcam_note`` (why, or null) and ``gradcam_layer``,
    of the image as the model saw it (``colour``: the request's per-person colour statistics, ``person``: its).

    A constant heat map (e.g. all zero) is never sent as an overlay: a picture of nothing looks like an answer.
    """
    explanation = classifier.explain(image, target=label, person=person, colour=colour)
    return {
        "gradcam_png": png_base64(explanation.overlay) if explanation.usable else None,
        "gradcam_note": explanation.note or None,
        "gradcam_layer": explanation.layer or None,
    }
