"""Which parameters form the classifier head, and freezing everything else (``--freeze-epochs``)."""

from __future__ import annotations

from torch import nn

__all__ = ["head_parameter_names", "set_backbone_trainable"]


def _head_modules(model: nn.Module) -> tuple[nn.Module, ...]:
    """The classifier module(s), from timm's ``get_classifier()``.

    DeiT distilled models return two heads (``head``, ``head_dist``). Models without ``get_classifier`` fall back to
    the module names in ``pretrained_cfg["classifier"]``.
    """
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        heads = get_classifier()
    else:
        names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if not names:
            raise TypeError(f"{type(model).__name__} has no get_classifier() and no pretrained_cfg['classifier']")
        heads = tuple(model.get_submodule(n) for n in ((names,) if isinstance(names, str) else names))
    return (heads,) if isinstance(heads, nn.Module) else tuple(heads)


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the classifier head's parameters.

    Args:
        model: A timm-contract model.

    Returns:
        For example ``{"fc.weight", "fc.bias"}`` for a ResNet; empty when the head is an identity (num_classes=0).
    """
    # Matched by identity, not by name, so wrappers that prefix names (torch.compile's "_orig_mod.") still work.
    head_ids = {id(p) for head in _head_modules(model) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head_ids}


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze every parameter except the classifier head(s), which always stay trainable.

    Only ``requires_grad`` changes: BatchNorm layers still update their running statistics in train mode. Layers
    between the backbone and the classifier (VGG's and AlexNet's hidden fully connected layers) count as backbone.

    Args:
        model: A timm-contract model.
        trainable: False to train only the head(s), True to train everything.

    Raises:
        ValueError: Freezing a model whose head has no parameters, which would leave nothing to train.
    """
    head = head_parameter_names(model)
    if not trainable and not head:
        raise ValueError(
            f"{type(model).__name__} has no classifier parameters (num_classes=0?); freezing its backbone would "
            f"leave nothing to train"
        )
    for name, param in model.named_parameters():
        param.requires_grad_(trainable or name in head)
