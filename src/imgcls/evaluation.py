"""`imgcls evaluate`: score a model package on labelled images, print a table, write JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils.data import DataLoader

from imgcls.data.datamodule import IndexedDataset, collate_skip_bad, default_num_workers
from imgcls.data.sources import DataError, Sample
from imgcls.metrics import calibration, evaluation_metrics
from imgcls.predict import Classifier


@dataclass
class Predictions:
    """What one streaming pass keeps: compact arrays, never images."""

    logits: torch.Tensor  # (N, C) float32
    targets: torch.Tensor  # (N,) int64
    paths: list[str]  # the N files that could be read, in order
    skipped: list[str]  # files that could not be read


@torch.inference_mode()
def collect_predictions(
    clf: Classifier,
    samples: Sequence[Sample],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Logits for labelled samples in one streaming pass, with a progress bar."""
    loader = DataLoader(
        IndexedDataset(samples, clf.transform, num_classes=len(clf.labels)),
        batch_size=batch_size,
        num_workers=default_num_workers() if num_workers is None else num_workers,
        collate_fn=collate_skip_bad,
    )
    logits, targets, kept = [], [], []
    columns = [TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("eval", total=len(samples))
        for batch in loader:
            if batch is None:
                continue
            images, labels, index = batch
            logits.append(clf.forward(images))
            targets.append(labels)
            kept.extend(index.tolist())
            bar.update(task, completed=max(kept) + 1)
    kept_set = set(kept)
    skipped = [str(s.path) for i, s in enumerate(samples) if i not in kept_set]
    if not logits:
        return Predictions(torch.empty(0, len(clf.labels)), torch.empty(0, dtype=torch.long), [], skipped)
    return Predictions(torch.cat(logits), torch.cat(targets), [str(samples[i].path) for i in kept], skipped)


@torch.inference_mode()
def collect_shard_predictions(
    clf: Classifier, ref: str | Path, *, split: str = "auto", batch_size: int = 64, num_workers: int | None = None
) -> Predictions:
    """Logits for a split of a sharded dataset (manifest path or URL), streamed once through DataLoader workers."""
    from imgcls.data.shards import ShardStream, load_manifest

    manifest = load_manifest(ref)
    if split == "auto":
        split = next((name for name in ("test", "val") if manifest.splits.get(name)), "all")
    names = list(manifest.splits) if split == "all" else [split]
    if any(name not in manifest.splits for name in names):
        raise DataError(f"{ref}: no {split!r} split; it has {', '.join(manifest.splits) or 'none'}")
    unknown = sorted(set(manifest.classes) - set(clf.labels))
    if unknown:
        raise DataError(f"{ref}: class {unknown[0]!r} is not one of the model's classes: {', '.join(clf.labels)}")
    to_model = torch.tensor([clf.labels.index(name) for name in manifest.classes])
    shards = [shard for name in names for shard in manifest.splits[name]]
    workers = min(len(shards), default_num_workers() if num_workers is None else num_workers)
    stream = ShardStream(shards, clf.transform, raw=True)
    logits, targets, kept, skipped = [], [], [], []
    for batch in DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=list):
        good = [item for item in batch if item.error is None]
        skipped += [item.source for item in batch if item.error is not None]
        if good:
            logits.append(clf.forward(torch.stack([item.image for item in good])))
            targets.append(to_model[torch.tensor([item.label for item in good])])
            kept += [item.source for item in good]
    if not logits:
        return Predictions(torch.empty(0, len(clf.labels)), torch.empty(0, dtype=torch.long), [], skipped)
    return Predictions(torch.cat(logits), torch.cat(targets), kept, skipped)


def most_confident_mistakes(
    probs: torch.Tensor, targets: torch.Tensor, paths: list[str], labels: list[str], limit: int = 24
) -> list[dict[str, Any]]:
    """The wrong predictions the model was surest of: where it fails worst, or where the label is wrong."""
    score, predicted = probs.max(dim=-1)
    wrong = (predicted != targets).nonzero().flatten()
    order = wrong[score[wrong].argsort(descending=True)][:limit]
    return [
        {"path": paths[i], "true": labels[targets[i]], "predicted": labels[predicted[i]], "score": score[i].item()}
        for i in order.tolist()
    ]


def write_predictions_csv(
    path: Path, probs: torch.Tensor, targets: torch.Tensor, paths: list[str], labels: list[str]
) -> None:
    """One row per image: path, true label, predicted label, its score, then the score of every class."""
    score, predicted = probs.max(dim=-1)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "true_label", "predicted_label", "score", *labels])
        for i, file in enumerate(paths):
            writer.writerow(
                [
                    file,
                    labels[targets[i]],
                    labels[predicted[i]],
                    f"{score[i].item():.6f}",
                    *(f"{v:.6f}" for v in probs[i].tolist()),
                ]
            )


def evaluate_samples(
    clf: Classifier,
    samples: Sequence[Sample],
    *,
    out: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    report: bool = True,
    mistakes: int = 24,
    data: str | None = None,
    ece_temperature: float | None = None,
    skipped: Sequence[str] = (),
    thresholds: list[float] | None = None,
) -> dict[str, Any]:
    """Every metric for samples whose labels index `clf.labels`.

    With `out`, writes `metrics.json`, `predictions.csv` and (with `report`) `report.html` plus the plots.
    Scores use the package's calibration temperature when it has one.
    """
    preds = collect_predictions(clf, samples, batch_size=batch_size, num_workers=num_workers, progress=progress)
    return score_predictions(
        clf, preds, out=out, report=report, mistakes=mistakes, data=data, ece_temperature=ece_temperature,
        skipped=skipped, thresholds=thresholds,
    )  # fmt: skip


def score_predictions(
    clf: Classifier,
    preds: Predictions,
    *,
    out: str | Path | None = None,
    report: bool = True,
    mistakes: int = 24,
    data: str | None = None,
    ece_temperature: float | None = None,
    skipped: Sequence[str] = (),
    thresholds: list[float] | None = None,
) -> dict[str, Any]:
    """The metrics (and with `out`, the files) of `evaluate_samples` for predictions already collected."""
    if len(preds.paths) == 0:
        raise DataError("no readable images to evaluate" + (f" in {data}" if data else ""))
    if clf.task == "multilabel":
        return _evaluate_multilabel(
            clf, preds, out=out, data=data, skipped=skipped, thresholds=thresholds, report=report
        )
    probs = clf.scores(preds.logits)
    metrics = evaluation_metrics(probs, preds.targets, clf.labels)
    metrics["calibration"]["temperature"] = clf.temperature if clf.temperature != 1.0 else None
    if ece_temperature is not None:  # the ECE before calibration, on the same predictions
        before = calibration((preds.logits / ece_temperature).softmax(dim=-1), preds.targets)
        metrics["calibration"]["ece_before"] = before["ece"]
    metrics["mistakes"] = most_confident_mistakes(probs, preds.targets, preds.paths, clf.labels, limit=mistakes)
    _describe(metrics, clf, preds, skipped, data)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_predictions_csv(out / "predictions.csv", probs, preds.targets, preds.paths, clf.labels)
        write_metrics(out, metrics, report=report)
    return metrics


def _describe(
    metrics: dict[str, Any], clf: Classifier, preds: Predictions, skipped: Sequence[str], data: str | None
) -> None:
    """What every metrics.json says besides the numbers: the files left out, the model and the data."""
    metrics["skipped_files"] = [*skipped, *preds.skipped]
    metrics["model"] = {"path": str(clf.package.path), "architecture": clf.package.config.get("architecture", "")}
    if data is not None:
        metrics["data"] = data


def _evaluate_multilabel(
    clf: Classifier,
    preds: Predictions,
    *,
    out: str | Path | None,
    data: str | None,
    skipped: Sequence[str],
    thresholds: list[float] | None,
    report: bool = True,
) -> dict[str, Any]:
    """Multi-label evaluation at the package's tuned thresholds: metrics.json and predictions.csv."""
    from imgcls.metrics import multilabel_metrics

    thresholds = thresholds or clf.package.info.get("thresholds")
    probs = clf.scores(preds.logits)
    metrics = multilabel_metrics(probs, preds.targets, clf.labels, thresholds)
    _describe(metrics, clf, preds, skipped, data)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cut = torch.tensor(metrics["thresholds"])
        with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "true_labels", "predicted_labels", *clf.labels])
            for i, path in enumerate(preds.paths):
                true = ";".join(lab for lab, t in zip(clf.labels, preds.targets[i].tolist(), strict=True) if t > 0.5)
                hit = ";".join(
                    lab for lab, p, c in zip(clf.labels, probs[i].tolist(), cut.tolist(), strict=True) if p >= c
                )
                writer.writerow([path, true, hit, *(f"{v:.6f}" for v in probs[i].tolist())])
        write_metrics(out, metrics, report=report)
    return metrics


def load_multilabel_samples(
    data: str | Path, labels: list[str], split: str = "auto", allow_outside_root: bool = False
) -> list[Sample]:
    """Multi-label evaluation images from a manifest: its test rows, else val, else all (or the named split)."""
    from imgcls.data.multilabel import manifest_path, read_multilabel

    names, rows = read_multilabel(data, allow_outside_root=allow_outside_root)
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise DataError(
            f"{manifest_path(data)}: label(s) {', '.join(unknown)} are not among the model's labels ({', '.join(labels)})"
        )
    if split == "auto":
        split = "test" if "test" in rows else ("val" if "val" in rows else "all")
    chosen = [r for rs in rows.values() for r in rs] if split == "all" else rows.get(split, [])
    if not chosen:
        raise DataError(f"{manifest_path(data)}: no rows in split {split!r}")
    index = {name: i for i, name in enumerate(labels)}
    return [Sample(p, tuple(index[n] for n in labs)) for p, labs in chosen]


def write_metrics(out: Path, metrics: dict[str, Any], *, report: bool = True) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    if report and metrics.get("task") == "multilabel":
        from imgcls.report_multilabel import write_multilabel_report

        write_multilabel_report(
            out,
            metrics,
            title=f"imgcls evaluation: {Path(metrics.get('model', {}).get('path', '')).parent.name or 'model'}",
        )
    elif report:
        from imgcls.report import write_report

        write_report(
            out,
            metrics,
            title=f"imgcls evaluation: {Path(metrics.get('model', {}).get('path', '')).parent.name or 'model'}",
        )


def calibration_samples(model_dir: Path, data: str | Path | None, labels: list[str]) -> list[Sample]:
    """The validation images to fit a temperature on: DATA's val/ split, else the run's own validation split."""
    from imgcls.config import TrainConfig
    from imgcls.data.sources import discover, load_labeled

    if data is not None and (Path(data) / "val").is_dir():
        return load_labeled(data, labels, split="val")
    run_config = model_dir.parent / "config.yaml"
    if run_config.is_file():
        # Re-create the run's split exactly: same data, fraction and seed.
        config = TrainConfig.load(run_config)
        splits = discover(config.data, val_fraction=config.val_fraction, seed=config.seed)
        if splits.val:
            if splits.classes != labels:
                raise DataError(f"{run_config}: the run's classes no longer match the model's labels")
            return splits.val
    raise DataError(
        f"--calibrate needs validation images: give DATA with a val/ folder, or a MODEL inside its run folder "
        f"(runs/NAME/model) so the run's own validation split can be used ({model_dir})"
    )


def calibrate(
    clf: Classifier, samples: Sequence[Sample], *, progress: bool = True, num_workers: int | None = None
) -> float:
    """Fit the softmax temperature on validation samples and store it in the model package."""
    from imgcls.metrics import fit_temperature
    from imgcls.package import set_package_info

    preds = collect_predictions(clf, samples, num_workers=num_workers, progress=progress)
    if len(preds.paths) < 2:
        raise DataError("--calibrate needs at least two readable validation images")
    temperature = fit_temperature(preds.logits, preds.targets)
    set_package_info(clf.package.path, temperature=round(temperature, 6))
    clf.temperature = round(temperature, 6)
    return clf.temperature


def evaluate(
    model: str | Path | Classifier,
    data: str | Path,
    *,
    split: str = "auto",
    out: str | Path | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    report: bool = True,
    calibrate_temperature: bool = False,
    mistakes: int = 24,
    allow_outside_root: bool = False,
) -> dict[str, Any]:
    """Evaluate a model package on labelled data.

    Args:
        model: a package folder or a loaded `Classifier`.
        data: a dataset root (its `test/`, else `val/`, else all of it), a folder of class subfolders,
            a CSV manifest or a built-in dataset name.
        split: `auto`, `train`, `val`, `test` or `all`.
        out: folder for `metrics.json`, `predictions.csv`, `report.html` and the plots.
        calibrate_temperature: first fit a temperature on validation images and store it in the package.
        mistakes: how many of the most confident mistakes to keep for the gallery.
        allow_outside_root: let a CSV manifest list images outside its own folder.
    """
    from imgcls.data.check import check_samples
    from imgcls.data.sources import load_labeled

    clf = model if isinstance(model, Classifier) else Classifier.load(model)
    from imgcls.data.shards import is_shard_ref

    if is_shard_ref(data) and clf.task != "multilabel":
        preds = collect_shard_predictions(clf, data, split=split, batch_size=batch_size, num_workers=num_workers)
        return score_predictions(clf, preds, out=out, report=report, mistakes=mistakes, data=str(data))
    if clf.task == "multilabel":
        from imgcls.data.multilabel import check_files

        samples, bad = check_files(
            load_multilabel_samples(data, clf.labels, split, allow_outside_root=allow_outside_root), progress=progress
        )
        return evaluate_samples(
            clf,
            samples,
            out=out,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            data=str(data),
            skipped=[b["path"] for b in bad],
        )
    samples = load_labeled(data, clf.labels, split=split, allow_outside_root=allow_outside_root)
    samples, bad = check_samples(samples, clf.labels, progress=progress)
    before = None
    if calibrate_temperature:
        val = calibration_samples(Path(clf.package.path), data, clf.labels)
        before = clf.temperature
        calibrate(clf, val, progress=progress, num_workers=num_workers)
    skipped = [b["path"] for b in bad]
    return evaluate_samples(
        clf,
        samples,
        out=out,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        report=report,
        mistakes=mistakes,
        data=str(data),
        ece_temperature=before,
        skipped=skipped,
    )


def print_multilabel(metrics: dict[str, Any], console: Console, *, max_classes: int = 50) -> None:
    console.print(
        f"[bold]mAP {metrics['map']['macro'] or 0:.4f}[/]   micro mAP {metrics['map']['micro'] or 0:.4f}   "
        f"macro F1 {metrics['macro']['f1']:.4f}   example F1 {metrics['example_f1']:.4f}   "
        f"Hamming loss {metrics['hamming_loss']:.4f}   subset accuracy {metrics['subset_accuracy']:.2%}   "
        f"on {metrics['num_samples']:,} images"
    )
    card = metrics["label_cardinality"]
    console.print(f"labels per image: {card['true']:.2f} true, {card['predicted']:.2f} predicted")
    table = Table(show_edge=False, header_style="bold")
    for col in ("label", "AP", "precision", "recall", "F1", "threshold", "positives"):
        table.add_column(col, justify="left" if col == "label" else "right")
    rows = sorted(metrics["per_class"], key=lambda r: (r["ap"] if r["ap"] is not None else 2, r["label"]))
    for r in rows[:max_classes]:
        ap = "—" if r["ap"] is None else f"{r['ap']:.3f}"
        table.add_row(
            r["label"],
            ap,
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['threshold']:.3f}",
            str(r["support"]),
        )
    console.print(table)


def print_metrics(metrics: dict[str, Any], console: Console | None = None, *, max_classes: int = 50) -> None:
    """A summary line and a per-class table, worst F1 first."""
    console = console or Console()
    if metrics.get("task") == "multilabel":
        print_multilabel(metrics, console, max_classes=max_classes)
        return
    console.print(
        f"[bold]top-1 {metrics['top1']:.2%}[/]   top-5 {metrics['top5']:.2%}   "
        f"balanced accuracy {metrics['balanced_accuracy']:.2%}   macro F1 {metrics['macro']['f1']:.4f}   "
        f"on {metrics['num_samples']:,} images"
    )
    extra = []
    if metrics.get("ap", {}).get("macro") is not None:
        extra.append(f"macro AP {metrics['ap']['macro']:.4f}   micro AP {metrics['ap']['micro']:.4f}")
    if metrics.get("auc", {}).get("macro") is not None:
        extra.append(f"macro AUC {metrics['auc']['macro']:.4f}")
    if "calibration" in metrics:
        extra.append(f"ECE {metrics['calibration']['ece']:.4f}")
    if extra:
        console.print("   ".join(extra))
    if metrics.get("absent_classes"):
        console.print(f"[yellow]classes absent from this data: {', '.join(metrics['absent_classes'])}[/]")
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
    if metrics.get("confused_pairs"):
        worst = ", ".join(f"{p['true']} → {p['predicted']} ({p['count']})" for p in metrics["confused_pairs"][:5])
        console.print(f"most confused: {worst}")
    if metrics.get("skipped_files"):
        console.print(f"[yellow]{len(metrics['skipped_files'])} unreadable file(s) skipped[/]")
