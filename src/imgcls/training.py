"""`imgcls train`: data check → model → Lightning fit → model package → evaluation, all in one run folder."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console

from imgcls.atomic import atomic_write_text
from imgcls.config import ConfigError, TrainConfig
from imgcls.data.check import check_splits
from imgcls.data.datamodule import ImageDataModule, ShardDataModule, StreamEpochs, class_counts
from imgcls.data.multilabel import check_multilabel, discover_multilabel
from imgcls.data.multilabel import summary as multilabel_summary
from imgcls.data.shards import ShardManifest, is_shard_ref, load_manifest
from imgcls.data.sources import discover
from imgcls.faults import AtomicCheckpointIO, GracefulStop, TrainingInterrupted, load_checkpoint
from imgcls.models import create_model, data_config
from imgcls.package import save_package, set_package_info
from imgcls.tasks import MulticlassTask, MultilabelTask
from imgcls.tasks.distill import CACHE_LIMIT_BYTES, DistillTask, TeacherAdapter, TeacherCache, teacher_cache_bytes

log = logging.getLogger(__name__)
console = Console(stderr=True)


@dataclass
class RunResult:
    """Where a training run put things, and how it scored."""

    run_dir: Path
    package_dir: Path
    metrics: dict[str, Any]
    eval_split: str
    global_rank: int = 0
    """Non-zero in the other processes of a distributed run: they write nothing and report nothing."""


def auto_precision(accelerator: str) -> str:
    """bf16 autocast where the hardware runs it natively (2-3x on AVX-512-BF16/AMX CPUs), else fp32."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    try:
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native_bf16 = False
    return "bf16-mixed" if native_bf16 else "32-true"


# Rank 0 names the run folder and hands it to the processes Lightning starts for it (they inherit the environment).
_RUN_DIR_ENV = "IMGCLS_RUN_DIR"


def _world_size(config: TrainConfig) -> int:
    """Processes the run will have, as far as the config says (devices may be 'auto': then the Trainer knows)."""
    devices = config.devices if isinstance(config.devices, int) and config.devices > 0 else 1
    return devices * config.num_nodes


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    return keep.strip("-.") or "run"


def new_run_dir(config: TrainConfig) -> Path:
    """`runs/NAME`, numbered `NAME-2`, `NAME-3` … when it exists, so no run is overwritten."""
    base = Path(config.runs_dir)
    data = Path(str(config.data))
    # A shard manifest is named by its folder: `shards/manifest.json` → MODEL-shards.
    stem = data.parent.name if data.name == "manifest.json" and data.parent.name else data.stem
    name = config.name or f"{_slug(config.model.split('/')[-1])}-{_slug(stem)}"
    candidate, n = base / name, 1
    while candidate.exists():
        n += 1
        candidate = base / f"{name}-{n}"
    return candidate


def quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of the user's terminal; warnings and errors still show."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Both data modules resume mid-epoch themselves (faults.GracefulStop hands them the batches done).
    warnings.filterwarnings("ignore", message=".*ended before the epoch ended and your dataloader is not resumable.*")
    # ShardStream's length is exact with any number of workers (it splits work in whole batches).
    warnings.filterwarnings("ignore", message=r".*Your `IterableDataset` has `__len__` defined.*")
    # A distillation teacher is frozen in eval mode on purpose (TeacherAdapter.train keeps it there).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    # Expected when resuming: the run's own checkpoints are there.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def merge_metrics(run_dir: Path) -> Path:
    """Join the per-session logs into `metrics.csv`; a later session replaces the epochs it re-ran."""
    sessions = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    tables = []
    for path in sessions:
        with path.open(newline="", encoding="utf-8") as f:
            tables.append(list(csv.DictReader(f)))
    rows: list[dict[str, str]] = []
    for i, table in enumerate(tables):
        later = [t for t in tables[i + 1 :] if t]
        cutoff = min((int(r["epoch"]) for r in later[0] if r.get("epoch")), default=None) if later else None
        rows += [r for r in table if cutoff is None or not r.get("epoch") or int(r["epoch"]) < cutoff]
    columns: list[str] = []
    for table in tables:
        for row in table[:1]:
            columns += [c for c in row if c not in columns]
    out = run_dir / "metrics.csv"
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, text.getvalue())
    return out


def _setup_pseudo_labels(
    config: TrainConfig, splits: Any, datamodule: ImageDataModule, task: MulticlassTask, data_cfg: dict[str, Any]
) -> list[Callback]:
    """Fixed teacher: label the unlabelled images once now. No teacher: self-training through a callback."""
    import math

    from imgcls.pseudo import SelfTraining, pseudo_label, unlabeled_images

    files = unlabeled_images(config.unlabeled)
    limit = int(config.pseudo_share * len(splits.train))
    # The LR schedule spans the largest epoch: labelled images plus every pseudo-label allowed.
    task.steps_per_epoch = math.ceil((len(splits.train) + min(limit, len(files))) / config.batch_size)
    if config.teacher:
        teacher = (
            task.teacher if isinstance(task, DistillTask) else load_teacher(config.teacher, splits.classes, data_cfg)
        )
        samples, counts = pseudo_label(
            teacher, files, datamodule.eval_transform(), threshold=config.pseudo_threshold, limit=limit
        )
        datamodule.extra_train = samples
        per_class = ", ".join(f"{splits.classes[c]} {n}" for c, n in sorted(counts.items()))
        console.print(
            f"teacher pseudo-labelled {len(samples)} of {len(files)} unlabelled images "
            f"(score >= {config.pseudo_threshold}): {per_class or 'none'}"
        )
        return []
    console.print(f"self-training on {len(files)} unlabelled images from epoch {config.pseudo_start}")
    return [
        SelfTraining(
            files,
            datamodule,
            threshold=config.pseudo_threshold,
            share=config.pseudo_share,
            start=config.pseudo_start,
            classes=splits.classes,
            report=console.print,
        )
    ]


def load_teacher(ref: str, labels: list[str], student_cfg: dict[str, Any]) -> TeacherAdapter:
    """A frozen teacher over the student's classes: a model package (its labels are matched by name) or a timm model."""
    from imgcls.package import load_package

    is_package = ref.startswith(("hf://", "git+")) or Path(ref).is_dir()
    if is_package:
        package = load_package(ref)
        teacher, teacher_cfg = package.model, package.data_config
        if sorted(package.labels) != sorted(labels):
            missing = sorted(set(labels) - set(package.labels))
            extra = sorted(set(package.labels) - set(labels))
            raise ConfigError(
                f"teacher {ref}: its labels differ from the data's (missing: {', '.join(missing) or '-'}; "
                f"extra: {', '.join(extra) or '-'}); a teacher must know exactly the student's classes"
            )
        if package.labels != labels:  # same classes, other order: permute the teacher's outputs
            order = torch.tensor([package.labels.index(name) for name in labels])
            teacher = _Reordered(teacher, order)
    else:
        teacher = create_model(ref, len(labels), pretrained=True)
        teacher_cfg = data_config(teacher)
    console.print(f"distilling from teacher {ref}")
    return TeacherAdapter(teacher, student_cfg, teacher_cfg)


def _teacher_cache(config: TrainConfig, images: int, classes: int) -> TeacherCache:
    """The table of the teacher's logits per (training image, view), refused when it would not fit in memory."""
    size = teacher_cache_bytes(images, config.teacher_views, classes)
    if size > CACHE_LIMIT_BYTES:
        most = CACHE_LIMIT_BYTES // teacher_cache_bytes(images, 1, classes)
        raise ConfigError(
            f"teacher_views: {config.teacher_views} views x {images:,} images x {classes:,} classes of float16 "
            f"logits take {size / 2**30:.1f} GiB per process, over the {CACHE_LIMIT_BYTES / 2**30:.0f} GiB limit; "
            + (f"use --teacher-views {most} or fewer" if most else "use --teacher-views 0 (no cache)")
        )
    return TeacherCache(images, config.teacher_views, classes)


class _Reordered(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, order: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("order", order, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.order]


def _multiclass_task(
    model: torch.nn.Module, config: TrainConfig, train_counts: torch.Tensor, common: dict[str, Any]
) -> MulticlassTask:
    weights = _class_weight_tensor(train_counts) if config.class_weights == "auto" else None
    return MulticlassTask(
        model, len(train_counts), class_weights=weights, mixup=config.mixup, cutmix=config.cutmix, **common
    )


def train_shards(config: TrainConfig) -> ShardManifest:
    """The shard manifest to stream from, once the options that need every image up front are refused."""
    ref = str(config.data)
    if ref.endswith(".tar"):
        raise ConfigError(
            f"data: {ref} is a single tar shard; training takes the manifest.json that `imgcls shard` writes "
            "(its counts split the work and size the epochs)"
        )
    refused = [
        (config.task == "multilabel", "task multilabel", "shards hold one label per image; use a CSV manifest"),
        (
            config.sampler == "balanced",
            "sampler balanced",
            "a stream reads each image once per epoch and cannot draw by class; use class_weights auto",
        ),
        (bool(config.unlabeled), "unlabeled", "pseudo-labels need the image folder; train from it instead"),
        (
            config.teacher_views > 0,
            "teacher_views",
            "the teacher's cache is keyed by image index, which a stream does not have; train from the image folder",
        ),
        (
            config.head != "finetune",
            f"head {config.head}",
            "few-shot heads embed all training images at once; train from the image folder",
        ),
    ]
    for bad, option, why in refused:
        if bad:
            raise ConfigError(f"{option}: not available when training from shards ({ref}): {why}")
    manifest = load_manifest(ref)
    if not manifest.count("train"):
        raise ConfigError(f"data: {manifest.url} has no train split (splits: {', '.join(manifest.splits) or 'none'})")
    return manifest


def _shard_summary(manifest: ShardManifest) -> str:
    counts = ", ".join(f"{manifest.count(name):,} {name}" for name in manifest.splits)
    skipped = len(manifest.raw.get("skipped_files", []))
    return (
        f"Streaming shards of {manifest.url}: {counts} images, {len(manifest.classes)} classes. "
        f"They were checked when `imgcls shard` wrote them ({skipped:,} unreadable files left out then); "
        "images are not re-read before training, and any that fail to decode are skipped and logged."
    )


def _pos_weight(splits: Any, num_classes: int) -> torch.Tensor:
    """Negatives / positives per label in train (capped), so a rare label's positives weigh more in BCE."""
    positives = torch.zeros(num_classes, dtype=torch.float64)
    for sample in splits.train:
        positives[list(sample.label)] += 1
    negatives = len(splits.train) - positives
    return (negatives / positives.clamp(min=1)).clamp(max=100.0).float()


def _tuned_thresholds(clf: Any, val: list, config: TrainConfig) -> list[float]:
    """Per-class thresholds tuned on the validation split (0.5 everywhere without one)."""
    from imgcls.evaluation import collect_predictions
    from imgcls.metrics import tune_thresholds

    if not val:
        return [0.5] * len(clf.labels)
    preds = collect_predictions(clf, val, num_workers=config.num_workers, progress=False)
    thresholds = tune_thresholds(preds.logits.sigmoid(), preds.targets, target_precision=config.threshold_precision)
    return [round(t, 6) for t in thresholds]


def _class_weight_tensor(counts: torch.Tensor) -> torch.Tensor:
    # Inverse frequency, normalised so a balanced dataset gets weight 1 everywhere (sklearn's "balanced").
    counts = counts.clamp(min=1)
    return (counts.sum() / (len(counts) * counts)).float()


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    callbacks: list[Callback] | None = None,
    **overrides: Any,
) -> RunResult:
    """Fine-tune a model and write a run folder with the model package and its evaluation.

    Args:
        config: all options; keyword `overrides` replace single fields (`train(data="flowers", epochs=5)`).
        resume: a run folder to continue from its `checkpoints/last.ckpt` with its own `config.yaml`
            (overrides such as `epochs` still apply).
        callbacks: extra Lightning callbacks.

    Returns:
        The run folder, the package folder, and the metrics on the test split (or validation split).
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: no config.yaml; --resume takes a run folder such as runs/NAME")
        config = dataclasses.replace(TrainConfig.load(run_dir / "config.yaml"), **overrides)
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"{ckpt_path}: no checkpoint to resume from")
    else:
        config = dataclasses.replace(config or TrainConfig(), **overrides)
        run_dir = new_run_dir(config)
        ckpt_path = None

    quiet_lightning()
    L.seed_everything(config.seed, workers=True, verbose=False)
    # Every process of a distributed run (Lightning, torchrun or SLURM starts them) runs this function; only
    # rank 0 writes the run folder. The others check the same data the same way, so they hold the same splits.
    zero = rank_zero_only.rank == 0
    if not zero and resume is None and os.environ.get(_RUN_DIR_ENV):
        run_dir = Path(os.environ[_RUN_DIR_ENV])  # the folder rank 0 chose, passed to the processes it starts
    multilabel = config.task == "multilabel"
    progress = config.progress and zero
    manifest = train_shards(config) if is_shard_ref(config.data) else None
    splits: Any = None
    if manifest is not None:
        # Streaming cannot check every image up front: the check ran when the shards were written.
        if zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                run_dir / "data_check.json", json.dumps(manifest.check_report(), indent=2, ensure_ascii=False) + "\n"
            )
            console.print(_shard_summary(manifest), markup=False, highlight=False)
    elif multilabel:
        splits = discover_multilabel(
            config.data,
            val_fraction=config.val_fraction,
            seed=config.seed,
            allow_outside_root=config.allow_outside_root,
        )
        splits, ml_report = check_multilabel(splits, progress=progress)
        if zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "data_check.json", json.dumps(ml_report, indent=2, ensure_ascii=False))
            console.print(multilabel_summary(ml_report))
    else:
        splits = discover(
            config.data,
            val_fraction=config.val_fraction,
            seed=config.seed,
            allow_outside_root=config.allow_outside_root,
        )
        splits, report = check_splits(splits, progress=progress)
        if zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            report.write_json(run_dir / "data_check.json")
            # markup=False: "[train]" in the summary is text, not a Rich style tag
            console.print(report.summary(), markup=False, highlight=False)
    if zero:
        config.save(run_dir / "config.yaml")
        os.environ[_RUN_DIR_ENV] = str(run_dir)
    if config.head != "finetune":  # few-shot: a head fitted on frozen embeddings, no Lightning loop
        from imgcls.fewshot import fit_head

        return fit_head(config, splits, run_dir)

    labels = manifest.classes if manifest is not None else splits.classes
    n_train, n_val = (
        (manifest.count("train"), manifest.count("val"))
        if manifest is not None
        else (len(splits.train), len(splits.val))
    )
    model = create_model(
        config.model,
        len(labels),
        pretrained=config.pretrained,
        weights=config.weights,
        drop_rate=config.drop_rate,
        img_size=config.img_size,
    )
    data_cfg = data_config(
        model,
        input_size=config.img_size,
        mean=config.mean,
        std=config.std,
        crop_pct=config.crop_pct,
        interpolation=config.interpolation,
    )
    # Linear scaling: lr is meant for a global batch of lr_batch images (default: the batch itself).
    lr = config.lr * config.batch_size / config.lr_batch if config.lr_batch else config.lr
    common = dict(
        lr=lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        label_smoothing=config.label_smoothing,
        freeze_epochs=config.freeze_epochs,
        seed=config.seed,
    )
    if multilabel:
        pos_weight = _pos_weight(splits, len(labels)) if config.class_weights == "auto" else None
        task: MulticlassTask = MultilabelTask(model, len(labels), loss=config.loss, pos_weight=pos_weight, **common)
    elif config.teacher:
        task = DistillTask(
            model,
            len(labels),
            teacher=load_teacher(config.teacher, labels, data_cfg),
            mode=config.distill,
            alpha=config.alpha,
            tau=config.tau,
            teacher_cache=_teacher_cache(config, len(splits.train), len(labels)) if config.teacher_views else None,
            mixup=config.mixup,
            cutmix=config.cutmix,
            **common,
        )
    else:
        train_counts = (
            torch.tensor(manifest.class_counts("train"), dtype=torch.float64)
            if manifest is not None
            else class_counts(splits.train, len(labels))
        )
        task = _multiclass_task(model, config, train_counts, common)
    loading = dict(
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
        hflip=config.hflip,
        crop_scale=config.crop_scale,
        auto_augment=config.auto_augment,
        random_erase=config.random_erase,
    )
    datamodule: ImageDataModule | ShardDataModule
    if manifest is not None:
        datamodule = ShardDataModule(manifest, data_cfg, **loading)
    else:
        datamodule = ImageDataModule(
            splits,
            data_cfg,
            balanced=config.sampler == "balanced",
            teacher_views=config.teacher_views,
            **loading,
        )

    pseudo_callbacks: list[Callback] = []
    if config.unlabeled:
        pseudo_callbacks = _setup_pseudo_labels(config, splits, datamodule, task, data_cfg)

    has_val = n_val > 0
    ckpt_dir = run_dir / "checkpoints"
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=task.monitor if has_val else None,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    stopper = GracefulStop(run_dir)
    all_callbacks: list[Callback] = [checkpoint, stopper, *pseudo_callbacks, *(callbacks or [])]
    if manifest is not None:
        all_callbacks.append(StreamEpochs())
    if config.patience is not None and has_val:
        all_callbacks.append(EarlyStopping(monitor=task.monitor, mode="max", patience=config.patience))
    if progress:
        all_callbacks.append(RichProgressBar(leave=True) if sys.stderr.isatty() else TQDMProgressBar(refresh_rate=20))
    precision = auto_precision(config.accelerator) if config.precision == "auto" else config.precision
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        # EpochSampler gives each rank its slice of the same seeded order (exact resume, any device count).
        use_distributed_sampler=False,
        sync_batchnorm=_world_size(config) > 1,
        precision=precision,
        callbacks=all_callbacks,
        # Checkpoints are written atomically (a kill leaves the previous one) and read as weights only.
        plugins=[AtomicCheckpointIO()],
        # One log folder per session (a resume starts a new one); merge_metrics() joins them.
        logger=CSVLogger(save_dir=run_dir, name="logs"),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, n_train // config.batch_size)),
        num_sanity_val_steps=0,
        limit_val_batches=None if has_val else 0,
        limit_train_batches=config.limit_train_batches,
        # Pseudo-labels change the training set between epochs.
        reload_dataloaders_every_n_epochs=1 if config.unlabeled else 0,
    )
    if config.batch_size % trainer.world_size:
        raise ConfigError(
            f"batch_size: {config.batch_size} does not split evenly over {trainer.world_size} processes "
            f"(devices × nodes); the batch is global, so use a multiple of {trainer.world_size}"
        )
    datamodule.batch_size = config.batch_size // trainer.world_size
    if isinstance(task, DistillTask) and task.teacher_cache is not None:
        task.teacher_cache.batch_size = datamodule.batch_size  # the teacher's one batch shape (see TeacherCache)
    distributed = (
        f"; {trainer.world_size} processes × {datamodule.batch_size} images, lr {lr:g}"
        if trainer.world_size > 1
        else ""
    )
    if zero:
        console.print(
            f"training [bold]{config.model}[/] on {n_train:,} images ({len(labels)} classes), "
            f"validating on {n_val:,}; precision {precision}{distributed}; run folder {run_dir}"
        )
    started = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except BaseException:
        if trainer.is_global_zero:
            with contextlib.suppress(OSError):  # a full disk must not hide the error that stopped training
                merge_metrics(run_dir)
        raise
    train_seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return RunResult(run_dir, run_dir / "model", {}, "", global_rank=trainer.global_rank)
    merge_metrics(run_dir)
    if stopper.requested is not None:  # the signal came after the last step: training is complete, the rest is not
        raise TrainingInterrupted(run_dir, stopper.requested)

    # The package holds the best epoch (by validation top-1), or the last one without validation.
    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else ckpt_dir / "last.ckpt"
    state = load_checkpoint(best_path)
    task.load_state_dict(state["state_dict"])
    best_epoch = int(state.get("epoch", config.epochs - 1)) + 1

    from imgcls.evaluation import evaluate, evaluate_samples
    from imgcls.predict import Classifier

    has_test = manifest.count("test") > 0 if manifest is not None else bool(splits.test)
    eval_split = "test" if has_test else ("val" if has_val else "train")
    info: dict[str, Any] = {
        "training": {
            "data": str(config.data),
            "init": (
                f"pretrained weights of {config.model}"
                if config.pretrained
                else (f"weights file {Path(config.weights).name}" if config.weights else "random initialisation")
            ),
            "teacher": config.teacher,
            "train_images": n_train,
            "val_images": n_val,
            "epochs": config.epochs,
            "best_epoch": best_epoch,
            "precision": precision,
            "seconds": round(train_seconds, 1),
        }
    }
    package_dir = save_package(
        model.cpu().eval(), run_dir / "model", labels=labels, data_config=data_cfg, info=info, task=config.task
    )
    clf = Classifier.load(package_dir, backend="torch")
    if multilabel:
        info["thresholds"] = _tuned_thresholds(clf, splits.val, config)
        info["threshold_rule"] = (
            f"precision >= {config.threshold_precision}" if config.threshold_precision else "best F1 on validation"
        )
        set_package_info(package_dir, thresholds=info["thresholds"])
    if manifest is not None:  # streamed once through the same reader `imgcls evaluate` uses for shards
        metrics = evaluate(
            clf, manifest.url, split=eval_split, out=run_dir / "eval", num_workers=config.num_workers, progress=False
        )
    else:
        metrics = evaluate_samples(
            clf,
            getattr(splits, eval_split),
            out=run_dir / "eval",
            num_workers=config.num_workers,
            progress=config.progress,
            thresholds=info.get("thresholds"),
        )
    metrics["split"] = eval_split
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    # Store the headline numbers in the package so its card and config say how good it is.
    if multilabel:
        info["evaluation"] = {
            "split": eval_split,
            "images": metrics["num_samples"],
            "mAP": round(metrics["map"]["macro"] or 0.0, 6),
            "micro_mAP": round(metrics["map"]["micro"] or 0.0, 6),
            "macro_f1": round(metrics["macro"]["f1"], 6),
            "example_f1": round(metrics["example_f1"], 6),
        }
    else:
        info["evaluation"] = {
            "split": eval_split,
            "images": metrics["num_samples"],
            "top1": round(metrics["top1"], 6),
            "top5": round(metrics["top5"], 6),
            "macro_f1": round(metrics["macro"]["f1"], 6),
        }
    save_package(model, package_dir, labels=labels, data_config=data_cfg, info=info, task=config.task)
    return RunResult(run_dir=run_dir, package_dir=package_dir, metrics=metrics, eval_split=eval_split)
