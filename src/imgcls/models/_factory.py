"""Model factory over timm: architectures by name, pretrained weights from the hub or from a local file."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import (
    get_pretrained_cfg_value,
    is_model,
    is_model_pretrained,
    load_state_dict,
    parse_model_name,
)
from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

from imgcls.errors import WeightsError

__all__ = ["WeightsError", "create_model", "list_models"]

_logger = logging.getLogger(__name__)

# Looked for, in this order, when --weights names a folder (timm's save_for_hf writes the first).
_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth")
# Read with torch.load(weights_only=True): tensors and plain containers only, never arbitrary objects.
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar", ".ckpt")
_MAX_LISTED_KEYS = 5


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Model names timm can build, ours (``lenet5``, ``alexnet``) included.

    Args:
        pattern: Shell-style wildcard, e.g. ``"resnet*"``.
        pretrained: Only names with published weights, listed with their tags (``resnet18.a1_in1k``).

    Returns:
        Sorted model names.
    """
    return list(timm.list_models(pattern, pretrained=pretrained))


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    img_size: int | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build a classifier by timm name, with random, published or local weights.

    When weights are loaded and their class count differs from ``num_classes``, the classifier head(s) are replaced
    with freshly initialised ones and every other tensor comes from the weights.

    Args:
        name: A timm model name (``resnet18``, ``vit_tiny_patch16_224.augreg_in21k``, ``lenet5``) or a
            ``hf-hub:org/name`` / ``local-dir:PATH`` id.
        num_classes: Outputs of the classifier.
        pretrained: Load the published weights for ``name`` exactly as ``timm.create_model(pretrained=True)`` does
            (Hugging Face Hub or URL, cached).
        weights: A local ``.safetensors`` file, a timm/Hugging Face model folder holding ``model.safetensors``, or a
            ``.pth``/``.bin`` state dict (read with ``torch.load(weights_only=True)``; objects are never unpickled).
            Takes precedence over ``pretrained``.
        in_chans: Input image channels; pretrained RGB stems are adapted by timm. For ``hf-hub:``/``local-dir:``
            ids the saved channel count is kept unless another than 3 is asked for.
        drop_rate: Dropout before the classifier.
        img_size: Input size. Models whose size is fixed at construction (ViT, DeiT, Swin) are built for it; for the
            others it is only recorded as the preprocessing size. Either way ``data_config(model)`` reports it.
        **kwargs: Passed on to ``timm.create_model`` (``drop_path_rate``, ``global_pool``, ``cache_dir`` ...).

    Returns:
        The model, with ``pretrained_cfg`` describing its input (size, channels, mean/std, crop).

    Raises:
        WeightsError: Weights could not be fetched (offline: the message suggests ``--weights FILE``), the model has
            none, the file is not a plain state dict, or it does not fit the architecture (a few keys are listed).
        FileNotFoundError: ``weights`` does not exist.
        RuntimeError: ``name`` is not a model timm knows.
    """
    source, model_id = parse_model_name(name)
    if source is None and not is_model(model_id):
        # Checked first: the cfg lookups below would fail with less helpful messages.
        raise RuntimeError(f"Unknown model ({name}); imgcls.models.list_models() lists the names")
    build_kwargs: dict[str, Any] = dict(kwargs, in_chans=in_chans, drop_rate=drop_rate)
    if source is not None and in_chans == 3:
        # A saved model knows its channel count (config.json model_args); passing the default 3 would make timm
        # silently adapt a grayscale model's stem to RGB.
        del build_kwargs["in_chans"]
    if img_size is not None and _takes_img_size(name):
        build_kwargs["img_size"] = img_size

    if weights is not None:
        model = _create_from_file(name, num_classes, Path(weights), build_kwargs)
    elif pretrained:
        model = _create_pretrained(name, num_classes, build_kwargs)
    else:
        if source is not None:
            # timm builds only the architecture here; easy to mistake for loading the model.
            _logger.warning("%s: building the architecture with random weights (pretrained=False)", name)
        try:
            model = timm.create_model(name, num_classes=num_classes, **build_kwargs)
        except OSError as e:  # an hf-hub: id whose config.json cannot be fetched
            raise _fetch_error(name, e) from e

    _record_input(model, getattr(model, "in_chans", in_chans), img_size)
    return model


def _takes_img_size(name: str) -> bool:
    """Whether the model fixes its input size at construction and so takes an ``img_size`` argument.

    That is timm's own rule (``fixed_input_size`` in the pretrained cfg, see ``_update_default_model_kwargs``);
    convolutional models take any size and would reject the argument.
    """
    source, model_id = parse_model_name(name)
    if source is None:
        return bool(get_pretrained_cfg_value(model_id, "fixed_input_size"))
    try:
        if source == "hf-hub":
            cfg, _, model_args = load_model_config_from_hf(model_id)
        else:
            cfg, _, model_args = load_model_config_from_path(model_id)
    except OSError as e:
        raise _fetch_error(name, e) from e
    return bool(cfg.get("fixed_input_size")) or "img_size" in model_args


def _create_pretrained(name: str, num_classes: int, build_kwargs: dict[str, Any]) -> torch.nn.Module:
    source, model_id = parse_model_name(name)
    if source is None and not is_model_pretrained(model_id):
        raise WeightsError(
            f"{name}: timm has no published weights for this model; train it from scratch (pretrained=False) "
            f"or pass --weights FILE (a .safetensors file or a model folder)"
        )
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **build_kwargs)
    except OSError as e:
        raise _fetch_error(name, e) from e


def _fetch_error(name: str, error: OSError) -> WeightsError:
    """The error for weights or a config that could not be read; OSError covers the hub's LocalEntryNotFoundError
    and OfflineModeIsEnabled, urllib's URLError and HTTP errors, and missing local files."""
    return WeightsError(
        f"{name}: could not fetch pretrained weights or config ({type(error).__name__}: {error}). Without network "
        f"access, download the weights on another machine and pass --weights FILE (a .safetensors file or a timm "
        f"model folder)"
    )


def _create_from_file(name: str, num_classes: int, path: Path, build_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Load a local state dict through timm's pretrained path, then give the model a head for ``num_classes``.

    timm's ``pretrained_cfg_overlay=dict(file=...)`` reads the file with the same loader as below and runs the
    model's own checkpoint filter (e.g. ViT position-embedding resampling) and input-stem adaptation. Its head
    handling compares ``num_classes`` with the cfg's class count, not the file's, and loads non-strictly when they
    differ, so a backbone that does not fit would be silently left random. We therefore build the model with the
    file's class count (strict load: every key must fit) and replace the head afterwards with ``reset_classifier``.
    """
    source, model_id = parse_model_name(name)
    if source is not None:
        raise ValueError(f"{name}: --weights needs a plain model name, not a {source}: id (which carries weights)")
    file = _resolve_weights_file(path)
    state_dict = _read_state_dict(file)
    file_classes = _head_size(model_id, state_dict)
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    del state_dict  # timm reads the file again; do not hold two copies of the weights

    overlay = dict(build_kwargs.pop("pretrained_cfg_overlay", None) or {}, file=str(file), num_classes=file_classes)
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=file_classes, **build_kwargs
        )
    except RuntimeError as e:
        detail = _describe_mismatch(name, file_classes, shapes, build_kwargs, e)
        raise WeightsError(f"{file}: does not fit {name}: {detail}") from e
    if file_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def _resolve_weights_file(path: Path) -> Path:
    if path.is_dir():
        for filename in _FOLDER_WEIGHTS:
            if (path / filename).is_file():
                return path / filename
        raise FileNotFoundError(f"{path}: no weights in this folder (looked for {', '.join(_FOLDER_WEIGHTS)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if not (path.name.endswith(".safetensors") or path.name.endswith(_PICKLE_SUFFIXES)):
        raise WeightsError(f"{path}: unknown weights format; expected .safetensors (or a .pth/.bin state dict)")
    return path


def _read_state_dict(file: Path) -> dict[str, Any]:
    """Read a state dict the way timm will (safetensors, or torch.load with weights_only=True)."""
    try:
        # timm's loader: unwraps {"state_dict": ...}/{"model": ...} checkpoints and strips a DDP "module." prefix.
        return load_state_dict(str(file), weights_only=True)
    except Exception as e:  # safetensors and torch raise several unrelated types for a refused or damaged file
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        # torch raises UnpicklingError or (2.14) RuntimeError naming weights_only when a pickle holds objects.
        if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
            raise WeightsError(
                f"{file}: refused to load: the pickle holds more than tensors, and unpickling it could run code "
                f"(torch.load with weights_only=True: {first_line}). Save a plain state dict, preferably with "
                f"safetensors.torch.save_file"
            ) from e
        raise WeightsError(f"{file}: not a readable weights file ({type(e).__name__}: {first_line})") from e


def _head_size(model_id: str, state_dict: dict[str, Any]) -> int:
    """Classes of the file's classifier, 0 when it has none (a headless backbone)."""
    classifier = get_pretrained_cfg_value(model_id, "classifier")
    if classifier is None:
        raise WeightsError(f"{model_id}: timm's pretrained cfg names no classifier, so its head cannot be replaced")
    first = classifier if isinstance(classifier, str) else classifier[0]
    weight = state_dict.get(f"{first}.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else 0


def _describe_mismatch(
    name: str, num_classes: int, shapes: dict[str, tuple[int, ...]], build_kwargs: dict[str, Any], error: Exception
) -> str:
    """List a few keys that differ between the file and the architecture; fall back to torch's own message."""
    fallback = str(error).splitlines()[0]
    try:
        expected = timm.create_model(name, num_classes=num_classes, **build_kwargs).state_dict()
    except Exception:  # the diagnosis must not hide the original error
        return fallback
    classifier = get_pretrained_cfg_value(parse_model_name(name)[1], "classifier") or ()
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    expected = {k: tuple(v.shape) for k, v in expected.items() if not k.startswith(heads)}
    body = {k: v for k, v in shapes.items() if not k.startswith(heads)}

    missing = [k for k in expected if k not in body]
    unexpected = [k for k in body if k not in expected]
    resized = [f"{k} {body[k]} vs {expected[k]}" for k in expected if k in body and body[k] != expected[k]]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs model)", resized)):
        if keys:
            more = f" (+{len(keys) - _MAX_LISTED_KEYS} more)" if len(keys) > _MAX_LISTED_KEYS else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:_MAX_LISTED_KEYS])}{more}")
    return "; ".join(parts) if parts else fallback


def _record_input(model: torch.nn.Module, in_chans: int, img_size: int | None) -> None:
    """Make the model's ``pretrained_cfg`` describe the input it is built for.

    timm keeps the source checkpoint's cfg (3x224x224 RGB), which ``timm.data.resolve_data_config(model=...)`` then
    reports even for a 1-channel or 64 px model. Done after the weights are loaded, because timm's loader reads the
    source channel count and size from the same cfg to adapt the stem and position embeddings.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    channels, height, width = cfg.get("input_size", (3, 224, 224))
    new_size = (in_chans, *((img_size, img_size) if img_size is not None else (height, width)))
    if new_size == (channels, height, width):
        return
    cfg["input_size"] = new_size
    if new_size[1:] != (height, width):
        # These describe the source resolution; stale values would mislead resizing at test time.
        for key in ("test_input_size", "pool_size", "test_pool_size"):
            cfg.pop(key, None)
    for key in ("mean", "std"):
        value = tuple(cfg.get(key) or ())
        if value and len(value) not in (1, in_chans):
            # Same rule as timm.data.resolve_input_data_config: one averaged value for other channel counts.
            cfg[key] = (sum(value) / len(value),)
    model.pretrained_cfg = model.default_cfg = cfg
