"""Seeds derived from (seed, epoch, index): the same in every process, worker layout and resume.

Kept apart from the DataModule so streaming readers and DataLoader workers can seed without importing Lightning.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["mix_seed", "pick_view", "seed_all", "seed_sample"]

_VIEW_SALT = 0x76696577  # "view"


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, index); stable across processes, unlike hash()."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def pick_view(seed: int, epoch: int, index: int, views: int) -> int:
    """Which of its `views` fixed augmented views image `index` gets in `epoch`.

    Each image steps through its views from its own seeded offset, so any `views` consecutive epochs show it every
    view once: over E epochs the teacher meets min(E, views) views of each image, never more.
    """
    # A salt keeps the offset apart from the sampler's (seed, epoch) and the augmentation's (seed, epoch, index).
    return (epoch + mix_seed(seed, index, _VIEW_SALT)) % views


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, accelerators' included (dropout on a GPU draws there)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def seed_sample(seed: int) -> None:
    """Seed what a CPU-side transform draws from (Python, NumPy, torch's CPU generator), once per sample.

    Not `seed_all`: `torch.manual_seed` also queues a seed for every lazily initialised accelerator (CUDA, XPU,
    MTIA) and records a formatted stack trace for each, 1-4 ms per call on a CUDA build of torch — half the
    loading time of a 32 px image. Data loading never touches an accelerator's generator.
    """
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.default_generator.manual_seed(seed)
