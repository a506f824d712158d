"""Knowledge distillation: a student learns from the labels and from a frozen teacher.

- Students with a distillation token (timm's `deit_*_distilled_*`): the class-token head learns from the
  labels, the distillation-token head from the teacher (hard: the teacher's argmax; soft: KL at temperature
  tau), and inference averages both heads — DeiT's recipe (Touvron et al., 2021).
- Any other student: logit distillation, `(1 - alpha) * CE(student, labels) + alpha * tau^2 * KL(teacher || student)`
  at temperature tau (Hinton et al., 2015), or with `hard` the teacher's argmax as a second label.

The teacher sees the student's augmented batch, re-normalised and resized to its own preprocessing, so a
teacher trained with other mean/std or input size gets the inputs it expects.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgcls.tasks.multiclass import MulticlassTask

DISTILL_MODES = ("soft", "hard")


def soft_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), averaged over the batch."""
    log_p = torch.log_softmax(student.float() / tau, dim=-1)
    log_q = torch.log_softmax(teacher.float() / tau, dim=-1)
    # tau^2 keeps the gradient scale independent of the temperature (Hinton et al.).
    return nn.functional.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * tau * tau


def distillation_loss(
    student: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    teacher: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str = "soft",
    alpha: float = 0.5,
    tau: float = 3.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The combined loss.

    Args:
        student: one logits tensor, or (class-token, distillation-token) logits.
        teacher: the teacher's logits.
        labels: class indices (N,), or soft targets (N, C) from mixup/cutmix.
        mode: `soft` (KL at temperature tau) or `hard` (the teacher's argmax as a label).
        alpha: weight of the teacher term; the label term gets 1 - alpha.
        tau: softmax temperature of the soft term.
        label_smoothing: for the label term with class indices.
    """
    if isinstance(student, tuple):
        cls_logits, dist_logits = student
    else:
        cls_logits = dist_logits = student
    if labels.ndim == 2:  # soft targets (mixup/cutmix)
        base = torch.sum(-labels * torch.log_softmax(cls_logits.float(), dim=-1), dim=-1).mean()
    else:
        base = nn.functional.cross_entropy(cls_logits.float(), labels, label_smoothing=label_smoothing)
    if mode == "hard":
        teach = nn.functional.cross_entropy(dist_logits.float(), teacher.argmax(dim=-1))
    else:
        teach = soft_distillation_loss(dist_logits, teacher, tau)
    return (1 - alpha) * base + alpha * teach


class TeacherAdapter(nn.Module):
    """A frozen teacher fed the student's batch, converted to the teacher's own preprocessing."""

    def __init__(self, teacher: nn.Module, student_cfg: dict[str, Any], teacher_cfg: dict[str, Any]) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.register_buffer("s_mean", torch.tensor(student_cfg["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("s_std", torch.tensor(student_cfg["std"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("t_mean", torch.tensor(teacher_cfg["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("t_std", torch.tensor(teacher_cfg["std"]).view(1, -1, 1, 1), persistent=False)
        self.size = tuple(teacher_cfg["input_size"][1:])
        self.same = (
            tuple(student_cfg["mean"]) == tuple(teacher_cfg["mean"])
            and tuple(student_cfg["std"]) == tuple(teacher_cfg["std"])
            and tuple(student_cfg["input_size"]) == tuple(teacher_cfg["input_size"])
        )

    def train(self, mode: bool = True) -> TeacherAdapter:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains: no dropout, frozen batch-norm statistics
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            x = x * self.s_std + self.s_mean
            if tuple(x.shape[-2:]) != self.size:
                x = nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            x = (x - self.t_mean) / self.t_std
        return self.teacher(x).float()


class DistillTask(MulticlassTask):
    """Multi-class fine-tuning with a teacher; validation and checkpoints as for `MulticlassTask`."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        teacher: TeacherAdapter,
        mode: str = "soft",
        alpha: float = 0.5,
        tau: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, num_classes, **kwargs)
        if mode not in DISTILL_MODES:
            raise ValueError(f"distill: {mode!r} is not one of {', '.join(DISTILL_MODES)}")
        self.teacher = teacher
        self.mode, self.alpha, self.tau = mode, alpha, tau
        # DeiT's distilled models return (class, distillation) logits only with this switch on, in train mode.
        self.token_student = hasattr(model, "set_distilled_training")
        if self.token_student:
            model.set_distilled_training(True)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Checkpoints hold the student only: the teacher is an input, reloaded from its own source.
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("teacher.")}

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        images, labels = batch
        targets = labels
        if self.mixup is not None and images.shape[0] % 2 == 0:
            images, targets = self.mixup(images, labels)  # the teacher sees the same mixed images
        student = self(images)
        teacher = self.teacher(images)
        loss = distillation_loss(
            student,
            teacher,
            targets,
            mode=self.mode,
            alpha=self.alpha,
            tau=self.tau,
            label_smoothing=self.label_smoothing,
        )
        logits = (student[0] + student[1]) / 2 if isinstance(student, tuple) else student
        n = images.shape[0]
        self._log_step(loss, (logits.argmax(-1) == labels).float().mean(), n)
        agree = (logits.argmax(-1) == teacher.argmax(-1)).float().mean()
        self.log("teacher_agreement", agree, on_step=False, on_epoch=True, batch_size=n)
        return loss
