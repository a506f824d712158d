"""A CLIP image tower (open_clip) with the timm model contract, registered with timm as ``imgcls_clip``.

This is what makes a zero-shot classifier "a model package like any other": the package stores the image tower and
a linear head whose rows are the labels' text embeddings times CLIP's logit scale, so
``softmax(head(normalize(visual(x))))`` is exactly CLIP's zero-shot score, and ``timm.create_model("local-dir:PKG",
pretrained=True)`` rebuilds it (after ``import imgcls.models``) from ``config.json``'s ``model_args``. The text tower
is not needed after the labels are encoded, so it is not stored.

The same module is the backbone for embeddings (``forward_head(x, pre_logits=True)`` is the L2-normalised CLIP image
embedding) and for linear-probe / kNN heads fitted on them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["ClipImageClassifier", "clip_data_config"]

# open_clip's resize modes → timm's crop modes (crop_pct 1.0): the same pixels, so the package's preprocessing
# reproduces open_clip's own transform.
_CROP_MODES = {"shortest": "center", "squash": "squash", "longest": "border"}


class ClipImageClassifier(nn.Module):
    """open_clip's image tower, then L2 normalisation, then a linear classifier.

    Args:
        clip_cfg: ``{"embed_dim": int, "vision_cfg": {...}, "quick_gelu": bool}`` from the CLIP model's config (the
            ``model_cfg`` of ``open_clip_config.json``); JSON-serialisable, so timm records it in ``model_args``.
        num_classes: Outputs of the head; 0 gives the normalised embedding itself.
        in_chans: Must be 3 (CLIP towers are RGB); accepted because timm's factory passes it.
        drop_rate: Unused (the head is fitted or computed, not trained with dropout); accepted for the factory.
        img_size: Passed by timm for fixed-size models (from ``pretrained_cfg["input_size"]``); must be the
            tower's own size, which ``clip_cfg`` fixes.
    """

    def __init__(
        self,
        clip_cfg: dict[str, Any],
        num_classes: int = 0,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        img_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        try:
            from open_clip.model import _build_vision_tower
        except ImportError:
            raise ImportError("CLIP models need open_clip: pip install 'imgcls[clip]'") from None
        if in_chans != 3:
            raise ValueError(f"CLIP image towers take RGB images (in_chans=3), not in_chans={in_chans}")
        size = clip_cfg["vision_cfg"].get("image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if img_size is not None and tuple((img_size, img_size) if isinstance(img_size, int) else img_size) != size:
            raise ValueError(f"this CLIP image tower takes {size[0]}x{size[1]} images, not img_size={img_size}")
        self.clip_cfg = clip_cfg
        self.in_chans = 3
        embed_dim = int(clip_cfg["embed_dim"])
        # open_clip's own builder, so every tower it knows (ViT, modified ResNet, timm towers) builds the same way.
        self.visual = _build_vision_tower(embed_dim, dict(clip_cfg["vision_cfg"]), bool(clip_cfg.get("quick_gelu")))
        self.num_features = self.head_hidden_size = embed_dim
        self.num_classes = num_classes
        self.head: nn.Module = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The projected CLIP image embedding, (B, embed_dim), not yet normalised."""
        return self.visual(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # CLIP compares directions only: normalising here makes the head's rows cosine similarities.
        x = F.normalize(x, dim=-1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def clip_data_config(preprocess_cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` (size, mean, std, interpolation, resize_mode) as a timm data config."""
    size = preprocess_cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode not in _CROP_MODES:
        raise ValueError(f"open_clip resize_mode {mode!r} is not one of {', '.join(_CROP_MODES)}")
    return {
        "input_size": (3, int(height), int(width)),
        "mean": tuple(float(v) for v in preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        "std": tuple(float(v) for v in preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        "interpolation": preprocess_cfg.get("interpolation", "bicubic"),
        "crop_pct": 1.0,
        "crop_mode": _CROP_MODES[mode],
    }


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # The defaults of OpenAI's CLIP; a package overrides them with its model's own preprocessing.
    return {
        "num_classes": 0,
        "input_size": (3, 224, 224),
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "mean": (0.48145466, 0.4578275, 0.40821073),
        "std": (0.26862954, 0.26130258, 0.27577711),
        "fixed_input_size": True,
        "first_conv": "visual.conv1",
        "classifier": "head",
        "license": "see the CLIP model's license",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"imgcls_clip": _cfg()})


@register_model
def imgcls_clip(pretrained: bool = False, **kwargs: Any) -> ClipImageClassifier:
    """A CLIP image tower with a linear head; needs ``clip_cfg`` (see :class:`ClipImageClassifier`)."""
    if "clip_cfg" not in kwargs:
        raise ValueError("imgcls_clip needs clip_cfg (the CLIP model config); build it with imgcls.zeroshot")
    return build_model_with_cfg(ClipImageClassifier, "imgcls_clip", pretrained, **kwargs)
