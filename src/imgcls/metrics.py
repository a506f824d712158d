"""Classification metrics as pure functions over tensors (checked against scikit-learn in the tests)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
    multiclass_confusion_matrix,
)

CURVE_POINTS = 200


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


def _thin(*arrays: torch.Tensor, points: int = CURVE_POINTS) -> list[list[float]]:
    """Keep at most `points` evenly spaced points (always the ends) so curves stay small in JSON."""
    n = len(arrays[0])
    if n <= points:
        return [a.tolist() for a in arrays]
    index = torch.linspace(0, n - 1, points).round().long().unique()
    return [a[index].tolist() for a in arrays]


def one_vs_rest(probs: torch.Tensor, targets: torch.Tensor, labels: list[str]) -> dict[str, Any]:
    """Per-class average precision and ROC AUC with their curves, plus micro AP.

    A class absent from `targets` has no positives: its AP and AUC are undefined (None) and it is left
    out of the macro averages, as it would be from scikit-learn's per-class scores.
    """
    probs = probs.double()
    onehot = torch.nn.functional.one_hot(targets, len(labels))
    ap: list[float | None] = []
    auc: list[float | None] = []
    pr_curves: dict[str, dict[str, list[float]]] = {}
    roc_curves: dict[str, dict[str, list[float]]] = {}
    for c, label in enumerate(labels):
        y = onehot[:, c]
        if y.sum() == 0 or y.sum() == len(y):
            ap.append(None if y.sum() == 0 else 1.0)
            auc.append(None)
            continue
        ap.append(binary_average_precision(probs[:, c], y).item())
        auc.append(binary_auroc(probs[:, c], y).item())
        precision, recall, _ = binary_precision_recall_curve(probs[:, c], y)
        fpr, tpr, _ = binary_roc(probs[:, c], y)
        p, r = _thin(precision, recall)
        f, t = _thin(fpr, tpr)
        pr_curves[label] = {"precision": p, "recall": r}
        roc_curves[label] = {"fpr": f, "tpr": t}
    present_ap = [v for v in ap if v is not None]
    present_auc = [v for v in auc if v is not None]
    flat_probs, flat_y = probs.flatten(), onehot.flatten()
    micro_ap = binary_average_precision(flat_probs, flat_y).item() if len(targets) else None
    precision, recall, _ = binary_precision_recall_curve(flat_probs, flat_y)
    p, r = _thin(precision, recall)
    return {
        "per_class_ap": ap,
        "per_class_auc": auc,
        "ap": {"macro": sum(present_ap) / len(present_ap) if present_ap else None, "micro": micro_ap},
        "auc": {"macro": sum(present_auc) / len(present_auc) if present_auc else None},
        "curves": {"pr": pr_curves, "roc": roc_curves, "pr_micro": {"precision": p, "recall": r}},
    }


def calibration(probs: torch.Tensor, targets: torch.Tensor, num_bins: int = 15) -> dict[str, Any]:
    """Expected calibration error of the top-1 confidence, with the reliability-diagram bins.

    Bins are equal-width on (0, 1]; ECE = sum over bins of |accuracy - confidence| * share of samples.
    """
    confidence, predicted = probs.double().max(dim=-1)
    correct = (predicted == targets).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)
    # bucketize with right=False puts x in bin i when edges[i-1] < x <= edges[i]: (lower, upper] bins.
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, num_bins - 1)
    bins, ece, n = [], 0.0, max(1, len(targets))
    for b in range(num_bins):
        mask = index == b
        count = int(mask.sum())
        conf = confidence[mask].mean().item() if count else None
        acc = correct[mask].mean().item() if count else None
        if count:
            ece += abs(acc - conf) * count / n
        bins.append(
            {
                "lower": edges[b].item(),
                "upper": edges[b + 1].item(),
                "count": count,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {"ece": ece, "num_bins": num_bins, "bins": bins}


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al., 2017)."""
    # Inputs may come from inference mode, which autograd refuses: work on plain copies.
    logits, targets = logits.detach().clone().double(), targets.detach().clone()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


def confused_pairs(cm: torch.Tensor, labels: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes, with their share of the true class."""
    pairs = []
    support = cm.sum(dim=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i != j and cm[i, j] > 0:
                pairs.append(
                    {
                        "true": labels[i],
                        "predicted": labels[j],
                        "count": int(cm[i, j]),
                        "rate": (cm[i, j] / support[i]).item(),
                    }
                )
    pairs.sort(key=lambda p: (-p["count"], -p["rate"], p["true"], p["predicted"]))
    return pairs[:top]


def evaluation_metrics(
    probs: torch.Tensor, targets: torch.Tensor, labels: list[str], *, top_k: int = 5, num_bins: int = 15
) -> dict[str, Any]:
    """Everything the evaluation report shows: `classification_metrics` plus AP/AUC, curves and calibration."""
    out = classification_metrics(probs, targets, labels)
    out["top_k"] = {"1": out["top1"], str(top_k): topk_accuracy(probs, targets, top_k)}
    cm = torch.tensor(out["confusion_matrix"], dtype=torch.float64)
    rows = cm.sum(dim=1, keepdim=True)
    out["confusion_matrix_normalized"] = torch.where(rows > 0, cm / rows.clamp(min=1), torch.zeros_like(cm)).tolist()
    ovr = one_vs_rest(probs, targets, labels)
    for row, ap, auc in zip(out["per_class"], ovr["per_class_ap"], ovr["per_class_auc"], strict=True):
        row["ap"], row["auc"] = ap, auc
    out["absent_classes"] = [row["label"] for row in out["per_class"] if row["support"] == 0]
    out["ap"], out["auc"], out["curves"] = ovr["ap"], ovr["auc"], ovr["curves"]
    out["calibration"] = calibration(probs, targets, num_bins)
    out["confused_pairs"] = confused_pairs(cm.long(), labels)
    return out


def tune_thresholds(
    probs: torch.Tensor, targets: torch.Tensor, *, target_precision: float | None = None
) -> list[float]:
    """Per-class decision thresholds from validation scores.

    Each class gets the threshold that maximises its F1, or with `target_precision` the lowest threshold
    (most recall) whose precision reaches the target. A class without positives keeps 0.5.
    """
    thresholds = []
    for c in range(probs.shape[1]):
        y = targets[:, c].long()
        if y.sum() == 0:
            thresholds.append(0.5)
            continue
        precision, recall, cut = binary_precision_recall_curve(probs[:, c].double(), y)
        precision, recall = precision[:-1].double(), recall[:-1].double()  # the last point has no threshold
        if target_precision is not None:
            ok = (precision >= target_precision).nonzero().flatten()
            # Thresholds rise along the curve; the first one reaching the precision keeps the most recall.
            thresholds.append(float(cut[ok[0]]) if len(ok) else float(cut[-1]))
            continue
        f1 = torch.where(
            precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(precision)
        )
        thresholds.append(float(cut[int(f1.argmax())]))
    return thresholds


def multilabel_metrics(
    probs: torch.Tensor, targets: torch.Tensor, labels: list[str], thresholds: list[float] | None = None
) -> dict[str, Any]:
    """Multi-label metrics at the given per-class thresholds (0.5 where none), matching scikit-learn.

    Args:
        probs: (N, C) sigmoid scores.
        targets: (N, C) 0/1 truth.
        labels: C class names.
        thresholds: per-class decision thresholds.
    """
    probs, truth = probs.double(), targets.long()
    cut = torch.tensor(thresholds if thresholds is not None else [0.5] * len(labels), dtype=torch.float64)
    pred = (probs >= cut).long()
    tp = (pred * truth).sum(0).double()
    predicted, support = pred.sum(0).double(), truth.sum(0).double()
    precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
    f1 = _safe_div(2 * tp, predicted + support)
    ap: list[float | None] = []
    pr_curves: dict[str, dict[str, list[float]]] = {}
    for c, label in enumerate(labels):
        if support[c] == 0:
            ap.append(None)
            continue
        ap.append(binary_average_precision(probs[:, c], truth[:, c]).item())
        p, r, _ = binary_precision_recall_curve(probs[:, c], truth[:, c])
        pp, rr = _thin(p, r)
        pr_curves[label] = {"precision": pp, "recall": rr}
    present = [v for v in ap if v is not None]
    micro_tp, micro_pred, micro_true = tp.sum(), predicted.sum(), support.sum()
    micro_p = (micro_tp / micro_pred).item() if micro_pred > 0 else 0.0
    micro_r = (micro_tp / micro_true).item() if micro_true > 0 else 0.0
    micro_f1 = (2 * micro_tp / (micro_pred + micro_true)).item() if micro_pred + micro_true > 0 else 0.0
    inter = (pred * truth).sum(1).double()
    sizes = pred.sum(1).double() + truth.sum(1).double()
    # Example-based F1: an image with no true and no predicted label is a perfect answer (1.0).
    example_f1 = torch.where(sizes > 0, 2 * inter / sizes.clamp(min=1), torch.ones_like(inter))
    n = len(truth)
    return {
        "task": "multilabel",
        "num_samples": n,
        "labels": list(labels),
        "thresholds": cut.tolist(),
        "map": {
            "macro": sum(present) / len(present) if present else None,
            "micro": binary_average_precision(probs.flatten(), truth.flatten()).item() if n else None,
        },
        "per_class": [
            {
                "label": label,
                "ap": ap[c],
                "precision": precision[c].item(),
                "recall": recall[c].item(),
                "f1": f1[c].item(),
                "support": int(support[c]),
                "threshold": cut[c].item(),
            }
            for c, label in enumerate(labels)
        ],
        "macro": {"precision": precision.mean().item(), "recall": recall.mean().item(), "f1": f1.mean().item()},
        "micro": {"precision": micro_p, "recall": micro_r, "f1": micro_f1},
        "example_f1": example_f1.mean().item() if n else 0.0,
        "hamming_loss": (pred != truth).double().mean().item() if n else 0.0,
        "subset_accuracy": (pred == truth).all(dim=1).double().mean().item() if n else 0.0,
        "label_cardinality": {
            "true": truth.sum(1).double().mean().item() if n else 0.0,
            "predicted": pred.sum(1).double().mean().item() if n else 0.0,
        },
        "absent_classes": [label for c, label in enumerate(labels) if support[c] == 0],
        "curves": {"pr": pr_curves},
    }
