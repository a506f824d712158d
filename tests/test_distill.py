"""Distillation: the loss is the formula, a token student's two heads learn from what DeiT says, a run works;
the teacher cache (`teacher_views`) runs the teacher once per view and changes nothing else."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from torch import nn

from imgcls import TrainConfig, train
from imgcls.config import ConfigError
from imgcls.data.datamodule import ImageDataset
from imgcls.data.seeding import pick_view
from imgcls.data.sources import discover
from imgcls.data.transforms import train_transform
from imgcls.faults import TrainingInterrupted
from imgcls.models import create_model, data_config
from imgcls.tasks.distill import DistillTask, TeacherAdapter, TeacherCache, distillation_loss
from imgcls.training import _teacher_cache, train_shards
from imgfactory import write_class_images
from test_faults_training import SignalAt, assert_same_run
from test_pseudo import _split_labels


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


# -- the teacher cache (--teacher-views) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test_resnet teacher trained one epoch on the same three classes as `image_folder`."""
    root = tmp_path_factory.mktemp("teacher")
    write_class_images(root / "data" / "train", per_class=12, seed=1)
    result = train(
        data=str(root / "data"), model="test_resnet", img_size=32, epochs=1, batch_size=8, warmup_epochs=0.0,
        num_workers=0, progress=False, runs_dir=str(root / "runs"), name="teacher", val_fraction=0.0, hflip=0.0,
    )  # fmt: skip
    return result.package_dir


class CountingTeacher(nn.Module):
    """Wraps the teacher to count the images it is run on (its padding rows, all zeros, left out)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images = 0
        self.shapes: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.flatten(1).abs().sum(1).gt(0).sum())
        self.shapes.add(x.shape[0])
        return self.inner(x)


class Spy(Callback):
    """Counts the teacher's images, records the (index, view) pairs the batches hold, can forget the cache."""

    def __init__(self, forget: bool = False) -> None:
        self.forget = forget
        self.pairs: set[tuple[int, int]] = set()
        self.items = 0
        self.counter: CountingTeacher | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counter = CountingTeacher(pl_module.teacher)
        pl_module.teacher = self.counter

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.forget:  # every step recomputes: the same view schedule without a cache
            pl_module.teacher_cache.clear()
        self.pairs |= set(zip(batch[2].tolist(), batch[3].tolist(), strict=True))
        self.items += len(batch[2])


def test_the_teacher_runs_once_per_view_and_the_cache_changes_nothing(
    image_folder: Path, tiny_train_kwargs: dict, teacher_package: Path
) -> None:
    options = {**tiny_train_kwargs, "epochs": 3, "teacher": str(teacher_package), "distill": "hard"}
    cached, forgetful = Spy(), Spy(forget=True)
    run = train(data=str(image_folder), name="cached", teacher_views=2, callbacks=[cached], **options)
    again = train(data=str(image_folder), name="forgetful", teacher_views=2, callbacks=[forgetful], **options)
    # 27 training images x 3 epochs; each image met both its views in the first two epochs, and only those.
    assert cached.items == 81 and len(cached.pairs) == 54
    assert cached.counter.images == 54
    assert forgetful.counter.images == 81 and forgetful.pairs == cached.pairs
    assert cached.counter.shapes == {8}  # one batch shape, whatever the misses (see TeacherCache)
    # Logits from the table are the ones the teacher gives on the view's pixels: the same steps, bit for bit.
    wa = load_file(run.package_dir / "model.safetensors")
    wb = load_file(again.package_dir / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)


def test_a_view_is_the_same_pixels_in_every_epoch(image_folder: Path) -> None:
    splits = discover(str(image_folder), val_fraction=0.0, seed=0)
    cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    transform = train_transform(cfg, hflip=0.5, crop_scale=0.2)
    views = ImageDataset(splits.train, transform, seed=3, views=3)
    plain = ImageDataset(splits.train, transform, seed=3)
    for index in (0, 5):
        by_view: dict[int, torch.Tensor] = {}
        for epoch in range(7):
            image, label, got_index, view = views[(index, epoch)]
            assert (got_index, label) == (index, splits.train[index].label)
            assert view == pick_view(3, epoch, index, 3)
            if view in by_view:
                assert torch.equal(image, by_view[view])
            by_view[view] = image
        assert sorted(by_view) == [0, 1, 2]  # any three epochs in a row show all three views
        assert not torch.equal(by_view[0], by_view[1])
        assert len(plain[(index, 0)]) == 2  # the normal path keeps (image, label)
        assert not torch.equal(plain[(index, 0)][0], plain[(index, 3)][0])


def test_cached_logits_are_the_teachers_on_those_pixels() -> None:
    torch.manual_seed(0)
    model = create_model("test_resnet", 3, img_size=32)
    adapter = TeacherAdapter(model, data_config(model), data_config(model))
    cache = TeacherCache(images=6, views=2, classes=3, batch_size=4)
    images = torch.randn(4, 3, 32, 32)
    index, view = torch.tensor([0, 5, 2, 7]), torch.tensor([1, 0, 1, 0])  # index 7: beyond the table, never kept
    expected = adapter(images).half().float()
    first, hit = cache(adapter, images, index, view)
    assert not hit.any()
    torch.testing.assert_close(first, expected, rtol=1e-3, atol=1e-3)
    # The same views in another order and batch: three from the table, index 7 and a new view from the teacher.
    again, hit = cache(adapter, images[[2, 0, 3, 1]], index[[2, 0, 3, 1]], torch.tensor([1, 1, 0, 0]))
    assert hit.tolist() == [True, True, False, True]
    torch.testing.assert_close(again[[0, 1, 3]], first[[2, 0, 1]], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a training step called without a Trainer
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_a_token_student_learns_from_cached_logits(mode: str) -> None:
    torch.manual_seed(0)
    student = create_model("deit_tiny_distilled_patch16_224", 3, img_size=32)
    teacher_model = create_model("lenet5", 3)
    teacher = TeacherAdapter(teacher_model, data_config(student), data_config(teacher_model))
    cache = TeacherCache(images=4, views=2, classes=3)
    task = DistillTask(student, 3, teacher=teacher, mode=mode, teacher_cache=cache)
    task.train()
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]), torch.arange(4), torch.tensor([0, 1, 1, 0]))
    loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert student.head_dist.weight.grad.abs().sum() > 0  # the distillation token learnt from the cached logits
    assert cache.filled.sum() == 4


def test_teacher_views_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="teacher_views: -1 must be >= 0"):
        TrainConfig(teacher="t", teacher_views=-1)
    with pytest.raises(ConfigError, match="teacher_views: caches a teacher's logits; give --teacher"):
        TrainConfig(teacher_views=2)
    for option in ("mixup", "cutmix"):
        with pytest.raises(ConfigError, match="teacher_views: not with mixup/cutmix"):
            TrainConfig(teacher="t", teacher_views=2, **{option: 0.2})
    with pytest.raises(ConfigError, match="teacher_views: not available when training from shards"):
        train_shards(TrainConfig(data=str(tmp_path / "manifest.json"), teacher="t", teacher_views=2))
    # 1.28M images x 4 views x 1,000 classes x 2 bytes = 9.5 GiB: over the limit, and the message says what fits.
    with pytest.raises(ConfigError, match=r"9\.5 GiB per process.*use --teacher-views 1 or fewer"):
        _teacher_cache(TrainConfig(teacher="t", teacher_views=4), images=1_281_167, classes=1000)
    fits = _teacher_cache(TrainConfig(teacher="t", teacher_views=4), images=1000, classes=10)
    assert fits.logits.shape == (1000, 4, 10)


def test_a_cached_run_records_its_views(image_folder: Path, tiny_train_kwargs: dict, teacher_package: Path) -> None:
    result = train(
        data=str(image_folder), name="views", teacher=str(teacher_package), teacher_views=2, **tiny_train_kwargs
    )
    assert TrainConfig.load(result.run_dir / "config.yaml").teacher_views == 2
    with (result.run_dir / "metrics.csv").open(encoding="utf-8") as f:
        header = f.readline()
    assert "teacher_cached" in header and "teacher_agreement" in header
    assert result.metrics["top1"] >= 0.5


def test_a_cached_run_resumes_exactly(image_folder: Path, tiny_train_kwargs: dict, teacher_package: Path) -> None:
    # The cache is not in the checkpoint: the resumed run recomputes it, and must take the very same steps.
    opts = {**tiny_train_kwargs, "epochs": 3, "batch_size": 4, "drop_rate": 0.2}
    opts |= {"teacher": str(teacher_package), "teacher_views": 2}
    full = train(data=str(image_folder), name="full", **opts)
    # 27 training images in batches of 4: 7 steps per epoch; step 11 is in the middle of epoch 1.
    with pytest.raises(TrainingInterrupted):
        train(data=str(image_folder), name="cut", callbacks=[SignalAt(11, signal.SIGTERM)], **opts)
    resumed = train(resume=Path(opts["runs_dir"]) / "cut")
    assert_same_run(full.run_dir, resumed.run_dir)


def test_pseudo_labelled_images_are_never_cached(
    image_folder: Path, tiny_train_kwargs: dict, teacher_package: Path, tmp_path: Path
) -> None:
    # Pseudo-labelled images follow the labelled ones and can change between epochs: the teacher sees them afresh.
    data, unlabeled = _split_labels(image_folder, tmp_path)
    spy = Spy()
    options = {**tiny_train_kwargs, "epochs": 3, "val_fraction": 0.0}
    train(data=str(data), unlabeled=str(unlabeled), pseudo_threshold=0.01, teacher=str(teacher_package),
          teacher_views=2, callbacks=[spy], **options)  # fmt: skip
    labelled = {(i, v) for i, v in spy.pairs if i < 12}
    assert len(labelled) == 12 * 2 and len(spy.pairs) > len(labelled)
    assert spy.counter.images == len(labelled) + (spy.items - 12 * 3)
