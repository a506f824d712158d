"""Shared fixtures: no network, tiny models, and a small labelled image folder made on the spot."""

from __future__ import annotations

import os

# Before huggingface_hub is imported: a hub lookup must fail in 0.1 s instead of retrying for ~46 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("IMGCLS_HOME", os.path.join(os.path.dirname(__file__), ".cache-imgcls"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`ROOT/train/<class>/*.png` (12 per class) and `ROOT/test/<class>/*.png` (4 per class)."""
    root = tmp_path / "shapes"
    write_class_images(root / "train", per_class=12, seed=1)
    write_class_images(root / "test", per_class=4, seed=2)
    return root


@pytest.fixture
def tiny_train_kwargs(tmp_path: Path) -> dict:
    """Options for a few-second training run of LeNet-5 on CPU."""
    return dict(
        model="lenet5",
        img_size=32,
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_epochs=0.0,
        num_workers=0,
        progress=False,
        runs_dir=str(tmp_path / "runs"),
        val_fraction=0.25,
        hflip=0.0,
        crop_scale=0.6,
    )
