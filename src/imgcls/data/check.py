"""Decode every image of a dataset once, before training, and report what is wrong with the data.

A bad file (empty, truncated, an HTML page saved as .jpg ...) is dropped and reported, never fatal on
its own; training stops only when a class is left without usable training images. The report also
finds byte-identical files, the ones shared between splits (leakage: val accuracy measured on
training images), identical files with different labels, and class imbalance.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from imgcls.data.images import ImageLoadError, decode_image
from imgcls.data.sources import DataError, DataSplits, Sample

__all__ = ["CheckReport", "check_samples", "check_splits"]

# A warning is worth printing once the largest training class is this many times the smallest.
IMBALANCE_WARNING_RATIO = 3.0
_SHOWN = 5  # examples per kind of problem in the summary; the JSON has them all


@dataclass
class CheckReport:
    """What the data check found.

    Attributes:
        root: The dataset folder (or CSV); report paths are relative to it when they lie inside it.
        num_files: Files checked, bad ones included.
        bad_files: ``{"path", "split", "reason"}`` for each file that failed to decode; these were removed.
        class_counts: Split -> class name -> usable images, after removing the bad files.
        duplicates: Groups of two or more byte-identical usable files.
        cross_split_duplicates: Duplicate groups whose copies sit in different splits (leakage), each
            ``{"paths": [...], "splits": [...]}`` with one split per path.
        conflicting_labels: Duplicate groups whose copies carry different labels, each
            ``{"paths": [...], "labels": [...]}`` with one class name per path.
        imbalance_ratio: Images in the largest training class divided by those in the smallest.
        near_duplicates: With ``--near-duplicates``: pairs of images whose embeddings are at least the threshold
            similar (and not byte-identical), each ``{"paths": [a, b], "splits": [...], "similarity": s}``, most
            similar first.
        cross_split_near_duplicates: The near-duplicate pairs whose images sit in different splits (leakage).
        near_duplicate_check: The model and threshold used, or None when the check did not run.
    """

    root: str
    num_files: int
    bad_files: list[dict[str, str]] = field(default_factory=list)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: list[list[str]] = field(default_factory=list)
    cross_split_duplicates: list[dict[str, list[str]]] = field(default_factory=list)
    conflicting_labels: list[dict[str, list[str]]] = field(default_factory=list)
    imbalance_ratio: float = 1.0
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    cross_split_near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    near_duplicate_check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable data."""
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        """Write the report as UTF-8 JSON (class names kept readable, not escaped) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def summary(self, json_name: str | Path = "data_check.json") -> str:
        """A few lines for people: skipped files, class counts, duplicates, leakage and imbalance.

        Args:
            json_name: Where the full report is (or will be) written, to point readers at it.
        """
        lines: list[str] = []
        if self.bad_files:
            kinds = Counter(_reason_kind(bad["reason"]) for bad in self.bad_files)
            detail = ", ".join(f"{n:,} {kind}" for kind, n in kinds.most_common())
            lines.append(
                f"{len(self.bad_files):,} of {self.num_files:,} files skipped ({detail}); see {Path(json_name).name}"
            )
            lines.extend(f"  {bad['path']}: {bad['reason']}" for bad in self.bad_files[:_SHOWN])
            if len(self.bad_files) > _SHOWN:
                lines.append(f"  ... and {len(self.bad_files) - _SHOWN:,} more")
        else:
            lines.append(f"All {self.num_files:,} files decode.")

        for split, counts in self.class_counts.items():
            total = sum(counts.values())
            if len(counts) <= 12:
                per_class = ", ".join(f"{name} {n:,}" for name, n in counts.items())
            else:
                smallest = min(counts, key=counts.__getitem__)
                largest = max(counts, key=counts.__getitem__)
                per_class = (
                    f"{len(counts)} classes, {counts[smallest]:,} ({smallest}) to {counts[largest]:,} ({largest})"
                )
            lines.append(f"{split}: {total:,} images: {per_class}")

        if self.imbalance_ratio >= IMBALANCE_WARNING_RATIO:
            lines.append(
                f"Warning: classes are imbalanced; the largest training class has {self.imbalance_ratio:.1f}x the "
                "images of the smallest. Consider class weights or a balanced sampler."
            )
        if self.duplicates:
            n_files = sum(len(group) for group in self.duplicates)
            lines.append(
                f"{len(self.duplicates):,} groups of identical files ({n_files:,} files), e.g. "
                + " = ".join(self.duplicates[0][:3])
            )
        if self.cross_split_duplicates:
            lines.append(
                f"Warning: {len(self.cross_split_duplicates):,} images appear in more than one split (leakage: "
                "scores on val/test overstate accuracy); remove the copies, e.g."
            )
            lines.extend(
                "  " + " = ".join(f"{p} [{s}]" for p, s in zip(group["paths"], group["splits"], strict=True))
                for group in self.cross_split_duplicates[:_SHOWN]
            )
        if self.near_duplicate_check is not None:
            lines.extend(self._near_duplicate_summary())
        if self.conflicting_labels:
            lines.append(
                f"Warning: {len(self.conflicting_labels):,} identical images carry different labels; "
                "keep one label per image, e.g."
            )
            lines.extend(
                "  " + " = ".join(f"{p} [{label}]" for p, label in zip(group["paths"], group["labels"], strict=True))
                for group in self.conflicting_labels[:_SHOWN]
            )
        return "\n".join(lines)

    def _near_duplicate_summary(self) -> list[str]:
        settings = self.near_duplicate_check or {}
        threshold = f"cosine similarity >= {settings.get('similarity')} with {settings.get('model')}"
        if not self.near_duplicates:
            return [f"No near-duplicate images ({threshold})."]
        within = len(self.near_duplicates) - len(self.cross_split_near_duplicates)
        lines = [f"{len(self.near_duplicates):,} near-duplicate pairs ({threshold}); {within:,} within a split."]
        if self.cross_split_near_duplicates:
            lines.append(
                f"Warning: {len(self.cross_split_near_duplicates):,} near-duplicate pairs span two splits (leakage "
                "that exact hashing misses: scores on val/test overstate accuracy), e.g."
            )
        shown = self.cross_split_near_duplicates or self.near_duplicates
        lines.extend(
            "  "
            + " ~ ".join(f"{p} [{s}]" for p, s in zip(pair["paths"], pair["splits"], strict=True))
            + f" ({pair['similarity']:.3f})"
            for pair in shown[:_SHOWN]
        )
        return lines


def check_splits(
    splits: DataSplits, *, progress: bool = True, workers: int | None = None
) -> tuple[DataSplits, CheckReport]:
    """Decode every image of a dataset, drop the bad ones, and report on the rest.

    Args:
        splits: The dataset, from :func:`imgcls.data.discover`.
        progress: Show a progress bar.
        workers: Decoding threads; defaults to twice the CPU count, at most 16 (Pillow decodes and
            hashlib hashes with the GIL released, and slow disks want requests in flight).

    Returns:
        The splits without the bad files (same class list) and the report.

    Raises:
        DataError: A class has no usable training image left, or fewer than two classes do. The
            report is attached to the error as ``err.report`` so it can still be written out.
    """
    tagged = [(split, sample) for split, samples in splits.splits().items() for sample in samples]
    results = _scan([sample.path for _, sample in tagged], progress=progress, workers=workers)

    root = splits.root
    bad_files: list[dict[str, str]] = []
    kept: dict[str, list[Sample]] = defaultdict(list)
    by_digest: dict[str, list[tuple[str, Sample]]] = defaultdict(list)
    for (split, sample), (reason, digest) in zip(tagged, results, strict=True):
        if reason is not None:
            bad_files.append({"path": _display(sample.path, root), "split": split, "reason": reason})
        else:
            kept[split].append(sample)
            by_digest[digest].append((split, sample))

    clean = replace(splits, train=kept["train"], val=kept["val"], test=kept["test"])
    report = CheckReport(root=str(root), num_files=len(tagged), bad_files=bad_files, class_counts=clean.counts())
    _find_duplicates(report, by_digest, splits.classes, root)

    train_counts = report.class_counts.get("train", dict.fromkeys(splits.classes, 0))
    usable = [name for name, n in train_counts.items() if n > 0]
    if usable:
        report.imbalance_ratio = max(train_counts.values()) / max(1, min(train_counts.values()))
    empty = [name for name, n in train_counts.items() if n == 0]
    if empty or len(usable) < 2:
        raise _no_usable_images(report, splits, empty)
    return clean, report


def check_samples(
    samples: list[Sample], classes: list[str], *, progress: bool = True
) -> tuple[list[Sample], list[dict[str, str]]]:
    """Decode evaluation or prediction images; drop and return the ones that fail.

    Args:
        samples: The images to check.
        classes: The model's class names, which the labels index.
        progress: Show a progress bar.

    Returns:
        The usable samples, in the given order, and ``{"path", "split", "reason"}`` for each bad one
        (``split`` is ``"eval"``).

    Raises:
        DataError: A label does not index ``classes``.
    """
    for sample in samples:
        if not 0 <= sample.label < len(classes):
            raise DataError(f"{sample.path}: label {sample.label} is outside the {len(classes)} classes of the model")
    results = _scan([sample.path for sample in samples], progress=progress, workers=None)
    good: list[Sample] = []
    bad: list[dict[str, str]] = []
    for sample, (reason, _) in zip(samples, results, strict=True):
        if reason is None:
            good.append(sample)
        else:
            bad.append({"path": str(sample.path), "split": "eval", "reason": reason})
    return good, bad


def _scan(paths: list[Path], *, progress: bool, workers: int | None) -> list[tuple[str | None, str]]:
    """(failure reason or None, content hash) per path, in order."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_check_file, paths)
        if not progress:
            return list(results)
        return list(_with_progress(results, len(paths), "Checking images"))


def _check_file(path: Path) -> tuple[str | None, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "file not found", ""
    except OSError as err:
        return f"cannot read file ({err.strerror or err})", ""
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        decode_image(data, path).close()
    except ImageLoadError as err:
        return err.reason, digest
    return None, digest


def _with_progress(items: Iterable[Any], total: int, description: str) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # stderr: stdout stays clean for results a script may parse.
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield from bar.track(items, total=total, description=description)


def _find_duplicates(
    report: CheckReport, by_digest: dict[str, list[tuple[str, Sample]]], classes: list[str], root: Path
) -> None:
    groups = sorted(
        (sorted(members, key=lambda m: str(m[1].path)) for members in by_digest.values() if len(members) > 1),
        key=lambda members: str(members[0][1].path),
    )
    for members in groups:
        paths = [_display(sample.path, root) for _, sample in members]
        report.duplicates.append(paths)
        if len({split for split, _ in members}) > 1:
            report.cross_split_duplicates.append({"paths": paths, "splits": [split for split, _ in members]})
        if len({sample.label for _, sample in members}) > 1:
            labels = [classes[sample.label] for _, sample in members]
            report.conflicting_labels.append({"paths": paths, "labels": labels})


def _no_usable_images(report: CheckReport, splits: DataSplits, empty: list[str]) -> DataError:
    if empty:
        name = empty[0]
        label = splits.classes.index(name)
        in_class = {_display(s.path, splits.root) for s in splits.train if s.label == label}
        example = next((bad for bad in report.bad_files if bad["split"] == "train" and bad["path"] in in_class), None)
        detail = f", e.g. {example['path']}: {example['reason']}" if example else ""
        others = f" (also: {', '.join(map(repr, empty[1:]))})" if len(empty) > 1 else ""
        message = (
            f"{splits.root}: class {name!r} has no usable training images: all {len(in_class):,} failed to "
            f"load{detail}{others}; replace the files or remove the class"
        )
    else:
        message = f"{splits.root}: fewer than two classes have usable training images; a classifier needs two"
    err = DataError(message)
    err.report = report  # type: ignore[attr-defined]
    return err


def _display(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root when inside it: short in messages, portable in the JSON."""
    base = root.parent if root.is_file() else root
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


_REASON_KINDS: tuple[tuple[str, str], ...] = (
    ("empty file", "empty"),
    ("truncated", "truncated"),
    ("not an image", "not an image"),
    ("corrupt", "corrupt"),
    ("file not found", "missing"),
    ("too large", "too large"),
    ("unsupported", "unsupported format"),
)


def _reason_kind(reason: str) -> str:
    return next((kind for prefix, kind in _REASON_KINDS if reason.startswith(prefix) or prefix in reason), "unreadable")
