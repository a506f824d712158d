"""Distillation: the loss is the formula, a token student's two heads learn from what DeiT says, a run works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgcls import train
from imgcls.models import create_model, data_config
from imgcls.tasks.distill import DistillTask, TeacherAdapter, distillation_loss


def test_the_loss_is_the_formula() -> None:
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 4.0]])
    labels = torch.tensor([0, 2])
    alpha, tau = 0.3, 2.0
    ce = -torch.log_softmax(student, -1)[torch.arange(2), labels].mean()
    p = torch.softmax(student / tau, -1)
    q = torch.softmax(teacher / tau, -1)
    kl = (q * (q.log() - p.log())).sum(-1).mean()
    soft = distillation_loss(student, teacher, labels, mode="soft", alpha=alpha, tau=tau)
    assert soft.item() == pytest.approx(((1 - alpha) * ce + alpha * tau**2 * kl).item(), rel=1e-6)
    hard_target = teacher.argmax(-1)  # [1, 2]
    hard_ce = -torch.log_softmax(student, -1)[torch.arange(2), hard_target].mean()
    hard = distillation_loss(student, teacher, labels, mode="hard", alpha=alpha, tau=tau)
    assert hard.item() == pytest.approx(((1 - alpha) * ce + alpha * hard_ce).item(), rel=1e-6)
    # With (class, distillation) logits, each term uses its own head.
    dist = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    both = distillation_loss((student, dist), teacher, labels, mode="hard", alpha=alpha)
    dist_ce = -torch.log_softmax(dist, -1)[torch.arange(2), hard_target].mean()
    assert both.item() == pytest.approx(((1 - alpha) * ce + alpha * dist_ce).item(), rel=1e-6)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_token_student_heads_learn_from_labels_and_teacher(mode: str) -> None:
    torch.manual_seed(0)
    student = create_model("deit_tiny_distilled_patch16_224", 3, img_size=32)
    teacher_model = create_model("lenet5", 3)
    cfg = data_config(student)
    teacher = TeacherAdapter(teacher_model, cfg, data_config(teacher_model))
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])

    def head_grads(alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        task = DistillTask(student, 3, teacher=teacher, mode=mode, alpha=alpha, tau=2.0)
        task.train()
        student.zero_grad()
        out = task(images)
        assert isinstance(out, tuple) and len(out) == 2  # (class token, distillation token) logits
        distillation_loss(out, teacher(images), labels, mode=mode, alpha=alpha, tau=2.0).backward()
        return student.head.weight.grad.clone(), student.head_dist.weight.grad.clone()

    cls_grad, dist_grad = head_grads(alpha=0.0)  # labels only: the distillation head gets nothing
    assert cls_grad.abs().sum() > 0 and dist_grad.abs().sum() == 0
    cls_grad, dist_grad = head_grads(alpha=1.0)  # teacher only: the class head gets nothing
    assert cls_grad.abs().sum() == 0 and dist_grad.abs().sum() > 0
    # At inference the model averages its two heads, as DeiT does.
    student.eval()
    with torch.no_grad():
        feats = student.forward_features(images)
        expected = (student.head(feats[:, 0]) + student.head_dist(feats[:, 1])) / 2
        torch.testing.assert_close(student(images), expected)


def test_distilled_run_writes_a_student_only_package(image_folder: Path, tiny_train_kwargs: dict) -> None:
    teacher = train(
        data=str(image_folder), name="teacher", **{**tiny_train_kwargs, "model": "test_resnet", "epochs": 1}
    )
    student = train(
        data=str(image_folder),
        name="student",
        teacher=str(teacher.package_dir),
        distill="soft",
        alpha=0.7,
        tau=2.0,
        **tiny_train_kwargs,
    )
    weights = load_file(student.package_dir / "model.safetensors")
    assert not any(k.startswith("teacher") for k in weights)
    ckpt = torch.load(student.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    config = json.loads((student.package_dir / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "lenet5"
    assert config["imgcls"]["training"]["teacher"] == str(teacher.package_dir)
    with (student.run_dir / "metrics.csv").open(encoding="utf-8") as f:
        assert "teacher_agreement" in f.readline()
