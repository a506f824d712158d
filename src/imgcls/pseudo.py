"""Pseudo-labels: unlabelled images join training with the label a teacher gives them, when it is confident.

The teacher is a fixed model (`--teacher`, labelled once before training) or the model being trained
(self-training: relabelled at the end of every epoch from `pseudo_start` on, used in the next epoch).
A confidence threshold keeps unsure guesses out, and `share` caps the pseudo-labelled images at a
fraction of the labelled ones, keeping the most confident.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from imgcls.data.datamodule import IndexedDataset, collate_skip_bad
from imgcls.data.images import IMAGE_EXTENSIONS
from imgcls.data.sources import DataError, Sample

log = logging.getLogger(__name__)


def unlabeled_images(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (recursively), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: --unlabeled needs a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{root}: no image files found for --unlabeled")
    return files


@torch.no_grad()
def pseudo_label(
    model: Callable[[torch.Tensor], torch.Tensor],
    files: Sequence[Path],
    transform: Callable,
    *,
    threshold: float,
    limit: int,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[list[Sample], dict[int, int]]:
    """Label `files` with `model`; keep those at or above `threshold`, `limit` at most, shared out over classes.

    Under the cap, classes take turns, each giving its most confident image not yet taken: a global
    most-confident-first cut fills up with the easiest class (on the digits, 58 of 130 were zeros).

    Returns:
        The pseudo-labelled samples and how many were kept per class index.
    """
    dataset = IndexedDataset([Sample(p, 0) for p in files], transform)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip_bad)
    scores, labels, index = [], [], []
    for batch in loader:
        if batch is None:
            continue
        images, _, idx = batch
        probs = model(images).float().softmax(dim=-1)
        score, label = probs.max(dim=-1)
        scores.append(score)
        labels.append(label)
        index.append(idx)
    if not scores:
        return [], {}
    score, label, idx = torch.cat(scores), torch.cat(labels), torch.cat(index)
    confident = (score >= threshold).nonzero().flatten()
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in confident[score[confident].argsort(descending=True)].tolist():
        by_class[int(label[i])].append(i)
    keep: list[int] = []
    for turn in itertools.zip_longest(*by_class.values()):  # turn k: each class's k-th most confident image
        keep += sorted((i for i in turn if i is not None), key=lambda i: -float(score[i]))
    keep = keep[: max(0, limit)]
    samples = [Sample(files[int(idx[i])], int(label[i])) for i in sorted(keep, key=lambda i: int(idx[i]))]
    return samples, dict(Counter(s.label for s in samples))


class SelfTraining(L.Callback):
    """Relabels the unlabelled images with the model being trained at the end of each epoch (from `start`)."""

    def __init__(
        self,
        files: Sequence[Path],
        datamodule: Any,
        *,
        threshold: float,
        share: float,
        start: int,
        classes: list[str],
        report: Callable[[str], None],
    ) -> None:
        self.files = list(files)
        self.datamodule = datamodule
        self.threshold, self.share, self.start = threshold, share, start
        self.classes = classes
        self.report = report

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 < self.start:
            return
        limit = int(self.share * len(self.datamodule.splits.train))
        was_training = pl_module.training
        pl_module.eval()
        device = pl_module.device
        samples, counts = pseudo_label(
            lambda x: pl_module(x.to(device)).cpu(),
            self.files,
            self.datamodule.eval_transform(),
            threshold=self.threshold,
            limit=limit,
        )
        pl_module.train(was_training)
        self.datamodule.extra_train = samples
        per_class = ", ".join(f"{self.classes[c]} {n}" for c, n in sorted(counts.items()))
        self.report(
            f"epoch {trainer.current_epoch}: {len(samples)} of {len(self.files)} unlabelled images pseudo-labelled "
            f"(score >= {self.threshold}) for the next epoch: {per_class or 'none'}"
        )
        pl_module.log("pseudo_labels", float(len(samples)))

    def state_dict(self) -> dict[str, Any]:
        # Saved in the checkpoint so a resumed run trains on the same pseudo-labels.
        return {"pseudo": [(str(s.path), s.label) for s in self.datamodule.extra_train]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.datamodule.extra_train = [Sample(Path(p), int(label)) for p, label in state_dict.get("pseudo", [])]
