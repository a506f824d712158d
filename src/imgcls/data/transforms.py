"""Train and eval transforms, built by timm from the model's data config (the one preprocessing truth)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

_PIL_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def eval_transform(data_cfg: dict[str, Any]) -> Callable:
    """Resize, centre-crop and normalise exactly as the model package says."""
    return create_transform(
        input_size=tuple(data_cfg["input_size"]),
        is_training=False,
        interpolation=data_cfg.get("interpolation", "bilinear"),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        crop_pct=data_cfg.get("crop_pct", 0.875),
        crop_mode=data_cfg.get("crop_mode", "center"),
    )


@dataclass(frozen=True)
class EvalPreprocess:
    """timm's centre-crop eval transform in two halves, with the same output to the bit.

    `pixels` (Pillow only: resize the short side, centre-crop) runs per image, in any process; `normalize`
    (`/255`, `-mean`, `/std`) runs once per batch. The split lets worker processes send uint8 pixels, a
    quarter of the bytes of float tensors, and keeps per-image torch calls (slow under thread contention)
    out of the loop. `draft_size` is how far JPEG draft decoding may shrink a photo first.
    """

    crop: int
    resize: int
    resample: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_config(cls, data_cfg: dict[str, Any]) -> EvalPreprocess | None:
        """The fast path for the common case (square input, centre crop, crop_pct <= 1); None otherwise."""
        _, height, width = data_cfg["input_size"]
        crop_pct = data_cfg.get("crop_pct") or 0.875
        interpolation = data_cfg.get("interpolation", "bilinear")
        if (
            height != width
            or data_cfg.get("crop_mode", "center") not in (None, "center")
            or crop_pct > 1
            or interpolation not in _PIL_RESAMPLE
        ):
            return None
        return cls(
            crop=height,
            resize=math.floor(height / crop_pct),
            resample=_PIL_RESAMPLE[interpolation],
            mean=tuple(data_cfg["mean"]),
            std=tuple(data_cfg["std"]),
        )

    @property
    def draft_size(self) -> tuple[int, int]:
        # 1.5x the resize, not 1x: libjpeg's DCT scaling is a crude downscale, and decoding to just the resize
        # size moved top-1 on 0.8-1.6% of photos (random-weight models, benchmarks/predict.py); with the final
        # antialiased resize doing at least a 1.5x reduction, agreement was 100%. A 12 MP photo still decodes at 1/8.
        side = (self.resize * 3 + 1) // 2
        return (side, side)

    def pixels(self, img: Image.Image) -> np.ndarray:
        """An RGB image → its (crop, crop, 3) uint8 centre crop, as torchvision's Resize + CenterCrop make it."""
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), self.resample)
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        return np.asarray(img.crop((left, top, left + self.crop, top + self.crop)))

    def normalize(self, batch: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in channels_last memory, normalised like ToTensor + Normalize."""
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.normalize(np.stack([self.pixels(img) for img in images]))


def train_transform(data_cfg: dict[str, Any], *, hflip: float = 0.5, crop_scale: float = 0.08) -> Callable:
    """Random-resized crop and flip; no colour jitter or auto-augment by default (they hurt small data)."""
    return create_transform(
        input_size=tuple(data_cfg["input_size"]),
        is_training=True,
        scale=(crop_scale, 1.0),
        hflip=hflip,
        color_jitter=None,
        auto_augment=None,
        interpolation=data_cfg.get("interpolation", "bilinear"),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        re_prob=0.0,
    )
