"""Training options: one dataclass that is the CLI, the run's `config.yaml` and the Python API at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from imgcls.atomic import atomic_write_text

PRECISIONS = ("auto", "32-true", "bf16-mixed")
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("random", "balanced")
STRATEGIES = ("auto", "ddp", "fsdp")
HEADS = ("finetune", "linear-probe", "knn")


class ConfigError(ValueError):
    """An option with a value it cannot take; the message names the option."""


@dataclass
class TrainConfig:
    """Every option of a training run. Re-running a run's `config.yaml` reproduces it."""

    task: str = "multiclass"
    """`multiclass` (one label per image) or `multilabel` (any number of labels; CSV manifest)."""
    loss: str = "bce"
    """Multi-label loss: `bce` (binary cross-entropy) or `asl` (asymmetric loss)."""
    threshold_precision: float | None = None
    """Multi-label: tune each class's threshold for this precision (default: best F1 on validation)."""
    teacher: str | None = None
    """Distil from this teacher: a model package (folder, hf://, git+) or a timm model name with the same classes."""
    distill: str = "soft"
    """Distillation: `soft` (KL at temperature tau) or `hard` (the teacher's argmax)."""
    alpha: float = 0.5
    """Weight of the teacher's term in the loss (the labels get 1 - alpha)."""
    tau: float = 3.0
    """Temperature of soft distillation."""
    teacher_views: int = 0
    """Give each training image this many fixed augmented views and cache the teacher's logits per view (0 = off:
    a new crop every epoch, the teacher run on every batch). The teacher then runs on at most views x images
    images over the whole run; the cache takes images x views x classes x 2 bytes of RAM per process (at most 4 GiB).
    Not with mixup/cutmix or shards."""
    unlabeled: str | None = None
    """A folder of unlabelled images to learn from through pseudo-labels."""
    pseudo_threshold: float = 0.9
    """Only pseudo-labels with at least this confidence join training."""
    pseudo_share: float = 1.0
    """At most this many pseudo-labelled images per labelled training image (the most confident kept)."""
    pseudo_start: int = 1
    """Self-training (no teacher): relabel at the end of each epoch from this many epochs on."""
    head: str = "finetune"
    """`finetune` trains the network; `linear-probe` (logistic regression) or `knn` fit a head on frozen embeddings."""
    knn_k: int = 5
    """`knn` head: how many nearest training images vote."""
    probe_c: float = 1.0
    """`linear-probe` head: inverse L2 regularisation strength of the logistic regression."""
    data: str = "digits"
    """A folder of class subfolders, a CSV manifest (path,label), a built-in dataset name, or a shard manifest
    (`imgcls shard` output: manifest.json as a path or fsspec URL), streamed."""
    model: str = "resnet18"
    """Any timm model name, `hf-hub:ORG/NAME`, `lenet5` or `alexnet`."""
    pretrained: bool = False
    """Start from the model's pretrained weights, loaded the way timm does (needs the hub or its cache)."""
    weights: str | None = None
    """A local .safetensors file (or HF/timm model folder) to start from; the classifier head is replaced."""

    # preprocessing: defaults come from the model's pretrained config
    img_size: int | None = None
    """Input size in pixels (square); default: the model's."""
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_pct: float | None = None
    """Centre-crop fraction used at evaluation (1.0 = no crop)."""
    interpolation: str | None = None
    """Resize interpolation: bilinear, bicubic, nearest."""

    # augmentation
    hflip: float = 0.5
    """Probability of a horizontal flip (0 for digits, text, anything where left/right matters)."""
    crop_scale: float = 0.08
    """Smallest area fraction of the random-resized crop."""
    auto_augment: str | None = None
    """timm auto-augment policy, e.g. `rand-m9-mstd0.5-inc1` (RandAugment), `augmix-m5-w4-d2`, `original`."""
    random_erase: float = 0.0
    """Probability of erasing a random rectangle of each training image."""
    mixup: float = 0.0
    """Mixup alpha (0 = off)."""
    cutmix: float = 0.0
    """CutMix alpha (0 = off)."""

    # optimisation
    epochs: int = 10
    batch_size: int = 32
    """The global batch: split evenly over all processes (devices × nodes), so adding devices keeps the maths."""
    lr: float = 1e-3
    lr_batch: int | None = None
    """The global batch `lr` is meant for; the rate used is lr × batch_size / lr_batch (default: batch_size)."""
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    drop_rate: float = 0.0
    freeze_epochs: int = 0
    """Train only the classifier head for this many epochs first."""
    class_weights: str = "none"
    """`auto` weighs the loss by inverse class frequency."""
    sampler: str = "random"
    """`balanced` draws every class equally often."""
    patience: int | None = None
    """Stop early when validation top-1 has not improved for this many epochs."""
    precision: str = "auto"
    """`auto` uses bf16 autocast where the CPU/GPU supports it, else 32-true."""

    # data split and loading
    val_fraction: float = 0.1
    """Share of each class held out for validation when the data has no val/ folder."""
    allow_outside_root: bool = False
    """Let a CSV manifest list images outside its own folder (refused by default: a manifest is untrusted input)."""
    seed: int = 0
    num_workers: int | None = None
    """Data-loading processes; default: up to 4, one per spare core."""

    # run folder
    runs_dir: str = "runs"
    name: str | None = None
    """Run folder name; default: MODEL-DATA, numbered when it exists."""
    accelerator: str = "auto"
    devices: int | str = 1
    """Devices per node (processes per node with DDP)."""
    num_nodes: int = 1
    strategy: str = "auto"
    """`ddp` or `fsdp` across devices and nodes (launched by Lightning, torchrun or SLURM); `auto` picks."""
    limit_train_batches: int | float | None = field(default=None, metadata={"hidden": True})
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel"):
            raise ConfigError(f"task: {self.task!r} is not one of multiclass, multilabel")
        if self.loss not in ("bce", "asl"):
            raise ConfigError(f"loss: {self.loss!r} is not one of bce, asl")
        if self.task == "multilabel" and (self.mixup or self.cutmix):
            raise ConfigError("mixup/cutmix are not supported with task multilabel yet; set them to 0")
        if self.task == "multilabel" and self.sampler == "balanced":
            raise ConfigError("sampler balanced is for multiclass; use class_weights auto (positive-class weights)")
        if self.distill not in ("soft", "hard"):
            raise ConfigError(f"distill: {self.distill!r} is not one of soft, hard")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha: {self.alpha} must be between 0 and 1")
        if self.tau <= 0:
            raise ConfigError(f"tau: {self.tau} must be positive")
        if self.teacher_views < 0:
            raise ConfigError(f"teacher_views: {self.teacher_views} must be >= 0 (0 = no cache)")
        if self.teacher_views and not self.teacher:
            raise ConfigError("teacher_views: caches a teacher's logits; give --teacher too, or set it to 0")
        if self.teacher_views and (self.mixup or self.cutmix):
            raise ConfigError(
                "teacher_views: not with mixup/cutmix (set --mixup 0 --cutmix 0, or --teacher-views 0): cached logits "
                "belong to one image, and a teacher's logits on a mixed image are not the mix of its logits"
            )
        if self.teacher and self.task == "multilabel":
            raise ConfigError("teacher: distillation is for multiclass tasks")
        if self.unlabeled and self.task == "multilabel":
            raise ConfigError("unlabeled: pseudo-labels are for multiclass tasks")
        if not 0.0 < self.pseudo_threshold <= 1.0:
            raise ConfigError(f"pseudo_threshold: {self.pseudo_threshold} must be in (0, 1]")
        if self.pseudo_share < 0:
            raise ConfigError(f"pseudo_share: {self.pseudo_share} must be >= 0")
        if self.head not in HEADS:
            raise ConfigError(f"head: {self.head!r} is not one of {', '.join(HEADS)}")
        if self.head != "finetune" and (self.task == "multilabel" or self.teacher or self.unlabeled):
            raise ConfigError(f"head: {self.head} is for multiclass data without --teacher or --unlabeled")
        if self.knn_k < 1:
            raise ConfigError(f"knn_k: {self.knn_k} must be at least 1")
        if self.probe_c <= 0:
            raise ConfigError(f"probe_c: {self.probe_c} must be positive")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"class_weights: {self.class_weights!r} is not one of {', '.join(CLASS_WEIGHTS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: {self.val_fraction} must be in [0, 1)")
        if self.epochs < 1:
            raise ConfigError(f"epochs: {self.epochs} must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: {self.batch_size} must be at least 1")
        if self.lr_batch is not None and self.lr_batch < 1:
            raise ConfigError(f"lr_batch: {self.lr_batch} must be at least 1")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes: {self.num_nodes} must be at least 1")
        if isinstance(self.devices, str) and self.devices.strip().lstrip("-").isdigit():
            self.devices = int(self.devices)
        if not 0.0 <= self.random_erase <= 1.0:
            raise ConfigError(f"random_erase: {self.random_erase} must be between 0 and 1")
        if self.auto_augment:
            _check_auto_augment(self.auto_augment)
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"crop_scale: {self.crop_scale} must be in (0, 1]")
        if self.freeze_epochs < 0 or self.freeze_epochs > self.epochs:
            raise ConfigError(f"freeze_epochs: {self.freeze_epochs} must be between 0 and epochs ({self.epochs})")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise ConfigError(f"{name}: expected three numbers (R G B), got {list(value)}")
                setattr(self, name, tuple(float(v) for v in value))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("mean", "std"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def save(self, path: Path) -> None:
        # Atomic: a resume rewrites it, and a kill at that moment must not leave the run without its options.
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such config file") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of option: value")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}: {err}") from None


def _check_auto_augment(policy: str) -> None:
    """Fail at start-up, naming the option, on a policy timm cannot build (timm itself only asserts)."""
    from timm.data import create_transform  # here: the config module stays light unless the option is used

    try:
        create_transform(input_size=(3, 32, 32), is_training=True, auto_augment=policy)
    except Exception as err:  # timm reports a bad policy with assert/KeyError/ValueError
        detail = f" ({err})" if str(err) else ""
        raise ConfigError(
            f"auto_augment: {policy!r} is not a timm policy{detail}; "
            "try rand-m9-mstd0.5-inc1, augmix-m5-w4-d2 or original"
        ) from None
