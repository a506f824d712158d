"""A k-nearest-neighbour classifier over a frozen backbone's embeddings, registered with timm as ``imgcls_knn``.

The training embeddings and their labels are buffers, so they travel in ``model.safetensors`` like any weights and
``timm.create_model("local-dir:PKG", pretrained=True)`` rebuilds the model (backbone from ``model_args``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["KnnClassifier"]

# Scores are vote shares; logits are their logs so that softmax gives the shares back. The floor keeps the log
# finite for labels no neighbour voted for.
_VOTE_FLOOR = 1e-6


class KnnClassifier(nn.Module):
    """Cosine-similarity kNN vote over a backbone's pre-logits features.

    Args:
        backbone: timm architecture of the backbone (``resnet18``, ``imgcls_clip`` ...).
        backbone_args: its reconstruction arguments (as timm records them; ``num_classes`` is forced to 0).
        bank_size: number of stored training embeddings.
        num_features: embedding size.
        num_classes: labels.
        k: neighbours that vote (capped at ``bank_size``).
    """

    def __init__(
        self,
        backbone: str,
        backbone_args: dict[str, Any],
        bank_size: int,
        num_features: int,
        num_classes: int,
        k: int = 5,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        img_size: Any = None,
    ) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(backbone, **{**backbone_args, "num_classes": 0})
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = num_features
        self.num_classes = num_classes
        self.k = max(1, min(k, bank_size))
        # Unit rows: a dot product is the cosine similarity.
        self.register_buffer("bank", torch.zeros(bank_size, num_features))
        self.register_buffer("bank_labels", torch.zeros(bank_size, dtype=torch.long))

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        raise NotImplementedError(
            "a kNN head is not trained; fit a new one with `imgcls train --head knn`, or use --head linear-probe"
        )

    def set_bank(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the training embeddings (normalised here) and their class indices."""
        self.bank.copy_(F.normalize(embeddings.float(), dim=-1))
        self.bank_labels.copy_(labels.long())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True).flatten(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        if pre_logits:
            return x
        nearest = (x @ self.bank.T).topk(self.k, dim=-1).indices
        votes = F.one_hot(self.bank_labels[nearest], self.num_classes).float().mean(dim=1)
        return torch.log(votes + _VOTE_FLOOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # Preprocessing is the backbone's; a package overrides these placeholders with it.
    return {
        "num_classes": 0,
        "input_size": (3, 224, 224),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "fixed_input_size": False,
        "first_conv": "",
        "classifier": "",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({"imgcls_knn": _cfg()})


@register_model
def imgcls_knn(pretrained: bool = False, **kwargs: Any) -> KnnClassifier:
    """kNN over a backbone; built by ``imgcls train --head knn``."""
    return build_model_with_cfg(KnnClassifier, "imgcls_knn", pretrained, **kwargs)
