"""`imgcls serve` end to end: a real uvicorn server on a free port, real HTTP requests, answers checked offline."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The server is an optional extra (`pip install 'imgcls[serve]'`); without it these tests skip rather than fail.
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fixtures import LABELS, bomb_png, decoded, image_bytes, make_package, running_server, same_top  # noqa: E402

from imgcls.serve import create_app, load_classifier  # noqa: E402

MAX_BYTES = 256 * 1024
MAX_IMAGES = 8
RED, GREEN, BLUE = (220, 40, 40), (40, 200, 40), (40, 40, 220)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def clf(package: Path) -> Any:
    clf = load_classifier(package, backend="torch")
    # bf16 rounding can depend on how images are batched; the 1e-5 comparisons below need the fp32 path.
    backend = getattr(clf, "backend", None)
    if getattr(backend, "bf16", False):
        backend.bf16 = False
    return clf


@pytest.fixture(scope="module")
def server(clf: Any) -> Iterator[tuple[str, Any]]:
    app = create_app(clf, max_batch_size=32, max_wait_ms=10, max_bytes=MAX_BYTES, max_images_per_request=MAX_IMAGES)
    with running_server(app) as url:
        yield url, app


@pytest.fixture
def client(server: tuple[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def offline(clf: Any, blobs: list[bytes], top_k: int = 5) -> list[list[dict[str, Any]]]:
    return clf.predict_images([decoded(b) for b in blobs], top_k=top_k)


def check_answer(clf: Any, response: httpx.Response, blobs: list[bytes], top_k: int = 5) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "lenet5"
    assert len(body["predictions"]) == len(blobs)
    for pred, want in zip(body["predictions"], offline(clf, blobs, top_k), strict=True):
        assert same_top(pred["top"], want), (pred["top"], want)
    return body


def test_health_labels_and_docs(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert client.get("/v1/labels").json() == {"labels": LABELS}
    spec = client.get("/openapi.json").json()
    classify = spec["paths"]["/v1/classify"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(classify["requestBody"]["content"])
    assert "/v1/labels" in spec["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_multipart_one_file(client: httpx.Client, clf: Any) -> None:
    png = image_bytes(RED)
    body = check_answer(clf, client.post("/v1/classify", files={"file": ("rød kat.png", png, "image/png")}), [png])
    assert body["predictions"][0]["filename"] == "rød kat.png"
    assert len(body["predictions"][0]["top"]) == len(LABELS)  # top_k 5 is clamped to the 3 labels


def test_multipart_several_files_and_top_k(client: httpx.Client, clf: Any) -> None:
    blobs = [image_bytes(RED), image_bytes(GREEN, fmt="JPEG"), image_bytes(BLUE, size=(40, 31))]
    files = [("files", ("a.png", blobs[0])), ("files", ("b.jpg", blobs[1])), ("file", ("c.png", blobs[2]))]
    body = check_answer(clf, client.post("/v1/classify", params={"top_k": 2}, files=files), blobs, top_k=2)
    assert [p["filename"] for p in body["predictions"]] == ["a.png", "b.jpg", "c.png"]
    assert all(len(p["top"]) == 2 for p in body["predictions"])
    # top_k as a form field works too, for `curl -F top_k=1`.
    body = check_answer(clf, client.post("/v1/classify", data={"top_k": "1"}, files=files), blobs, top_k=1)


def test_json_base64(client: httpx.Client, clf: Any) -> None:
    blobs = [image_bytes(GREEN), image_bytes(BLUE, fmt="JPEG")]
    encoded = [base64.b64encode(b).decode() for b in blobs]
    body = check_answer(clf, client.post("/v1/classify", json={"images": encoded, "top_k": 2}), blobs, top_k=2)
    assert all("filename" not in p and len(p["top"]) == 2 for p in body["predictions"])
    # One image, as a data URL, line-wrapped the way `base64` writes it.
    wrapped = "\n".join(encoded[0][i : i + 76] for i in range(0, len(encoded[0]), 76))
    check_answer(clf, client.post("/v1/classify", json={"image": f"data:image/png;base64,{wrapped}"}), blobs[:1])
    # A raw image body.
    check_answer(clf, client.post("/v1/classify", content=blobs[1], headers={"content-type": "image/jpeg"}), blobs[1:])


def test_concurrent_requests_are_batched(server: tuple[str, Any], clf: Any) -> None:
    url, app = server
    blobs = [image_bytes((i * 4 % 256, 255 - i * 3, (i * 37) % 256)) for i in range(64)]
    wanted = offline(clf, blobs)
    before = dict(app.state.stats)

    async def run_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as ac:
            return await asyncio.gather(
                *(ac.post("/v1/classify", files={"file": (f"{i}.png", b)}) for i, b in enumerate(blobs))
            )

    responses = asyncio.run(run_all())
    for i, (response, want) in enumerate(zip(responses, wanted, strict=True)):
        assert response.status_code == 200, response.text
        pred = response.json()["predictions"][0]
        assert pred["filename"] == f"{i}.png"
        assert same_top(pred["top"], want)
    batches = app.state.stats["batches"] - before["batches"]
    assert app.state.stats["images"] - before["images"] == 64
    assert batches < 64, f"64 requests ran as {batches} batches: nothing was batched"
    assert app.state.stats["largest_batch"] > 1


def _chunks(total: int) -> Iterator[bytes]:
    # A generator body goes out chunked, with no Content-Length: the server must count what it reads.
    for _ in range(total // 8192 + 1):
        yield b"\x00" * 8192


def _many_files(n: int) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{i}.png", image_bytes(RED))) for i in range(n)]


GOOD_B64 = base64.b64encode(image_bytes(RED)).decode()
NOT_AN_IMAGE = b"hello, this is a text file and not a picture\n"

# (id, request kwargs, expected status, text the error message must contain)
BAD_REQUESTS: list[tuple[str, Callable[[], dict[str, Any]], int, str]] = [
    ("text-file", lambda: {"files": {"file": ("notes.txt", NOT_AN_IMAGE)}}, 415, "notes.txt"),
    (
        "one-bad-among-good",
        lambda: {"files": [("files", ("ok.png", image_bytes(RED))), ("files", ("page.html", b"<html>hi</html>"))]},
        415,
        "page.html",
    ),
    ("truncated-png", lambda: {"files": {"file": ("cut.png", image_bytes(RED, (64, 64))[:60])}}, 415, "cut.png"),
    ("bomb", lambda: {"files": {"file": ("huge.png", bomb_png())}}, 413, "too large"),
    ("bomb-json", lambda: {"json": {"image": base64.b64encode(bomb_png()).decode()}}, 413, "too large"),
    (
        "content-length-over-limit",
        lambda: {"content": b"\x00" * (MAX_BYTES + 1), "headers": {"content-type": "image/png"}},
        413,
        "too large",
    ),
    (
        "multipart-over-limit",
        lambda: {"files": {"file": ("big.png", b"\x89PNG" + b"\x00" * MAX_BYTES)}},
        413,
        "too large",
    ),
    (
        "chunked-over-limit",
        lambda: {"content": _chunks(MAX_BYTES + 1), "headers": {"content-type": "image/png"}},
        413,
        "too large",
    ),
    ("empty-body", lambda: {}, 400, "empty"),
    ("empty-json-body", lambda: {"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty"),
    ("empty-file", lambda: {"files": {"file": ("nothing.png", b"")}}, 400, "empty"),
    ("no-files", lambda: {"files": {"top_k": (None, "3")}}, 400, "no images"),
    ("url-encoded-form", lambda: {"data": {"top_k": "3"}}, 400, "no images"),
    ("wrong-field", lambda: {"files": {"image": ("x.png", image_bytes(RED))}}, 400, "'files'"),
    ("text-in-file-field", lambda: {"files": {"file": (None, "x.png")}}, 400, "not a file"),
    ("bad-base64", lambda: {"json": {"images": ["this is not base64!"]}}, 400, "base64"),
    ("bad-data-url", lambda: {"json": {"image": "data:image/png,abc"}}, 400, "base64"),
    ("invalid-json", lambda: {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("json-not-object", lambda: {"json": [GOOD_B64]}, 400, "object"),
    ("json-images-not-list", lambda: {"json": {"images": GOOD_B64}}, 400, "list"),
    ("json-image-not-string", lambda: {"json": {"images": [123]}}, 400, "images[0]"),
    ("json-no-images", lambda: {"json": {"images": []}}, 400, "no images"),
    ("json-unknown-field", lambda: {"json": {"imgs": [GOOD_B64]}}, 400, "imgs"),
    ("too-many-json", lambda: {"json": {"images": [GOOD_B64] * (MAX_IMAGES + 1)}}, 413, "too many"),
    ("too-many-files", lambda: {"files": _many_files(MAX_IMAGES + 1)}, 413, "too many"),
    (
        "top-k-zero-query",
        lambda: {"params": {"top_k": 0}, "files": {"file": ("a.png", image_bytes(RED))}},
        422,
        "top_k",
    ),
    (
        "top-k-text-query",
        lambda: {"params": {"top_k": "x"}, "files": {"file": ("a.png", image_bytes(RED))}},
        422,
        "top_k",
    ),
    ("top-k-zero-json", lambda: {"json": {"images": [GOOD_B64], "top_k": 0}}, 422, "top_k"),
    (
        "top-k-text-form",
        lambda: {"data": {"top_k": "many"}, "files": {"file": ("a.png", image_bytes(RED))}},
        422,
        "top_k",
    ),
    ("unsupported-type", lambda: {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    (
        "no-boundary",
        lambda: {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "multipart",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"), [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_is_a_clear_4xx(
    client: httpx.Client, clf: Any, kwargs: Callable[[], dict[str, Any]], status: int, needle: str
) -> None:
    response = client.post("/v1/classify", **kwargs())
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert needle.lower() in body["error"].lower(), body
    # ... and the server still answers the next request correctly.
    png = image_bytes(GREEN)
    check_answer(clf, client.post("/v1/classify", files={"file": ("ok.png", png)}), [png])


def test_unknown_route_and_method_are_json(client: httpx.Client) -> None:
    for response, status in ((client.get("/v1/nothing"), 404), (client.get("/v1/classify"), 405)):
        assert response.status_code == status
        assert set(response.json()) == {"error", "detail"}


def test_still_healthy_after_everything(client: httpx.Client, clf: Any, server: tuple[str, Any]) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    blobs = [image_bytes(BLUE), image_bytes(RED)]
    check_answer(
        clf, client.post("/v1/classify", files=[("files", ("a.png", blobs[0])), ("files", ("b.png", blobs[1]))]), blobs
    )
    assert server[1].state.stats["failed_batches"] == 0
