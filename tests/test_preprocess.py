"""The Pillow + NumPy eval preprocessing (decode workers, torch-free ONNX predictions) is timm's, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.data.preprocess import EvalPreprocess
from imgcls.data.transforms import eval_transform


@pytest.mark.parametrize(
    ("size", "crop_pct", "interpolation", "mean", "std"),
    [
        (224, 0.875, "bicubic", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        (224, 0.95, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        (32, 1.0, "bilinear", (0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)),
        (33, 0.9, "bicubic", (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)),
    ],
)
def test_eval_preprocess_equals_timms_eval_transform(
    size: int, crop_pct: float, interpolation: str, mean: tuple, std: tuple
) -> None:
    cfg = {
        "input_size": (3, size, size),
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "mean": mean,
        "std": std,
    }
    ours = EvalPreprocess.from_config(cfg)
    assert ours is not None
    timm_transform = eval_transform(cfg)
    rng = np.random.default_rng(size)
    # Down- and up-scaling, portrait and landscape, odd sides, one already at the resize size.
    shapes = [(480, 640), (641, 479), (17, 23), (size, size), (ours.resize, ours.resize + 7), (1000, 301)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
    batch = ours(images)
    assert batch.shape == (len(images), 3, size, size) and batch.dtype == np.float32
    for got, image in zip(batch, images, strict=True):
        assert torch.equal(torch.from_numpy(np.ascontiguousarray(got)), timm_transform(image))


def test_normalize_covers_every_pixel_value() -> None:
    ours = EvalPreprocess.from_config(
        {
            "input_size": (3, 4, 4),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.2, 0.5, 0.7),
            "std": (0.3, 0.25, 0.2),
        }
    )
    assert ours is not None
    pixels = np.stack(np.meshgrid(np.arange(256), np.arange(3), indexing="ij"), -1)[..., 0]  # (256, 3): every value
    batch = np.broadcast_to(pixels.astype(np.uint8)[None, :, None, :], (1, 256, 1, 3))
    expected = (batch.astype(np.float32) / np.float32(255) - np.float32(ours.mean)) / np.float32(ours.std)
    got = ours.normalize(np.ascontiguousarray(batch))
    assert np.array_equal(got, expected.transpose(0, 3, 1, 2))
    assert got.transpose(0, 2, 3, 1).flags["C_CONTIGUOUS"]  # channels_last memory, as the torch backend wants
