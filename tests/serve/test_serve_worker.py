"""The batching worker, model failures, the API key, and `serve()` as a whole process."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

# The server is an optional extra (`pip install 'imgcls[serve]'`); without it these tests skip rather than fail.
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fixtures import LABELS, decoded, image_bytes, make_package, running_server, same_top  # noqa: E402

from imgcls.serve import MicroBatcher, ServeError, create_app, load_classifier  # noqa: E402

POISON_SIZE = (7, 7)


# -- MicroBatcher on its own -------------------------------------------------------------------------------------------
def _fake_predict(calls: list[int]) -> Any:
    """Top-k whose single label names the image's width, so each answer shows which image it belongs to."""

    def predict(images: list[Image.Image], top_k: int) -> list[list[dict[str, Any]]]:
        calls.append(len(images))
        if any(img.size == POISON_SIZE for img in images):
            raise RuntimeError("poisoned batch")
        return [[{"label": f"w{img.width}", "score": 1.0 / (r + 1)} for r in range(top_k)] for img in images]

    return predict


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_batches_are_capped_and_answers_go_to_their_images() -> None:
    calls: list[int] = []

    async def go() -> list[list[dict[str, Any]]]:
        batcher = MicroBatcher(_fake_predict(calls), max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        try:
            return await batcher.submit([Image.new("RGB", (10 + i, 10)) for i in range(10)], top_k=2)
        finally:
            await batcher.stop()

    tops = _run(go())
    assert calls == [4, 4, 2]
    assert [t[0]["label"] for t in tops] == [f"w{10 + i}" for i in range(10)]
    assert all(len(t) == 2 for t in tops)


def test_one_pass_serves_different_top_k() -> None:
    calls: list[int] = []

    async def go() -> tuple[Any, Any]:
        batcher = MicroBatcher(_fake_predict(calls), max_batch_size=8, max_wait_ms=100)
        await batcher.start()
        try:
            return await asyncio.gather(
                batcher.submit([Image.new("RGB", (20, 20))], top_k=1),
                batcher.submit([Image.new("RGB", (30, 20))], top_k=3),
            )
        finally:
            await batcher.stop()

    one, three = _run(go())
    assert calls == [2]
    assert [len(one[0]), len(three[0])] == [1, 3]


def test_a_lone_image_waits_at_most_max_wait() -> None:
    async def go() -> float:
        batcher = MicroBatcher(_fake_predict([]), max_batch_size=32, max_wait_ms=30)
        await batcher.start()
        try:
            started = time.monotonic()
            await batcher.submit([Image.new("RGB", (9, 9))], top_k=1)
            return time.monotonic() - started
        finally:
            await batcher.stop()

    assert _run(go()) < 1.0  # 30 ms plus scheduling; a worker waiting for a full batch would never return


def test_a_failing_image_fails_alone_and_the_worker_lives() -> None:
    calls: list[int] = []

    async def go() -> list[Any]:
        batcher = MicroBatcher(_fake_predict(calls), max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        try:
            first = await asyncio.gather(
                batcher.submit([Image.new("RGB", (11, 11))], top_k=1),
                batcher.submit([Image.new("RGB", POISON_SIZE)], top_k=1),
                batcher.submit([Image.new("RGB", (12, 12))], top_k=1),
                return_exceptions=True,
            )
            later = await batcher.submit([Image.new("RGB", (13, 13))], top_k=1)
            assert batcher.running
            return [*first, later]
        finally:
            await batcher.stop()

    good, bad, good2, later = _run(go())
    assert calls[0] == 3  # batched together, then retried one by one
    assert good[0][0]["label"] == "w11" and good2[0][0]["label"] == "w12" and later[0][0]["label"] == "w13"
    assert isinstance(bad, ServeError) and bad.status == 500 and "poisoned" in str(bad.detail)


# -- a real server over a real model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("serve-worker") / "model")


@pytest.fixture(scope="module")
def clf(package: Path) -> Any:
    return load_classifier(package, backend="torch")


class FlakyClassifier:
    """The real classifier, except that any batch holding a 7x7 image raises, as a model bug would."""

    def __init__(self, clf: Any) -> None:
        self.clf = clf
        self.labels, self.package, self.task, self.data_config = clf.labels, clf.package, clf.task, clf.data_config

    def predict_images(self, images: list[Image.Image], *, top_k: int = 5) -> list[list[dict[str, Any]]]:
        if any(img.size == POISON_SIZE for img in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.clf.predict_images(images, top_k=top_k)


def test_model_failure_fails_only_its_request(clf: Any) -> None:
    app = create_app(FlakyClassifier(clf), max_wait_ms=50)
    good = [image_bytes((30 * i, 90, 200 - 20 * i)) for i in range(6)]
    poison = image_bytes((1, 2, 3), size=POISON_SIZE)
    wanted = clf.predict_images([decoded(b) for b in good], top_k=5)
    with running_server(app) as url:

        async def run_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as ac:
                blobs = [*good[:3], poison, *good[3:]]
                return await asyncio.gather(*(ac.post("/v1/classify", files={"file": ("x.png", b)}) for b in blobs))

        responses = asyncio.run(run_all())
        bad = responses.pop(3)
        assert bad.status_code == 500
        assert bad.json()["error"] == "the model failed on this image"
        assert "illegal memory access" in bad.json()["detail"]
        for response, want in zip(responses, wanted, strict=True):
            assert response.status_code == 200, response.text
            assert same_top(response.json()["predictions"][0]["top"], want, tol=1e-3)
        assert app.state.stats["failed_batches"] >= 1
        with httpx.Client(base_url=url) as c:
            assert c.get("/healthz").json()["status"] == "ok"
            assert c.post("/v1/classify", files={"file": ("y.png", good[0])}).status_code == 200


def test_api_key_guards_every_endpoint_but_healthz(clf: Any) -> None:
    key = "s3cret-key_0123456789"
    app = create_app(clf, api_key=key)
    png = image_bytes((200, 10, 10))
    with running_server(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/healthz").status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {key}"},
            {"Authorization": key},
        ):
            for response in (
                c.get("/v1/labels", headers=headers),
                c.post("/v1/classify", headers=headers, files={"file": ("a.png", png)}),
                c.get("/docs", headers=headers),
                c.get("/redoc", headers=headers),
                c.get("/openapi.json", headers=headers),
                c.get("/docs/oauth2-redirect", headers=headers),
                c.get("/no/such/path", headers=headers),
                c.request("DELETE", "/v1/labels", headers=headers),
            ):
                assert response.status_code == 401, (headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in response.json()["error"]
                assert key not in response.text
        auth = {"Authorization": f"Bearer {key}"}
        assert c.get("/v1/labels", headers=auth).json() == {"labels": LABELS}
        assert c.post("/v1/classify", headers=auth, files={"file": ("a.png", png)}).status_code == 200
        spec = c.get("/openapi.json", headers=auth).json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        assert c.get("/docs", headers=auth).status_code == 200


def test_create_app_refuses_nonsense(clf: Any) -> None:
    for kwargs in ({"max_batch_size": 0}, {"max_bytes": 0}, {"max_images_per_request": 0}, {"api_key": ""}):
        with pytest.raises(ValueError):
            create_app(clf, **kwargs)


# -- serve() as a process ----------------------------------------------------------------------------------------------
def _lines(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], pattern: str, seen: list[str], timeout: float = 90) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r}; output so far:\n{''.join(seen)}")


@pytest.fixture
def serve_process(package: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    key = "never-print-me-4242"
    code = "import sys; from imgcls.serve import serve; serve(sys.argv[1], port=0, api_key=sys.argv[2])"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(package), key],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        yield proc, key
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_process_prints_its_url_and_stops_cleanly(serve_process: tuple[subprocess.Popen[str], str]) -> None:
    proc, key = serve_process
    lines, seen = _lines(proc.stdout), []
    url = _wait_for(lines, r"at (http://127\.0\.0\.1:\d+)/v1/classify \(API key required", seen).group(1)
    _wait_for(lines, re.escape(f"API docs at {url}/docs"), seen)
    with httpx.Client(base_url=url) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/v1/labels").status_code == 401
        assert c.get("/v1/labels", headers={"Authorization": f"Bearer {key}"}).json()["labels"] == LABELS
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    time.sleep(0.2)  # let the pump thread drain the last lines
    while not lines.empty():
        seen.append(lines.get())
    output = "".join(seen)
    assert key not in output
    assert "GET /v1/labels" in output  # uvicorn's access log is on at the default log level
