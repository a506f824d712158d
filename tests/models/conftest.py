"""Fixtures for the model tests: no network, fixed seeds, weights made on the spot."""

from __future__ import annotations

import os

# Before huggingface_hub is imported (it reads this once): a hub lookup must fail in 0.1 s, not retry for ~46 s.
os.environ["HF_HUB_OFFLINE"] = "1"

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_and_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another test package may have imported huggingface_hub before this conftest set the variable.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
