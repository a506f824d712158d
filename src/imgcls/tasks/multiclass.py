"""Multi-class fine-tuning as a LightningModule: loss, optimiser, schedule, metrics."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from timm.data import Mixup
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from imgcls.data.seeding import mix_seed, seed_all
from imgcls.models import set_backbone_trainable


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_factor: float = 0.01) -> float:
    """LR factor: linear warmup from ~0 to 1, then cosine decay to `min_factor`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# Devices whose fused AdamW kernel torch has had since 2.4; elsewhere (MPS, XLA ...) torch's default is used.
_FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda"})


def fused_adamw(param_groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one pass per tensor) where all parameters are on a device that has it.

    Without `fused`, torch picks the per-tensor loop on CPU (foreach only on CUDA): about a dozen small ops per
    parameter tensor. Measured on a busy 2-core machine, one step for resnet18 took 318 ms that way and 66 ms fused
    (vit_tiny: 77 → 25 ms), and at 32 px the loop was a third of a resnet18 training step; small ops suffer most when
    cores are shared (on a quiet machine the gain was ~1% of a step at 224 px). The update is the same AdamW up to
    float rounding (1e-8 after three steps in our check), and deterministic: each element is updated on its own,
    whatever the thread count. The device is checked here because torch only checks it at the first step.
    """
    groups = [{**group, "params": list(group["params"])} for group in param_groups]  # iterators are read twice
    params = [p for group in groups for p in group["params"]]
    fused = all(p.device.type in _FUSED_ADAMW_DEVICES and torch.is_floating_point(p) for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


class MulticlassTask(L.LightningModule):
    """Fine-tunes any timm-contract model on single-label data."""

    monitor = "val_top1"  # what the best checkpoint and early stopping follow

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        label_smoothing: float = 0.1,
        class_weights: torch.Tensor | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        freeze_epochs: int = 0,
        channels_last: bool = False,
        seed: int = 0,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.freeze_epochs = freeze_epochs
        self.channels_last = channels_last
        self.seed = seed
        # Set when epochs can grow (pseudo-labels join later): the schedule then spans the largest epoch.
        self.steps_per_epoch = steps_per_epoch
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
            )
        self.label_smoothing = label_smoothing
        top_k = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        self._step_started = 0.0
        self._last_step_seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if targets.ndim == 2:  # soft targets from mixup/cutmix
            loss = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1)
            if self.class_weights is not None:
                loss = loss * (targets @ self.class_weights.to(logits))
                return loss.sum() / (targets @ self.class_weights.to(logits)).sum()
            return loss.mean()
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        return nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)

    # -- training -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self.freeze_epochs:
            set_backbone_trainable(self.model, self.current_epoch >= self.freeze_epochs)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout, drop-path and mixup draw from the global RNGs: seed them per (epoch, batch) so a
        # resumed run takes exactly the steps the uninterrupted one took.
        seed_all(mix_seed(self.seed, self.current_epoch, batch_idx, 1))
        now = time.perf_counter()
        # Throughput over the whole previous step: loading, forward, backward and optimiser step.
        self._last_step_seconds = now - self._step_started if batch_idx > 0 else 0.0
        self._step_started = now

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch failed to load; skip the step
            return None
        images, labels = batch
        targets = labels
        if self.mixup is not None and images.shape[0] % 2 == 0:  # timm's Mixup needs an even batch
            images, targets = self.mixup(images, labels)
        logits = self(images)
        loss = self._loss(logits, targets)
        self._log_step(loss, (logits.argmax(dim=-1) == labels).float().mean(), images.shape[0])
        return loss

    def _log_step(self, loss: torch.Tensor, acc: torch.Tensor, n: int) -> None:
        """What the progress bar shows for every task: loss, accuracy and images/s."""
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log("train_acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        if self._last_step_seconds > 0:
            self.log("img_s", n / self._last_step_seconds, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)

    # -- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch is None:
            return
        images, labels = batch
        logits = self(images).float()
        loss = nn.functional.cross_entropy(logits, labels)
        self.val_top1.update(logits, labels)
        self.val_top5.update(logits, labels)
        self.log("val_loss", loss, prog_bar=False, on_epoch=True, batch_size=images.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val_top1", self.val_top1.compute(), prog_bar=True)
        self.log("val_top5", self.val_top5.compute(), prog_bar=False)
        self.val_top1.reset()
        self.val_top5.reset()

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        # No weight decay on biases and norm parameters, as timm's optimiser factory does.
        decay, no_decay = [], []
        for _, param in self.model.named_parameters():
            (no_decay if param.ndim <= 1 else decay).append(param)
        optimizer = fused_adamw(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        if self.steps_per_epoch:
            steps_per_epoch = self.steps_per_epoch
            total = steps_per_epoch * max(1, self.trainer.max_epochs or 1)
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = int(round(self.warmup_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps=warmup, total_steps=total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
