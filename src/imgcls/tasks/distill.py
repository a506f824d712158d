"""Knowledge distillation: a student learns from the labels and from a frozen teacher.

- Students with a distillation token (timm's `deit_*_distilled_*`): the class-token head learns from the
  labels, the distillation-token head from the teacher (hard: the teacher's argmax; soft: KL at temperature
  tau), and inference averages both heads — DeiT's recipe (Touvron et al., 2021).
- Any other student: logit distillation, `(1 - alpha) * CE(student, labels) + alpha * tau^2 * KL(teacher || student)`
  at temperature tau (Hinton et al., 2015), or with `hard` the teacher's argmax as a second label.

The teacher sees the student's augmented batch, re-normalised and resized to its own preprocessing, so a
teacher trained with other mean/std or input size gets the inputs it expects.

With `--teacher-views N` every training image has N fixed augmented views (the data module picks one per epoch
and returns its (index, view)), so the teacher's logits for a view are computed the first time it comes up and
reused afterwards (`TeacherCache`): over E epochs the teacher runs on at most N x images images instead of E x
images, and the student sees N crops of each image instead of E (Beyer et al. 2022 call a teacher that sees the
student's exact view "consistent"; here it stays consistent, with a fixed crop budget).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgcls.tasks.multiclass import MulticlassTask

DISTILL_MODES = ("soft", "hard")
CACHE_DTYPE = torch.float16
# Per process: each DDP rank keeps its own cache. ImageNet-1k (1.28M images, 1,000 classes) fits one view.
CACHE_LIMIT_BYTES = 4 * 2**30


def teacher_cache_bytes(images: int, views: int, classes: int) -> int:
    """Memory of a full teacher cache: images x views x classes float16 logits."""
    return images * views * classes * torch.finfo(CACHE_DTYPE).bits // 8


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


class TeacherCache:
    """The teacher's logits per (image index, view), computed on first use and reused; a CPU float16 table.

    Every logit handed out has been through float16, including those just computed, so the loss sees the same
    numbers whether they came from the table or from the teacher (a resumed run starts with an empty table and
    must take the same steps). The teacher runs on batches padded to one fixed shape (`batch_size`), because a
    convolution's output for one image can differ in its last bit with the shape of the batch it is in.
    Images at `index >= images` (pseudo-labelled ones, which change between epochs) are never stored.
    """

    def __init__(self, images: int, views: int, classes: int, batch_size: int | None = None) -> None:
        if views < 1:
            raise ValueError(f"teacher_views: {views} must be at least 1 to cache")
        self.images, self.views, self.classes = images, views, classes
        self.batch_size = batch_size  # None: pad to the largest batch seen so far
        # torch.empty: the operating system hands out the pages as views are first written, not up front.
        self.logits = torch.empty(images, views, classes, dtype=CACHE_DTYPE)
        self.filled = torch.zeros(images, views, dtype=torch.bool)

    def clear(self) -> None:
        self.filled.zero_()

    def __call__(
        self, teacher: nn.Module, images: torch.Tensor, index: torch.Tensor, view: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's float32 logits for a batch (run only where needed) and a mask of the rows that were cached."""
        index, view = index.cpu().long(), view.cpu().long()
        stored = index < self.images
        hit = torch.zeros_like(stored)
        hit[stored] = self.filled[index[stored], view[stored]]
        out = torch.empty(len(index), self.classes, dtype=CACHE_DTYPE)
        out[hit] = self.logits[index[hit], view[hit]]
        miss = ~hit
        if miss.any():
            fresh = self._run(teacher, images[miss.to(images.device)])
            out[miss] = fresh
            keep = stored[miss]
            self.logits[index[miss][keep], view[miss][keep]] = fresh[keep]
            self.filled[index[miss][keep], view[miss][keep]] = True
        return out.to(images.device, torch.float32), hit

    def _run(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        self.batch_size = max(self.batch_size or 0, n)
        if n < self.batch_size:
            images = torch.cat([images, images.new_zeros((self.batch_size - n, *images.shape[1:]))])
        return teacher(images)[:n].to("cpu", CACHE_DTYPE)


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
        teacher_cache: TeacherCache | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, num_classes, **kwargs)
        if mode not in DISTILL_MODES:
            raise ValueError(f"distill: {mode!r} is not one of {', '.join(DISTILL_MODES)}")
        if teacher_cache is not None and self.mixup is not None:
            # Cached logits belong to one image; the teacher's logits on a mix are not the mix of its logits.
            raise ValueError("teacher_views: cached teacher logits cannot be used with mixup or cutmix")
        self.teacher = teacher
        # A plain attribute, not a buffer: the cache stays out of checkpoints and off the accelerator.
        self.teacher_cache = teacher_cache
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
        images, labels = batch[0], batch[1]  # then (index, view) with a teacher cache
        targets = labels
        if self.mixup is not None and images.shape[0] % 2 == 0:
            images, targets = self.mixup(images, labels)  # the teacher sees the same mixed images
        student = self(images)
        if self.teacher_cache is None:
            teacher = self.teacher(images)
        else:
            teacher, hit = self.teacher_cache(self.teacher, images, batch[2], batch[3])
            self.log("teacher_cached", hit.float().mean(), on_step=False, on_epoch=True, batch_size=len(hit))
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
