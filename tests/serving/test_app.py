"""The HTTP API on a real tiny run: valid uploads, and every kind of bad upload refused with a 4xx JSON error."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from blastscope.api import load
from blastscope.serving.app import Limits, create_app


@pytest.fixture(scope="module")
def classifier(tiny_run: Path):
    return load(tiny_run)


def client(classifier, **limits: float) -> TestClient:
    return TestClient(create_app(classifier, Limits(**limits)))


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in files]


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid grayscale PNG of zeros: a few kilobytes that decode to width x height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\0" * (width + 1)  # each row: filter byte 0, then the pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def assert_still_serving(api: TestClient, good: tuple[str, bytes]) -> None:
    assert api.get("/health").json()["status"] == "ok"
    assert api.post("/predict", files=upload(good)).status_code == 200


@pytest.fixture(scope="module")
def good(cell_images: list[Path]) -> tuple[str, bytes]:
    return cell_images[0].name, cell_images[0].read_bytes()


def test_health_page_and_docs(classifier) -> None:
    api = client(classifier)
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "torch"
    assert [c["name"] for c in health["classes"]] == list(classifier.classes)
    assert health["limits"] == {"max_file_mb": 20.0, "max_files": 32, "max_pixels": 50_000_000}
    page = api.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert api.get("/static/app.js").status_code == 200
    assert "/predict" in api.get("/openapi.json").json()["paths"]
    docs = api.get("/docs").text
    assert "https://" not in docs  # Swagger UI served from the package, so /docs works offline
    assert api.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_predict_several_files_with_explanations(classifier, cell_images: list[Path]) -> None:
    files = [(path.name, path.read_bytes()) for path in cell_images[:3]]
    response = client(classifier).post("/predict?explain=true", files=upload(*files))
    assert response.status_code == 200, response.text
    entries = response.json()["predictions"]
    expected = classifier.predict(cell_images[:3])
    assert [e["file"] for e in entries] == [name for name, _ in files]
    size = classifier.preprocessing.input_size
    for entry, prediction in zip(entries, expected, strict=True):
        assert entry["label"] == prediction.label
        assert entry["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
        overlay = Image.open(io.BytesIO(base64.b64decode(entry["gradcam_png"])))
        assert overlay.format == "PNG" and overlay.size == (size, size)


def test_without_explain_no_overlay(classifier, good) -> None:
    entry = client(classifier).post("/predict", files=upload(good)).json()["predictions"][0]
    assert "gradcam_png" not in entry and entry["file"] == good[0]


def test_content_not_name_decides(classifier, good) -> None:
    api = client(classifier)
    response = api.post("/predict", files=upload(good, ("cell.png", b"%PDF-1.4 not an image at all")))
    assert response.status_code == 415
    assert response.json() == {
        "detail": "cell.png: not an image (PNG, JPEG, BMP, TIFF or WebP expected)",
        "file": "cell.png",
    }
    renamed = api.post("/predict", files=upload(("picture.txt", good[1])))
    assert renamed.status_code == 200  # a real image under a misleading name is still an image
    assert_still_serving(api, good)


@pytest.mark.parametrize("kind", ["GIF", "ICO", "PPM"])
def test_only_whitelisted_formats(classifier, good, kind: str) -> None:
    """The server accepts exactly the formats that files on disk may have: BMP, PNG, JPEG, TIFF and WebP."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buffer, format=kind)
    api = client(classifier)
    response = api.post("/predict", files=upload(("cell.png", buffer.getvalue())))
    assert response.status_code == 415 and response.json()["file"] == "cell.png"


def test_any_decoding_failure_is_415(classifier, good, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: object) -> None:
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr("blastscope.serving.app.decode_image_bytes", explode)
    response = client(classifier).post("/predict", files=upload(good))
    assert response.status_code == 415 and "decoder crashed" in response.json()["detail"]


def test_oversized_file(classifier, good) -> None:
    api = client(classifier, max_file_mb=0.001)
    response = api.post("/predict", files=upload(("big.png", good[1] + b"\0" * 2048)))
    assert response.status_code == 413 and "big.png" in response.json()["detail"]
    oversized_body = api.post("/predict", files=upload(("huge.png", b"\0" * 3_000_000)))
    assert oversized_body.status_code == 413 and "request of" in oversized_body.json()["detail"]
    assert api.get("/health").status_code == 200


def test_chunked_body_is_counted(classifier, good) -> None:
    """A body without Content-Length cannot slip past the request limit: it is counted as it arrives."""
    api = client(classifier, max_file_mb=2, max_files=1)  # a request limit of 3 MiB

    def chunks():
        boundary = b"--x\r\n"
        yield boundary + b'Content-Disposition: form-data; name="files"; filename="huge.png"\r\n\r\n'
        for _ in range(400):  # 400 x 64 KiB = 25 MiB if it were all read
            yield b"\0" * 65536
        yield b"\r\n--x--\r\n"

    response = api.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "request body over the limit of 3,145,728 bytes", "file": None}
    assert_still_serving(api, good)


def test_validation_errors_have_the_same_shape(classifier) -> None:
    response = client(classifier).post("/predict")  # no `files` field at all
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail", "file"} and body["file"] is None and "files" in body["detail"]


def test_too_many_files(classifier, good) -> None:
    api = client(classifier, max_files=2)
    response = api.post("/predict", files=upload(good, good, good))
    assert response.status_code == 413 and "3 files" in response.json()["detail"]
    assert_still_serving(api, good)


@pytest.mark.parametrize("side", [8_000, 10_000])  # 64 Mpx: over our limit; 100 Mpx: over Pillow's guard too
def test_decompression_bomb(classifier, good, side: int) -> None:
    api = client(classifier)
    bomb = png_bomb(side, side)
    assert len(bomb) < 1_000_000
    response = api.post("/predict", files=upload(("bomb.png", bomb)))
    assert response.status_code == 413 and response.json()["file"] == "bomb.png"
    assert_still_serving(api, good)


def test_pixel_limit_is_configurable(classifier, good) -> None:
    response = client(classifier, max_pixels=100).post("/predict", files=upload(good))
    assert response.status_code == 413 and "over the limit of 100" in response.json()["detail"]
