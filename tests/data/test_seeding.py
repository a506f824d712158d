"""Per-sample seeding: the cheap CPU-only seeding draws exactly what full seeding draws."""

from __future__ import annotations

import random

import numpy as np
import torch

from imgcls.data.seeding import mix_seed, seed_all, seed_sample


def draws() -> tuple[float, float, list[float]]:
    # One draw from each generator CPU augmentation uses (timm's crop: random; flips: torch; some: numpy).
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_sample_leaves_the_cpu_generators_as_seed_all_does() -> None:
    for seed in (0, 1, mix_seed(7, 3, 12345), 2**63 - 1):
        seed_all(seed)
        expected = draws()
        torch.rand(5)  # whatever ran before must not matter
        seed_sample(seed)
        assert draws() == expected
