"""Classification metrics as pure functions over tensors (checked against scikit-learn in the tests)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix


def topk_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of samples whose true class is among the k highest scores."""
    k = min(k, probs.shape[-1])
    top = probs.topk(k, dim=-1).indices
    return (top == targets.unsqueeze(-1)).any(dim=-1).float().mean().item()


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows = true class, columns = predicted class."""
    return multiclass_confusion_matrix(preds, targets, num_classes=num_classes).long()


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # scikit-learn's zero_division=0: a class never predicted (or absent) scores 0, not NaN.
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def per_class_prf(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    predicted = cm.sum(dim=0)
    support = cm.sum(dim=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, predicted + support)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    """Everything `imgcls evaluate` reports, as plain Python numbers ready for JSON.

    Args:
        probs: (N, C) scores (probabilities or logits; only their order matters).
        targets: (N,) true class indices.
        labels: C class names.
    """
    num_classes = len(labels)
    preds = probs.argmax(dim=-1)
    cm = confusion_matrix(preds, targets, num_classes)
    prf = per_class_prf(cm)
    support = prf["support"]
    total = support.sum()
    present = support > 0
    tp = cm.diag().double()
    micro = (tp.sum() / total).item() if total > 0 else 0.0

    def macro(values: torch.Tensor) -> float:
        # scikit-learn averages over every label it is given, including absent ones.
        return values.mean().item()

    def weighted(values: torch.Tensor) -> float:
        return (values * support).sum().item() / total.item() if total > 0 else 0.0

    per_class = [
        {
            "label": label,
            "precision": prf["precision"][i].item(),
            "recall": prf["recall"][i].item(),
            "f1": prf["f1"][i].item(),
            "support": int(support[i].item()),
        }
        for i, label in enumerate(labels)
    ]
    return {
        "num_samples": int(total.item()),
        "top1": topk_accuracy(probs, targets, 1),
        "top5": topk_accuracy(probs, targets, 5),
        "balanced_accuracy": prf["recall"][present].mean().item() if present.any() else 0.0,
        "macro": {k: macro(prf[k]) for k in ("precision", "recall", "f1")},
        "micro": {"precision": micro, "recall": micro, "f1": micro},
        "weighted": {k: weighted(prf[k]) for k in ("precision", "recall", "f1")},
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
    }
