"""Few-shot heads: `imgcls train --head linear-probe|knn` on a frozen backbone's embeddings, in seconds.

The backbone (a timm model, a model package or a CLIP image tower) embeds every training image once; scikit-learn
fits a logistic regression on them, or a kNN vote stores them. Either way the result is an ordinary model package
in an ordinary run folder (config.yaml, data_check.json, metrics.csv, model/, eval/):

- linear-probe: the backbone with a real `nn.Linear` head holding the fitted coefficients (the feature
  standardisation folded in), so it exports to ONNX and serves like a fine-tuned model;
- knn: `imgcls_knn`, the backbone plus the training embeddings and labels as buffers; scores are the shares of the
  k most cosine-similar training images' votes.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch

from imgcls.config import ConfigError, TrainConfig
from imgcls.data.sources import DataSplits
from imgcls.embeddings import Backbone, embed_samples, load_backbone

__all__ = ["HEADS", "fit_head", "knn_model", "linear_probe_model"]

HEADS = ("finetune", "linear-probe", "knn")


def linear_probe_model(
    backbone: Backbone, embeddings: torch.Tensor, targets: torch.Tensor, num_classes: int, *, c: float = 1.0
) -> torch.nn.Module:
    """The backbone with a linear head fitted by scikit-learn's LogisticRegression on standardised embeddings.

    The standardisation is folded into the head (w/s, b - w·mean/s), so the model needs nothing but itself.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = embeddings.double().numpy()
    y = targets.numpy()
    scaler = StandardScaler().fit(x)
    probe = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), y)
    coef = torch.from_numpy(probe.coef_) / torch.from_numpy(scaler.scale_)
    bias = torch.from_numpy(probe.intercept_) - coef @ torch.from_numpy(scaler.mean_)
    if coef.shape[0] == 1:  # two classes: sklearn keeps one logit; softmax over [0, z] is its sigmoid
        coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(bias), bias])
    if list(probe.classes_) != list(range(num_classes)):
        raise ConfigError("linear-probe: every class needs at least one readable training image")
    model = backbone.model
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear) or head.in_features != embeddings.shape[1]:
        raise ConfigError(
            f"linear-probe: {backbone.architecture}'s classifier is {type(head).__name__}, not a linear layer over "
            f"its {embeddings.shape[1]} pre-logits features; use --head knn"
        )
    with torch.no_grad():
        head.weight.copy_(coef.float())
        head.bias.copy_(bias.float())
    return model.eval()


def knn_model(
    backbone: Backbone, embeddings: torch.Tensor, targets: torch.Tensor, num_classes: int, *, k: int = 5
) -> torch.nn.Module:
    """An `imgcls_knn` model: the backbone (without its head) and the training embeddings as buffers."""
    import timm
    from timm.models import get_model_args

    import imgcls.models  # noqa: F401  (registers imgcls_knn)

    source = backbone.model
    source.reset_classifier(0)
    model = timm.create_model(
        "imgcls_knn",
        backbone=backbone.architecture,
        backbone_args=get_model_args(source),
        bank_size=int(embeddings.shape[0]),
        num_features=int(embeddings.shape[1]),
        num_classes=num_classes,
        k=k,
        pretrained_cfg_overlay=dict(backbone.data_config),
    )
    model.backbone.load_state_dict(source.state_dict())
    model.set_bank(embeddings, targets)
    return model.eval()


def fit_head(config: TrainConfig, splits: DataSplits, run_dir: Path) -> Any:
    """Embed the training images once, fit the head, save and evaluate the package. Returns a `RunResult`."""
    from imgcls.evaluation import evaluate_samples
    from imgcls.models import data_config
    from imgcls.package import save_package
    from imgcls.predict import Classifier
    from imgcls.training import RunResult, console

    if config.head not in HEADS[1:]:
        raise ConfigError(f"head: {config.head!r} is not one of {', '.join(HEADS[1:])}")
    started = time.perf_counter()
    # Embedding is the only heavy step: run it on the GPU when training would; fitting and saving happen on the CPU.
    use_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    backbone = load_backbone(
        config.model,
        pretrained=config.pretrained,
        weights=config.weights,
        img_size=config.img_size,
        device="cuda" if use_gpu else "cpu",
    )
    if backbone.kind == "timm" and not (config.pretrained or config.weights):
        console.print(
            f"[yellow]warning:[/] {config.model} has random weights (no --pretrained or --weights): its embeddings "
            "carry little meaning, so expect a weak head"
        )
    if backbone.kind == "timm":
        backbone.data_config = data_config(
            backbone.model,
            input_size=config.img_size,
            mean=config.mean,
            std=config.std,
            crop_pct=config.crop_pct,
            interpolation=config.interpolation,
        )
    labels = splits.classes
    common = dict(batch_size=config.batch_size, num_workers=config.num_workers, progress=config.progress)
    console.print(
        f"fitting a {config.head} head on {backbone.architecture} embeddings of {len(splits.train):,} images "
        f"({len(labels)} classes); run folder {run_dir}"
    )
    train_emb, kept = embed_samples(backbone, splits.train, description="embedding train", **common)
    backbone.model.cpu()
    targets = torch.tensor([splits.train[i].label for i in kept])
    missing = sorted(set(range(len(labels))) - set(targets.tolist()))
    if missing:
        raise ConfigError(f"{config.head}: class {labels[missing[0]]!r} has no readable training image to fit on")
    if config.head == "linear-probe":
        model = linear_probe_model(backbone, train_emb, targets, len(labels), c=config.probe_c)
    else:
        model = knn_model(backbone, train_emb, targets, len(labels), k=config.knn_k)
    fit_seconds = time.perf_counter() - started

    info: dict[str, Any] = {
        "training": {
            "data": str(config.data),
            "init": f"frozen {config.model} embeddings, {config.head} head",
            "head": config.head,
            "train_images": len(kept),
            "val_images": len(splits.val),
            "epochs": 0,
            "seconds": round(fit_seconds, 1),
        }
    }
    package_dir = save_package(model, run_dir / "model", labels=labels, data_config=backbone.data_config, info=info)
    clf = Classifier.load(package_dir, backend="torch")
    val_top1 = None
    if splits.val:
        val = evaluate_samples(clf, splits.val, report=False, num_workers=config.num_workers, progress=False)
        val_top1 = val["top1"]
    _write_metrics_csv(run_dir, config.head, len(kept), val_top1, fit_seconds)

    eval_split = "test" if splits.test else ("val" if splits.val else "train")
    metrics = evaluate_samples(
        clf, getattr(splits, eval_split), out=run_dir / "eval", num_workers=config.num_workers, progress=config.progress
    )
    metrics["split"] = eval_split
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    info["evaluation"] = {
        "split": eval_split,
        "images": metrics["num_samples"],
        "top1": round(metrics["top1"], 6),
        "top5": round(metrics["top5"], 6),
        "macro_f1": round(metrics["macro"]["f1"], 6),
    }
    save_package(model, package_dir, labels=labels, data_config=backbone.data_config, info=info)
    return RunResult(run_dir=run_dir, package_dir=package_dir, metrics=metrics, eval_split=eval_split)


def _write_metrics_csv(run_dir: Path, head: str, images: int, val_top1: float | None, seconds: float) -> None:
    # One row, so a few-shot run folder has the same files as a fine-tuning one.
    with (run_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["epoch", "head", "train_images", "val_top1", "seconds"])
        writer.writerow([0, head, images, "" if val_top1 is None else f"{val_top1:.6f}", f"{seconds:.2f}"])
