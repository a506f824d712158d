"""AlexNet (Krizhevsky et al., 2012) in its torchvision shape, registered with timm as ``alexnet``.

The module names match torchvision's ``AlexNet`` (``features.0`` ... ``classifier.6``), so a torchvision state dict
loads unchanged: ``create_model("alexnet", 10, weights="alexnet.safetensors")`` or, online, ``pretrained=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["AlexNet"]


class AlexNet(nn.Module):
    """AlexNet (the single-GPU "one weird trick" variant torchvision ships) with the timm model contract.

    Five convolutions (64, 192, 384, 256, 256 channels) give (B, 256, 6, 6) at 224x224; adaptive average pooling
    maps other input sizes (down to 63x63) to that 6x6 grid, then fc 4096 -> fc 4096 -> classifier.

    ``num_features`` is 256 (the channels of ``forward_features``) and ``head_hidden_size`` 4096 (what the classifier
    sees, returned by ``forward_head(x, pre_logits=True)``), the same split as timm's VGG.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Classifier outputs; 0 leaves the head as an identity (an embedding model).
            in_chans: Input image channels.
            drop_rate: Dropout before each of the two hidden fully connected layers. The paper and torchvision use
                0.5; timm models default to no dropout and so do we, pass 0.5 for the classic recipe.
            device: Where to allocate the parameters.
            dtype: Parameter dtype.
        """
        super().__init__()
        dd: dict[str, Any] = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = 256
        self.head_hidden_size = 4096

        # ReLUs are not in-place: module outputs stay intact for forward/backward hooks (CAM, feature extraction).
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2, **dd),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2, **dd),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1, **dd),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, **dd),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, **dd),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        # One Sequential with torchvision's indices keeps its state-dict keys; index 6 is the classifier.
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(256 * 6 * 6, self.head_hidden_size, **dd),
            nn.ReLU(),
            nn.Dropout(drop_rate),
            nn.Linear(self.head_hidden_size, self.head_hidden_size, **dd),
            nn.ReLU(),
            self._make_head(num_classes, **dd),
        )

    def _make_head(self, num_classes: int, **dd: Any) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final classifier layer, ``classifier.6`` (the part that fine-tuning replaces)."""
        return self.classifier[6]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a freshly initialised one.

        Args:
            num_classes: New number of outputs; 0 makes the head an identity.
            global_pool: Accepted for timm compatibility; the 6x6 pooling grid is fixed, so only None.

        Raises:
            ValueError: If a pooling type is requested.
        """
        if global_pool is not None:
            raise ValueError(f"alexnet has a fixed 6x6 pooling grid; global_pool={global_pool!r} is not supported")
        weight = self.classifier[4].weight
        self.num_classes = num_classes
        self.classifier[6] = self._make_head(num_classes, device=weight.device, dtype=weight.dtype)
        self.classifier[6].train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional features, (B, 256, H', W') — (B, 256, 6, 6) at 224x224."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, flatten, run the hidden fully connected layers and, unless ``pre_logits``, the classifier."""
        x = torch.flatten(self.avgpool(x), 1)
        *hidden, head = self.classifier
        for layer in hidden:
            x = layer(x)
        return x if pre_logits else head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, (B, num_classes)."""
        return self.forward_head(self.forward_features(x))


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (6, 6),
        # torchvision's recipe: resize to 256, centre crop 224, bilinear.
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "features.0",
        "classifier": "classifier.6",
        "paper_name": "ImageNet Classification with Deep Convolutional Neural Networks",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        # torchvision's ImageNet-1k weights (a pickled plain state dict; timm reads it with weights_only=True).
        "alexnet.tv_in1k": _cfg(
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            license="bsd-3-clause",
            origin_url="https://github.com/pytorch/vision",
        ),
    }
)


@register_model
def alexnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """AlexNet for 224x224 images (about 61M parameters with 1000 classes)."""
    return build_model_with_cfg(AlexNet, "alexnet", pretrained, **kwargs)
