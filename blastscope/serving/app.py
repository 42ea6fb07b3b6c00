"""The web service: a JSON prediction API, a drag-and-drop page for people, and OpenAPI docs at /docs.

Uploads are untrusted: each file's size, the number of files and each image's pixel count are limited, and content
is identified by decoding it (never by its name). Every rejection of a request to /predict (an oversized body, a
malformed request, a bad file) is a 4xx JSON ``{"detail": ..., "file": ...}``, ``file`` being null when no single file
is at fault, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError

from blastscope import __version__
from blastscope.api.classifier import Classifier
from blastscope.data.images import _pixel_limit_reason, decode_image_bytes
from blastscope.errors import ImageError
from blastscope.metrics import display_name
from blastscope.serving.limits import Limits

STATIC_DIR = Path(__file__).with_name("static")


class UploadRejected(Exception):
    """One upload the service refuses, with the HTTP status that says why."""

    def __init__(self, status: int, detail: str, file: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.file = status, detail, file


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
        raise UploadRejected(400, f"{name}: empty file", name)
    try:
        return decode_image_bytes(data, name, max_pixels)
    except ImageError as error:
        cause = error.__cause__
        if isinstance(cause, UnidentifiedImageError):
            raise UploadRejected(415, f"{name}: not an image (PNG, JPEG, BMP, TIFF or WebP expected)", name) from None
        bomb = isinstance(cause, (Image.DecompressionBombError, Image.DecompressionBombWarning))
        if bomb or _pixel_limit_reason(max_pixels) in error.reason:
            raise UploadRejected(413, f"{name}: {error.reason}", name) from None
        raise UploadRejected(415, f"{name}: {error.reason}", name) from None
    except Exception as error:  # an undecodable upload must never become a 500
        raise UploadRejected(415, f"{name}: cannot be decoded ({type(error).__name__}: {error})", name) from None


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def create_app(classifier: Classifier, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``classifier`` under ``limits`` (default: ``Limits()``)."""
    limits = limits or Limits()
    app = FastAPIOffline(  # serves the /docs assets itself: the service runs offline
        title="blastscope",
        version=__version__,
        description=(
            "Classify single-cell microscopy images as leukemic blast (ALL) or normal cell (HEM), with Grad-CAM "
            "explanations. Research use only, not a diagnostic device."
            + (f" Trained on {classifier.attribution}." if classifier.attribution else "")
        ),
    )
    classes = [{"name": label, "display": display_name(label)} for label in classifier.classes]

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
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and what is being served: model, backend, classes and upload limits."""
        return {
            "status": "ok",
            "version": __version__,
            "model": classifier.name,
            "backend": classifier.backend,
            "classes": classes,
            "limits": asdict(limits),
            "attribution": classifier.attribution or None,
        }

    @app.post("/predict")
    def predict(
        files: Annotated[list[UploadFile], File(description="One or more cell images (multipart field `files`)")],
        explain: Annotated[bool, Query(description="Add each image's Grad-CAM overlay as a base64 PNG")] = False,
    ) -> dict[str, Any]:
        """The class and per-class probabilities of every uploaded image, in upload order."""
        if len(files) > limits.max_files:
            raise UploadRejected(413, f"{len(files)} files in one request, over the limit of {limits.max_files}")
        names = [upload.filename or f"file {i + 1}" for i, upload in enumerate(files)]
        images = [
            decode_upload(_read_capped(upload, name, limits), name, limits.max_pixels)
            for upload, name in zip(files, names, strict=True)
        ]
        entries = []
        for name, image, prediction in zip(names, images, classifier.predict(images), strict=True):
            entry = {**prediction.to_dict(), "file": name, "display_label": display_name(prediction.label)}
            if explain:
                entry["gradcam_png"] = png_base64(classifier.explain(image, target=prediction.label).overlay)
            entries.append(entry)
        return {"model": classifier.name, "backend": classifier.backend, "classes": classes, "predictions": entries}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _read_capped(upload: UploadFile, name: str, limits: Limits) -> bytes:
    """The upload's bytes, refusing it as soon as it passes the per-file limit."""
    data = upload.file.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise UploadRejected(413, f"{name}: over the limit of {limits.max_file_mb:g} MB a file", name)
    return data
