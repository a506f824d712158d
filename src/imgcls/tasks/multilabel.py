"""Multi-label fine-tuning: independent sigmoid per class, BCE (or asymmetric loss), mAP on validation."""

from __future__ import annotations

from typing import Any

import torch
from timm.loss import AsymmetricLossMultiLabel
from torch import nn
from torchmetrics.classification import MultilabelAveragePrecision

from imgcls.tasks.multiclass import MulticlassTask

LOSSES = ("bce", "asl")


class MultilabelTask(MulticlassTask):
    """Same optimiser, schedule, freezing and seeding as multi-class; a sigmoid per class instead of a softmax."""

    monitor = "val_map"

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        loss: str = "bce",
        pos_weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, num_classes, label_smoothing=label_smoothing, **kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss: {loss!r} is not one of {', '.join(LOSSES)}")
        self.loss_name = loss
        # Positive-class weights (negatives / positives per label) make rare labels count in BCE.
        self.register_buffer("pos_weight", pos_weight, persistent=False)
        self.asl = AsymmetricLossMultiLabel(smoothing=label_smoothing, reduction="batchmean") if loss == "asl" else None
        self.val_map = MultilabelAveragePrecision(num_labels=num_classes, average="macro")

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.asl is not None:
            return self.asl(logits, targets)
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        weight = None if self.pos_weight is None else self.pos_weight.to(logits)
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        images, targets = batch
        logits = self(images)
        loss = self._loss(logits, targets)
        # Share of (image, label) decisions right at 0.5: a readable number while training.
        self._log_step(loss, ((logits.detach() > 0) == (targets > 0.5)).float().mean(), images.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is None:
            return
        images, targets = batch
        logits = self(images).float()
        self.val_map.update(logits.sigmoid(), targets.long())
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        self.log("val_loss", loss, on_epoch=True, batch_size=images.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val_map", self.val_map.compute(), prog_bar=True)
        self.val_map.reset()
