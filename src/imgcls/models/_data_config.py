"""The preprocessing a model expects: the one truth that training, evaluation and inference all read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timm.data import resolve_input_data_config
from timm.models._input import get_model_input_config
from torch import nn

__all__ = ["data_config"]

_KEYS = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")


def data_config(model: nn.Module, **overrides: Any) -> dict[str, Any]:
    """Input size, normalisation, crop and interpolation for ``model``, with overrides applied.

    Starts from timm's resolution of the model's ``pretrained_cfg`` against its current input (its channel count and,
    for ViT-like models, the size it was built for), so a 1-channel or 32 px model reports that, not 3x224x224.

    Args:
        model: A timm-contract model.
        **overrides: Any of ``input_size`` (an int n gives (C, n, n) keeping the model's C; (H, W) or (C, H, W) also
            accepted), ``mean``, ``std``, ``crop_pct``, ``crop_mode``, ``interpolation``. None values are ignored.

    Returns:
        A dict with exactly the keys ``input_size`` (C, H, W), ``mean``, ``std``, ``crop_pct``, ``crop_mode`` and
        ``interpolation``, ready for ``timm.data.create_transform(**cfg)``.

    Raises:
        TypeError: An unknown override key.
        ValueError: A size the model cannot take (its size is fixed at creation, or its channel count differs), or
            mean/std whose length fits neither 1 nor C.
    """
    unknown = sorted(set(overrides) - set(_KEYS))
    if unknown:
        raise TypeError(f"data_config() got unknown override(s) {unknown}; expected some of {list(_KEYS)}")
    resolved = resolve_input_data_config(model)
    cfg = {key: resolved[key] for key in _KEYS}
    channels = cfg["input_size"][0]

    for key, value in overrides.items():
        if value is None:
            continue
        if key == "input_size":
            cfg[key] = _input_size(model, value, cfg["input_size"])
        elif key in ("mean", "std"):
            value = tuple(float(v) for v in (value if isinstance(value, Sequence) else (value,)))
            if len(value) not in (1, channels):
                raise ValueError(f"{key} has {len(value)} values; the model takes {channels} channel(s)")
            cfg[key] = value
        else:
            cfg[key] = value
    return cfg


def _input_size(model: nn.Module, value: int | Sequence[int], current: tuple[int, int, int]) -> tuple[int, int, int]:
    channels = current[0]
    if isinstance(value, int):
        size = (channels, value, value)
    elif len(value) == 2:
        size = (channels, *value)
    elif len(value) == 3:
        size = tuple(value)
    else:
        raise ValueError(f"input_size must be n, (H, W) or (C, H, W), got {value!r}")
    size = tuple(int(v) for v in size)
    if size[0] != channels:
        raise ValueError(f"input_size {size} has {size[0]} channel(s); the model takes {channels}")
    if size != tuple(current) and get_model_input_config(model)["fixed_input_size"]:
        raise ValueError(
            f"{type(model).__name__} takes only {current[1]}x{current[2]} inputs (its size is fixed when it is "
            f"built); create it with img_size={size[1]} instead of overriding input_size"
        )
    return size
