"""Pseudo-labels: unlabelled images join training through a teacher or the model itself."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from imgcls import train
from imgcls.pseudo import pseudo_label, unlabeled_images


def _split_labels(image_folder: Path, tmp_path: Path, keep: int = 4) -> tuple[Path, Path]:
    """Keep `keep` labelled training images per class; the rest become an unlabelled folder."""
    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    for class_dir in (image_folder / "train").iterdir():
        for i, path in enumerate(sorted(class_dir.glob("*.png"))):
            if i >= keep:
                shutil.move(path, unlabeled / f"{class_dir.name}-{path.name}")
    return image_folder, unlabeled


def test_self_training_adds_confident_pseudo_labels(
    image_folder: Path, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    data, unlabeled = _split_labels(image_folder, tmp_path)
    assert len(unlabeled_images(unlabeled)) == 24
    result = train(
        data=str(data),
        unlabeled=str(unlabeled),
        pseudo_threshold=0.5,
        pseudo_start=1,
        **{**tiny_train_kwargs, "epochs": 4, "val_fraction": 0.0, "lr": 1e-2},
    )
    with (result.run_dir / "metrics.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("pseudo_labels")]
    counts = [float(r["pseudo_labels"]) for r in rows]
    assert len(counts) == 4  # relabelled at the end of every epoch
    # Capped at one pseudo-label per labelled image (share 1.0): 12 labelled images.
    assert all(0 <= c <= 12 for c in counts) and max(counts) > 0


def test_a_teacher_labels_the_unlabelled_images_once(
    image_folder: Path, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    teacher = train(data=str(image_folder), name="teacher", **{**tiny_train_kwargs, "epochs": 3, "lr": 1e-2})
    assert teacher.metrics["top1"] >= 0.9
    from imgcls import Classifier

    clf = Classifier.load(teacher.package_dir, backend="torch")
    files = sorted((image_folder / "test").rglob("*.png"))
    samples, counts = pseudo_label(clf.forward, files, clf.transform, threshold=0.0, limit=100)
    assert len(samples) == len(files) == 12
    # The teacher is right about these easy colours: its pseudo-labels are the true classes.
    right = sum(clf.labels[s.label] == s.path.parent.name for s in samples)
    assert right >= 11
    strict, _ = pseudo_label(clf.forward, files, clf.transform, threshold=0.999999, limit=100)
    assert len(strict) < len(samples)
    capped, capped_counts = pseudo_label(clf.forward, files, clf.transform, threshold=0.0, limit=5)
    assert len(capped) == 5
    # a cap is shared out over the classes the teacher found, not filled by the one it is surest of
    assert max(capped_counts.values()) - min(capped_counts.values()) <= 1 and len(capped_counts) == len(counts)
