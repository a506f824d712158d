"""Clients that send slowly, stall or hang up mid-upload, over raw sockets against a real uvicorn server."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fixtures import decoded, image_bytes, make_package, running_server, same_top  # noqa: E402

from imgcls.serve import create_app, load_classifier  # noqa: E402

BODY_TIMEOUT = 0.5
BOUNDARY = "slow-client-boundary"


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> Any:
    clf = load_classifier(make_package(tmp_path_factory.mktemp("slow") / "model"), backend="torch")
    backend = getattr(clf, "backend", None)
    if getattr(backend, "bf16", False):  # exact comparisons below need the fp32 path
        backend.bf16 = False
    return clf


@pytest.fixture(scope="module")
def url(clf: Any) -> Iterator[str]:
    with running_server(create_app(clf, max_wait_ms=1, body_timeout=BODY_TIMEOUT)) as url:
        yield url


def upload(url: str, data: bytes) -> tuple[socket.socket, bytes]:
    """A connected socket and the whole request (headers + multipart body) for one PNG, not yet sent."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return socket.create_connection((host, int(port)), timeout=30), head + body


def read_until_closed(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_stalled_upload_gets_408_and_others_are_served_meanwhile(url: str, clf: Any) -> None:
    data = image_bytes((200, 30, 90))
    sock, request = upload(url, data)
    with sock:
        sock.sendall(request[: len(request) - 40])  # then nothing more
        started = time.monotonic()
        # While that upload hangs, another client is answered at once.
        with httpx.Client(base_url=url, timeout=10) as c:
            r = c.post("/v1/classify", files={"file": ("b.png", data, "image/png")})
        assert r.status_code == 200
        assert same_top(r.json()["predictions"][0]["top"], clf.predict_images([decoded(data)])[0])
        status, headers, body = read_until_closed(sock)  # returns only because the server hangs up
        waited = time.monotonic() - started
    assert status == 408
    assert headers["connection"] == "close"
    assert "stalled" in body["error"] and body["detail"]["timeout_s"] == BODY_TIMEOUT
    assert BODY_TIMEOUT * 0.8 <= waited < BODY_TIMEOUT + 5


def test_slow_upload_that_keeps_sending_is_answered(url: str, clf: Any) -> None:
    data = image_bytes((10, 180, 60))
    sock, request = upload(url, data)
    with sock:
        pieces = 6
        step = len(request) // pieces + 1
        started = time.monotonic()
        for start in range(0, len(request), step):
            sock.sendall(request[start : start + step])
            time.sleep(BODY_TIMEOUT / 2)  # slower in total than the timeout, but never silent that long
        sock.shutdown(socket.SHUT_WR)
        status, _, body = read_until_closed(sock)
    assert time.monotonic() - started > BODY_TIMEOUT * 2
    assert status == 200, body
    assert same_top(body["predictions"][0]["top"], clf.predict_images([decoded(data)])[0])


def test_client_hanging_up_mid_upload_is_not_a_server_error(
    url: str, clf: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="imgcls.serve")
    for _ in range(3):
        sock, request = upload(url, image_bytes((90, 90, 200)))
        with sock:
            sock.sendall(request[: len(request) // 2])
    deadline = time.monotonic() + 10  # the server notices the closed sockets as it reads them
    while sum("client disconnected" in r.getMessage() for r in caplog.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    problems = [r for r in caplog.records if r.name.startswith("imgcls") and r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]
    assert sum("client disconnected" in r.getMessage() for r in caplog.records) == 3
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/healthz").json()["status"] == "ok"


def test_body_timeout_must_be_positive(clf: Any) -> None:
    with pytest.raises(ValueError, match="body_timeout"):
        create_app(clf, body_timeout=0)
