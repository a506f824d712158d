"""Shared fixtures: no network, tiny models, and a small labelled image folder made on the spot."""

from __future__ import annotations

import os

# Before huggingface_hub is imported: a hub lookup must fail in 0.1 s instead of retrying for ~46 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("IMGCLS_HOME", os.path.join(os.path.dirname(__file__), ".cache-imgcls"))
# The auto backend remembers its choice; tests keep that memory out of the user's cache.
os.environ.setdefault("IMGCLS_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache-imgcls", "cache"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from imgfactory import write_class_images  # noqa: E402


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
