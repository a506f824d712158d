"""Image files made on the spot: good ones in every mode, and the broken files real datasets contain."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MakeImage = Callable[..., Path]


def unique_pixels(seed: int, size: tuple[int, int] = (12, 10)) -> np.ndarray:
    """An RGB array no other seed produces, so two fixture images are never byte-identical by accident."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def make_image() -> MakeImage:
    """``make_image(path, seed=0, size=(12, 10), fmt=None)`` writes a small unique RGB image and returns its path."""

    def make(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10), fmt: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(unique_pixels(seed, size)).save(path, format=fmt)
        return path

    return make


@pytest.fixture
def broken_files(tmp_path: Path) -> dict[str, Path]:
    """The usual suspects: an empty file, a truncated JPEG, an HTML page named .jpg, random bytes named .png."""
    folder = tmp_path / "broken"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(unique_pixels(99, (64, 48))).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    files = {
        "empty": (folder / "empty.jpg", b""),
        "truncated": (folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "html": (
            folder / "page.jpg",
            b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>Access denied</body></html>\n",
        ),
        "random": (folder / "noise.png", np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: path for name, (path, _) in files.items()}
