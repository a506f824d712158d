"""Seeds derived from (seed, epoch, index): the same in every process, worker layout and resume.

Kept apart from the DataModule so streaming readers and DataLoader workers can seed without importing Lightning.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["mix_seed", "seed_all"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, index); stable across processes, unlike hash()."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)
