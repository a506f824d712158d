"""Train and eval transforms, built by timm from the model's data config (the one preprocessing truth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import create_transform

from imgcls.data.preprocess import EvalPreprocess

__all__ = ["EvalPreprocess", "eval_transform", "train_transform"]


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


def train_transform(
    data_cfg: dict[str, Any],
    *,
    hflip: float = 0.5,
    crop_scale: float = 0.08,
    auto_augment: str | None = None,
    random_erase: float = 0.0,
) -> Callable:
    """Random-resized crop and flip; auto-augment and random erasing only when asked for.

    Off by default: a policy made for photos can erase what matters in digits, text or scans. Strong augmentation is what a student learning from
    pseudo-labels needs (Noisy Student: the teacher labels clean images, the student learns from noisy ones).

    Args:
        auto_augment: timm's policy string, e.g. `rand-m9-mstd0.5-inc1` (RandAugment), `augmix-m5-w4-d2`
            or `original` (AutoAugment's ImageNet policy).
        random_erase: probability of erasing a random rectangle (filled with per-pixel noise).
    """
    return create_transform(
        input_size=tuple(data_cfg["input_size"]),
        is_training=True,
        scale=(crop_scale, 1.0),
        hflip=hflip,
        color_jitter=None,
        auto_augment=auto_augment,
        interpolation=data_cfg.get("interpolation", "bilinear"),
        mean=tuple(data_cfg["mean"]),
        std=tuple(data_cfg["std"]),
        re_prob=random_erase,
        re_mode="pixel",
    )
