"""Helpers for the serve tests: a tiny untrained model package, images made on the spot, a real uvicorn server."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from PIL import Image

from imgcls.models import create_model, data_config
from imgcls.package import save_package

LABELS = ["bird (small)", "cat", "向日葵"]


def make_package(out_dir: Path) -> Path:
    """A LeNet-5 package with random weights: the server's answers only have to match the offline ones."""
    model = create_model("lenet5", len(LABELS))
    return save_package(model.eval(), out_dir, labels=LABELS, data_config=data_config(model))


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (24, 20), fmt: str = "PNG") -> bytes:
    """A small image with a stripe, so that different colours give different scores."""
    img = Image.new("RGB", size, colour)
    img.paste((255 - colour[0], colour[2], colour[1]), (0, 0, size[0] // 3, size[1]))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A ~60-byte PNG whose header claims width x height pixels (4x Pillow's decompression-bomb limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def same_top(got: list[dict[str, Any]], want: list[dict[str, Any]], tol: float = 1e-5) -> bool:
    """Same labels in the same order, scores within `tol`."""
    return [g["label"] for g in got] == [w["label"] for w in want] and all(
        abs(g["score"] - w["score"]) <= tol for g, w in zip(got, want, strict=True)
    )


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread on a free port; yields its base URL."""
    # Bound here and handed over, so that no other process can take the port between choosing and binding it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
