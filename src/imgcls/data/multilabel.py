"""Multi-label data: CSV manifests with several labels per image, the split, and the label statistics check.

A multi-label sample is a `Sample` whose `label` is a tuple of class indices (possibly empty: an image
with none of the labels is a valid all-negative example).

Manifests (paths relative to the CSV's folder, optional `split` column with train/val/test):
- `path,labels` with `;` between labels (`cat;dog`, or empty);
- `path,<class 1>,<class 2>,...` with one 0/1 column per class.
A folder holding `labels.csv` (e.g. a built-in multi-label dataset) is read through that file.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from imgcls.data.sources import DataError, DataSplits, Sample, check_inside_root

MANIFEST_NAME = "labels.csv"
RARE_LABEL_COUNT = 5
"""Labels with fewer training images than this are flagged as too rare to learn reliably."""
_SPLITS = {"": "train", "train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def manifest_path(ref: str | Path) -> Path:
    """The multi-label CSV for `ref`: the CSV itself, `FOLDER/labels.csv`, or a built-in dataset's."""
    from imgcls.data.builtin import BUILTIN_DATASETS, materialize

    path = Path(ref)
    if not path.exists() and str(ref) in BUILTIN_DATASETS:
        path = materialize(str(ref))
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(
            f"{ref}: multi-label data needs a CSV manifest (path,labels with ';' between labels, or one 0/1 column "
            f"per class), or a folder holding {MANIFEST_NAME}"
        )
    return path


def read_multilabel(
    ref: str | Path, *, allow_outside_root: bool = False
) -> tuple[list[str], dict[str, list[tuple[Path, tuple[str, ...]]]]]:
    """Parse a multi-label manifest into the class list and (path, label names) rows per split."""
    path = manifest_path(ref)
    base = path.parent
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: cannot read the CSV manifest ({err.strerror or err})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty manifest; the header must be path,labels or path,<class>,<class>,...")
        columns = [unicodedata.normalize("NFC", c.strip()) for c in header]
        lower = [c.lower() for c in columns]
        if "path" not in lower:
            raise DataError(f"{path}: line 1: missing column 'path' in the header ({','.join(header)})")
        path_col = lower.index("path")
        split_col = lower.index("split") if "split" in lower else None
        labels_col = lower.index("labels") if "labels" in lower else None
        class_cols = [i for i, c in enumerate(lower) if i not in (path_col, split_col, labels_col)]
        if labels_col is None and len(class_cols) < 2:
            raise DataError(
                f"{path}: line 1: need a 'labels' column (labels separated by ';') or one 0/1 column per class "
                f"(at least two); found {','.join(header)}"
            )
        rows: dict[str, list[tuple[Path, tuple[str, ...]]]] = {}
        names: set[str] = set()
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            cells = [c.strip() for c in row] + [""] * (len(columns) - len(row))
            if not cells[path_col]:
                raise DataError(f"{path}: line {line}: empty 'path'")
            split = _SPLITS.get(cells[split_col].lower() if split_col is not None else "")
            if split is None:
                raise DataError(f"{path}: line {line}: split {cells[split_col]!r} is not one of train, val, test")
            if labels_col is not None:
                labels = tuple(
                    sorted({unicodedata.normalize("NFC", x.strip()) for x in cells[labels_col].split(";") if x.strip()})
                )
            else:
                labels = []
                for i in class_cols:
                    if cells[i] not in ("0", "1", ""):
                        raise DataError(f"{path}: line {line}: column {columns[i]!r} must be 0 or 1, got {cells[i]!r}")
                    if cells[i] == "1":
                        labels.append(columns[i])
                labels = tuple(sorted(labels))
                names.update(columns[i] for i in class_cols)
            names.update(labels)
            image = Path(cells[path_col]).expanduser()
            image = image if image.is_absolute() else base / image
            check_inside_root(image, path, line, allow_outside_root)
            rows.setdefault(split, []).append((image, labels))
    if not rows:
        raise DataError(f"{path}: the manifest lists no images")
    if "train" not in rows:
        raise DataError(f"{path}: no row has split 'train'; training needs training images")
    return sorted(names), rows


def discover_multilabel(
    ref: str | Path, *, val_fraction: float = 0.1, seed: int = 0, allow_outside_root: bool = False
) -> DataSplits:
    """Multi-label splits; without val rows, a seeded random `val_fraction` of train is held out."""
    classes, rows = read_multilabel(ref, allow_outside_root=allow_outside_root)
    if len(classes) < 2:
        raise DataError(f"{manifest_path(ref)}: found {len(classes)} label(s); a classifier needs at least two")
    index = {name: i for i, name in enumerate(classes)}

    def samples(split: str) -> list[Sample]:
        return [Sample(p, tuple(index[n] for n in labels)) for p, labels in sorted(rows.get(split, []))]

    train, val, test = samples("train"), samples("val"), samples("test")
    if not val and val_fraction > 0 and len(train) > 1:
        # Random, not stratified: label sets overlap, so per-class stratification is not defined.
        order = list(range(len(train)))
        random.Random(f"{seed}:multilabel").shuffle(order)
        n_val = max(1, round(len(train) * val_fraction))
        held = set(order[:n_val])
        val = [s for i, s in enumerate(train) if i in held]
        train = [s for i, s in enumerate(train) if i not in held]
    return DataSplits(root=manifest_path(ref), classes=classes, train=train, val=val, test=test)


def label_statistics(splits: DataSplits) -> dict[str, Any]:
    """Per-label counts, co-occurrence, images without labels, and labels too rare to learn."""
    counts: dict[str, dict[str, int]] = {}
    for name, samples in splits.splits().items():
        per = Counter(i for s in samples for i in s.label)
        counts[name] = {c: per.get(i, 0) for i, c in enumerate(splits.classes)}
    pairs = Counter()
    for s in splits.train:
        for a in s.label:
            for b in s.label:
                if a < b:
                    pairs[(a, b)] += 1
    cooccurrence = [
        {"labels": [splits.classes[a], splits.classes[b]], "count": n}
        for (a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
    ]
    train_counts = counts.get("train", {})
    return {
        "label_counts": counts,
        "cooccurrence": cooccurrence,
        "images_without_labels": {
            name: sum(1 for s in samples if not s.label) for name, samples in splits.splits().items()
        },
        "rare_labels": sorted(c for c, n in train_counts.items() if n < RARE_LABEL_COUNT),
        "labels_per_image": {
            name: (sum(len(s.label) for s in samples) / len(samples) if samples else 0.0)
            for name, samples in splits.splits().items()
        },
    }


def check_multilabel(splits: DataSplits, *, progress: bool = True) -> tuple[DataSplits, dict[str, Any]]:
    """Decode every image (bad files dropped and listed, as for single-label data) and add the label statistics."""
    kept: dict[str, list[Sample]] = {}
    bad: list[dict[str, str]] = []
    for name, samples in splits.splits().items():
        good, failed = check_files(samples, progress=progress)
        kept[name] = good
        bad += [{**b, "split": name} for b in failed]
    clean = replace(splits, train=kept.get("train", []), val=kept.get("val", []), test=kept.get("test", []))
    if not clean.train:
        raise DataError(f"{splits.root}: no usable training image left after the check")
    stats = label_statistics(clean)
    absent = [c for c, n in stats["label_counts"]["train"].items() if n == 0]
    if absent:
        raise DataError(
            f"{splits.root}: label(s) {', '.join(absent)} have no usable training image; add images or drop them"
        )
    report = {
        "root": str(splits.root),
        "task": "multilabel",
        "num_files": sum(len(s) for s in splits.splits().values()),
        "bad_files": bad,
        **stats,
    }
    return clean, report


def check_files(samples: list[Sample], *, progress: bool) -> tuple[list[Sample], list[dict[str, str]]]:
    """Run the single-label file check on multi-label samples (it only needs the paths)."""
    from imgcls.data.check import check_samples

    good, bad = check_samples([Sample(s.path, 0) for s in samples], ["_"], progress=progress)
    good_paths = {s.path for s in good}
    return [s for s in samples if s.path in good_paths], bad


def summary(report: dict[str, Any]) -> str:
    """A few lines for people about a multi-label dataset."""
    lines = []
    if report["bad_files"]:
        lines.append(
            f"{len(report['bad_files'])} of {report['num_files']:,} files skipped (unreadable); see data_check.json"
        )
    else:
        lines.append(f"All {report['num_files']:,} files decode.")
    for split, counts in report["label_counts"].items():
        shown = ", ".join(f"{k} {v}" for k, v in list(counts.items())[:20])
        lines.append(f"{split}: label counts {shown}; {report['labels_per_image'][split]:.2f} labels per image")
    if report["rare_labels"]:
        lines.append(
            f"warning: labels too rare to learn (< {RARE_LABEL_COUNT} training images): {', '.join(report['rare_labels'])}"
        )
    return "\n".join(lines)
