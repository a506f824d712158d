"""A metrics dict shaped like `imgcls evaluate`'s, computed with scikit-learn from random predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

# UTF-8, punctuation and HTML-special names; "zebra" gets no images (an absent class).
LABELS = ["向日葵", "bird (small)", "cat", "dog & <wolf>", "truck", "zebra"]
ABSENT = "zebra"
MAX_CURVE_POINTS = 200


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    # Keep the end points; evaluation thins its curves the same way before writing JSON.
    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_CURVE_POINTS)).round().astype(int))
    return [a[idx].astype(float).tolist() for a in arrays]


def _calibration(probs: np.ndarray, targets: np.ndarray, num_bins: int = 10) -> dict:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins, ece = [], 0.0
    for i in range(num_bins):
        upper_ok = confidence <= edges[i + 1] if i == num_bins - 1 else confidence < edges[i + 1]
        inside = (confidence >= edges[i]) & upper_ok
        count = int(inside.sum())
        conf = float(confidence[inside].mean()) if count else None
        acc = float(correct[inside].mean()) if count else None
        if count:
            ece += count / len(targets) * abs(conf - acc)
        bins.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": count,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return {"ece": ece, "num_bins": num_bins, "temperature": 1.37, "bins": bins}


def make_images(folder: Path) -> list[Path]:
    """Three real PNG files (different sizes and colours) to show as mistakes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i, (size, colour) in enumerate(
        [((300, 200), (200, 60, 60)), ((64, 64), (60, 160, 60)), ((90, 400), (60, 60, 200))]
    ):
        noise = rng.integers(-30, 30, size=(size[1], size[0], 3))
        pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
        # One name with HTML-special characters, to check the path is escaped.
        path = folder / (f"向日葵 <{i}> & co.png" if i == 0 else f"mistake_{i}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def make_metrics(image_dir: Path, num_samples: int = 300, seed: int = 0) -> dict:
    """A metrics dict with every field the report reads, from random but better-than-chance predictions."""
    rng = np.random.default_rng(seed)
    num_classes = len(LABELS)
    present = [i for i, label in enumerate(LABELS) if label != ABSENT]
    # Unequal class sizes so the weighted and macro averages differ.
    targets = rng.choice(present, size=num_samples, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    strength = np.array([0.6, 2.5, 1.5, 3.0, 1.0, 0.0])[targets]  # how separable each class is
    logits = rng.normal(size=(num_samples, num_classes))
    logits[np.arange(num_samples), targets] += strength
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    preds = probs.argmax(axis=1)
    class_ids = list(range(num_classes))
    onehot = np.eye(num_classes)[targets]

    cm = confusion_matrix(targets, preds, labels=class_ids)
    row_sums = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row_sums, out=np.zeros(cm.shape), where=row_sums > 0)
    prec, rec, f1, support = precision_recall_fscore_support(targets, preds, labels=class_ids, zero_division=0)

    per_class, curves_pr, curves_roc = [], {}, {}
    for c, label in enumerate(LABELS):
        ap = auc = None
        if support[c] > 0:
            ap = float(average_precision_score(onehot[:, c], probs[:, c]))
            auc = float(roc_auc_score(onehot[:, c], probs[:, c]))
            p, r, _ = precision_recall_curve(onehot[:, c], probs[:, c])
            fpr, tpr, _ = roc_curve(onehot[:, c], probs[:, c])
            p_thin, r_thin = _thin(p, r)
            fpr_thin, tpr_thin = _thin(fpr, tpr)
            curves_pr[label] = {"precision": p_thin, "recall": r_thin}
            curves_roc[label] = {"fpr": fpr_thin, "tpr": tpr_thin}
        per_class.append(
            {
                "label": label,
                "precision": float(prec[c]),
                "recall": float(rec[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
                "ap": ap,
                "auc": auc,
            }
        )
    micro_p, micro_r, _ = precision_recall_curve(onehot.ravel(), probs.ravel())
    micro_p_thin, micro_r_thin = _thin(micro_p, micro_r)

    def averaged(kind: str) -> dict[str, float]:
        p, r, f, _ = precision_recall_fscore_support(targets, preds, labels=class_ids, average=kind, zero_division=0)
        return {"precision": float(p), "recall": float(r), "f1": float(f)}

    pairs = [
        {"true": LABELS[i], "predicted": LABELS[j], "count": int(cm[i, j]), "rate": float(cm_norm[i, j])}
        for i in range(num_classes)
        for j in range(num_classes)
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p["count"], -p["rate"]))

    images = make_images(image_dir)
    mistake_paths = [*images, image_dir / "missing.png"]
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-probs[wrong, preds[wrong]])][: len(mistake_paths)]
    mistakes = [
        {
            "path": str(path),
            "true": LABELS[targets[i]],
            "predicted": LABELS[preds[i]],
            "score": float(probs[i, preds[i]]),
        }
        for path, i in zip(mistake_paths, wrong, strict=True)
    ]
    present_aps = [row["ap"] for row in per_class if row["ap"] is not None]
    present_aucs = [row["auc"] for row in per_class if row["auc"] is not None]
    top1 = float((preds == targets).mean())
    return {
        "num_samples": num_samples,
        "top1": top1,
        "top5": float(top_k_accuracy_score(targets, probs, k=5, labels=class_ids)),
        "top_k": {"1": top1, "5": float(top_k_accuracy_score(targets, probs, k=5, labels=class_ids))},
        "balanced_accuracy": float(np.mean([rec[c] for c in present])),
        "macro": averaged("macro"),
        "micro": averaged("micro"),
        "weighted": averaged("weighted"),
        "labels": list(LABELS),
        "per_class": per_class,
        "absent_classes": [ABSENT],
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": cm_norm.tolist(),
        "ap": {
            "macro": float(np.mean(present_aps)),
            "micro": float(average_precision_score(onehot, probs, average="micro")),
        },
        "auc": {"macro": float(np.mean(present_aucs))},
        "curves": {"pr": curves_pr, "roc": curves_roc, "pr_micro": {"precision": micro_p_thin, "recall": micro_r_thin}},
        "calibration": _calibration(probs, targets),
        "confused_pairs": pairs[:10],
        "mistakes": mistakes,
        "skipped_files": [str(image_dir / "broken <1>.jpg")],
        "model": {"path": "runs/demo/model", "architecture": "resnet18"},
        "data": "data/flowers/test",
    }
