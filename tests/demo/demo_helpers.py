"""Helpers for the demo tests: a tiny untrained model package, free ports, waiting for a server."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from imgfactory import CLASS_COLOURS, write_class_images

LABELS = list(CLASS_COLOURS)  # ["bird (small)", "cat", "向日葵"]: spaces, brackets and CJK in one list


def make_package(root: Path, *, with_data: bool = True) -> Path:
    """A LeNet-5 package with random weights (no training), optionally pointing at a train/test image folder.

    Returns:
        The package folder, `root/model`; the data (if any) is in `root/data`.
    """
    from imgcls.models import create_model, data_config
    from imgcls.package import save_package

    info = None
    if with_data:
        write_class_images(root / "data" / "train", per_class=2, seed=1)
        write_class_images(root / "data" / "test", per_class=2, seed=2)
        info = {"training": {"data": str(root / "data")}}
    model = create_model("lenet5", len(LABELS))
    return save_package(model.eval(), root / "model", labels=LABELS, data_config=data_config(model), info=info)


def write_upload_image(path: Path) -> Path:
    """A 64x48 RGBA gradient whose left quarter is transparent: exercises the demo's conversion to RGB."""
    pixels = np.zeros((48, 64, 4), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    pixels[..., 1] = 120
    pixels[..., 2] = np.linspace(255, 0, 48, dtype=np.uint8)[:, None]
    pixels[..., 3] = 255
    pixels[:, :16, 3] = 0
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_for_http(url: str, timeout: float, alive=lambda: True) -> int:
    """Poll `url` until it answers; `alive()` returning False (e.g. the server process died) stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            return http_get(url, timeout=2)[0]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"{url}: no answer within {timeout:.0f} s")
