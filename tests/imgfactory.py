"""Labelled image folders made on the spot for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Three classes a tiny model can tell apart in a few steps (dominant colour), with names that test
# the UTF-8 and punctuation paths.
CLASS_COLOURS = {"bird (small)": (220, 40, 40), "cat": (40, 200, 40), "向日葵": (40, 40, 220)}


def write_class_images(root: Path, per_class: int, seed: int, size: int = 24) -> None:
    rng = np.random.default_rng(seed)
    for name, colour in CLASS_COLOURS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, size=(size, size, 3))
            pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name[:3]}_{seed}_{i}.png")
