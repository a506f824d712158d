"""`imgcls evaluate`: score a model package on labelled images, print a table, write JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils.data import DataLoader

from imgcls.data.datamodule import ImageDataset, collate_skip_bad, default_num_workers
from imgcls.data.sources import Sample
from imgcls.metrics import classification_metrics
from imgcls.predict import Classifier


class _IndexedDataset(ImageDataset):
    """Also returns the index, so files that fail to load can be told apart from the rest."""

    def __getitem__(self, index: int):  # type: ignore[override]
        item = super().__getitem__(index)
        return None if item is None else (item[0], item[1], index)


@torch.inference_mode()
def predict_samples(
    clf: Classifier,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Probabilities for labelled samples in one streaming pass.

    Returns:
        probs (N_ok, C), targets (N_ok,), and the indices of the samples that could be read.
    """
    loader = DataLoader(
        _IndexedDataset(samples, clf.transform),
        batch_size=batch_size,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        collate_fn=collate_skip_bad,
    )
    probs, targets, kept = [], [], []
    columns = [TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("eval", total=len(samples))
        for batch in loader:
            if batch is None:
                continue
            images, labels, index = batch
            logits = clf.model(images.to(clf.device)).float().cpu()
            probs.append(logits.softmax(dim=-1))
            targets.append(labels)
            kept.extend(index.tolist())
            bar.update(task, advance=len(labels))
    if not probs:
        return torch.empty(0, len(clf.labels)), torch.empty(0, dtype=torch.long), []
    return torch.cat(probs), torch.cat(targets), kept


def evaluate_samples(
    clf: Classifier,
    samples: Sequence[Sample],
    *,
    out: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics for samples whose labels index `clf.labels`; writes `metrics.json` into `out` if given."""
    probs, targets, kept = predict_samples(
        clf, samples, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    if len(kept) == 0:
        raise ValueError("no readable images to evaluate")
    metrics = classification_metrics(probs, targets, clf.labels)
    kept_set = set(kept)
    metrics["skipped_files"] = [str(s.path) for i, s in enumerate(samples) if i not in kept_set]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


def evaluate(
    model: str | Path | Classifier,
    data: str | Path,
    *,
    split: str = "auto",
    out: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a model package on labelled data.

    Args:
        model: a package folder or a loaded `Classifier`.
        data: a dataset root (its `test/`, else `val/`, else all of it), a folder of class subfolders,
            a CSV manifest or a built-in dataset name.
        split: `auto`, `train`, `val` or `test`.
        out: folder for `metrics.json`.
    """
    from imgcls.data.check import check_samples
    from imgcls.data.sources import load_labeled

    clf = model if isinstance(model, Classifier) else Classifier.load(model)
    samples = load_labeled(data, clf.labels, split=split)
    samples, bad = check_samples(samples, clf.labels, progress=progress)
    metrics = evaluate_samples(
        clf, samples, out=None, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    metrics["skipped_files"] = [b["path"] for b in bad] + metrics["skipped_files"]
    metrics["skipped_reasons"] = bad
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


def print_metrics(metrics: dict[str, Any], console: Console | None = None, *, max_classes: int = 50) -> None:
    """A summary line and a per-class table, worst F1 first."""
    console = console or Console()
    console.print(
        f"[bold]top-1 {metrics['top1']:.2%}[/]   top-5 {metrics['top5']:.2%}   "
        f"balanced accuracy {metrics['balanced_accuracy']:.2%}   macro F1 {metrics['macro']['f1']:.4f}   "
        f"on {metrics['num_samples']:,} images"
    )
    table = Table(show_edge=False, header_style="bold")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    rows = sorted(metrics["per_class"], key=lambda r: (r["f1"], r["label"]))
    for row in rows[:max_classes]:
        table.add_row(
            row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    if len(rows) > max_classes:
        table.add_row(f"… {len(rows) - max_classes} more in metrics.json", "", "", "", "")
    console.print(table)
    labels = metrics["labels"]
    if len(labels) <= 20:
        cm = Table(title="confusion matrix (rows: true, columns: predicted)", show_edge=False, header_style="bold")
        cm.add_column("")
        for label in labels:
            cm.add_column(label, justify="right")
        for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
            cm.add_row(
                label,
                *[f"[bold]{v}[/]" if j == labels.index(label) else (str(v) if v else "·") for j, v in enumerate(row)],
            )
        console.print(cm)
    if metrics.get("skipped_files"):
        console.print(f"[yellow]{len(metrics['skipped_files'])} unreadable file(s) skipped[/]")
