"""Datasets, samplers and the LightningDataModule that feed training and evaluation."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from imgcls.data.images import ImageLoadError, load_image
from imgcls.data.seeding import mix_seed, pick_view, seed_sample
from imgcls.data.shards import ShardManifest, ShardStream
from imgcls.data.sources import DataSplits, Sample
from imgcls.data.transforms import eval_transform, train_transform
from imgcls.faults import ignore_stop_signals

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Samples decoded on demand. A file that breaks after the data check is skipped, not fatal.

    Indexed by `(index, epoch)` (from `EpochSampler`), the random augmentation of a sample is seeded by
    (seed, epoch, index): the same in every run, worker layout and resume, whatever ran before it.

    With `views` > 0 (`--teacher-views`), each image has that many fixed augmented views: epoch e shows view
    `pick_view(seed, e, index, views)`, seeded by (seed, view, index) so a view is the same pixels whenever it comes
    back, and items are `(image, label, index, view)` so a teacher's logits can be cached per (index, view).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        seed: int = 0,
        num_classes: int | None = None,
        views: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed
        self.num_classes = num_classes  # needed for multi-label samples, whose label is a tuple of indices
        self.views = views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...] | None:
        view = None
        if isinstance(key, tuple):
            index, epoch = key
            if self.views:
                view = pick_view(self.seed, epoch, index, self.views)
            seed_sample(mix_seed(self.seed, epoch if view is None else view, index))
        else:
            index = key
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except ImageLoadError as err:
            # The check before training already removed bad files; this catches files that were
            # deleted or damaged while training ran. One bad file must not kill epoch 7.
            log.warning("%s — skipped", err)
            return None
        if isinstance(sample.label, tuple):  # multi-label: a multi-hot float vector
            target = torch.zeros(self.num_classes or 0, dtype=torch.float32)
            target[list(sample.label)] = 1.0
            return self.transform(image), target
        if view is not None:
            return self.transform(image), sample.label, index, view
        return self.transform(image), sample.label


class IndexedDataset(ImageDataset):
    """Also returns each sample's index, so files that fail to load can be told apart from the rest."""

    def __getitem__(self, index: int):  # type: ignore[override]
        item = super().__getitem__(index)
        return None if item is None else (item[0], item[1], index)


def collate_skip_bad(batch: list[Any]) -> Any:
    """Collate, leaving out samples that failed to load; None when the whole batch failed."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return None
    return default_collate(batch)


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffles (or draws class-balanced) with a generator seeded by (seed, epoch); yields (index, epoch).

    Seeding per epoch, not once per process, is what makes a resumed run see exactly the batches
    an uninterrupted run would have seen. Under DDP every rank draws the same permutation and takes
    every `num_replicas`-th entry from `rank` on (the order padded by wrapping round to a multiple of
    `num_replicas`, so all ranks take equal steps): per-rank batches of B / num_replicas then make up
    exactly the global batches of B that one process would see, whatever the number of devices.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        weights: torch.Tensor | None = None,
        *,
        rank: int = 0,
        num_replicas: int = 1,
        start: tuple[int, int] | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.weights = weights
        self.rank = rank
        self.num_replicas = num_replicas
        # (epoch, samples): resuming mid-epoch, that epoch's order (this rank's slice) starts after the samples
        # already trained on.
        self.start = start
        self.epoch = start[0] if start else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()
        if self.num_replicas > 1 and order:
            padded = len(self) * self.num_replicas
            order = (order * (padded // len(order) + 1))[:padded][self.rank :: self.num_replicas]
        skip = 0
        if self.start is not None:
            if self.start[0] == self.epoch:
                skip = self.start[1]
            self.start = None  # only the epoch being resumed is shortened
        return iter([(i, self.epoch) for i in order[skip:]])


def class_counts(samples: Sequence[Sample], num_classes: int) -> torch.Tensor:
    counts = Counter(s.label for s in samples)
    return torch.tensor([counts.get(i, 0) for i in range(num_classes)], dtype=torch.float64)


def default_num_workers() -> int:
    # One spare core per worker, leaving one for the training step; decoding is cheap next to it.
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders over already-checked splits, with transforms from the model's data config."""

    def __init__(
        self,
        splits: DataSplits,
        data_cfg: dict[str, Any],
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 0,
        hflip: float = 0.5,
        crop_scale: float = 0.08,
        auto_augment: str | None = None,
        random_erase: float = 0.0,
        balanced: bool = False,
        teacher_views: int = 0,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.data_cfg = data_cfg
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.seed = seed
        self.augment = dict(hflip=hflip, crop_scale=crop_scale, auto_augment=auto_augment, random_erase=random_erase)
        self.balanced = balanced
        self.teacher_views = teacher_views  # > 0: training items carry (index, view) for the teacher's cache
        self.extra_train: list[Sample] = []  # pseudo-labelled images, replaced between epochs
        # (epoch, batches of it already trained) when resuming from a checkpoint; set by faults.GracefulStop.
        self.resume_at: tuple[int, int] | None = None

    def _loader(
        self, samples: Sequence[Sample], transform: Callable, sampler: Sampler | None = None, views: int = 0
    ) -> DataLoader:
        return DataLoader(
            ImageDataset(samples, transform, seed=self.seed, num_classes=len(self.splits.classes), views=views),
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_skip_bad,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            worker_init_fn=ignore_stop_signals,
        )

    def eval_transform(self) -> Callable:
        return eval_transform(self.data_cfg)

    def train_dataloader(self) -> DataLoader:
        samples = [*self.splits.train, *self.extra_train]
        weights = None
        if self.balanced:
            counts = class_counts(samples, len(self.splits.classes))
            weights = torch.tensor([1.0 / counts[s.label].item() for s in samples], dtype=torch.float64)
        # Our sampler splits the data across ranks itself (the Trainer runs with use_distributed_sampler=False).
        trainer = getattr(self, "trainer", None)
        rank, replicas = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        start = None
        if self.resume_at is not None:  # the first epoch of a resumed run; the loader is made once per fit
            start = (self.resume_at[0], self.resume_at[1] * self.batch_size)
            self.resume_at = None
        sampler = EpochSampler(len(samples), self.seed, weights, rank=rank, num_replicas=replicas, start=start)
        transform = train_transform(self.data_cfg, **self.augment)
        return self._loader(samples, transform, sampler, views=self.teacher_views)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, eval_transform(self.data_cfg))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, eval_transform(self.data_cfg))


class ShardDataModule(L.LightningDataModule):
    """Train/val loaders streaming the tar shards of a manifest (path or fsspec URL) through `ShardStream`.

    Training: a new seeded shard order and a shuffle buffer every epoch, augmentation seeded per (seed, epoch,
    sample); under DDP each rank streams its own contiguous range, padded so all ranks take the same number of
    steps. Validation: every rank reads the whole val split in order, each image once, as with image folders.
    The epoch length comes from the manifest's counts, so nothing is read to plan the LR schedule.
    """

    def __init__(
        self,
        manifest: ShardManifest,
        data_cfg: dict[str, Any],
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        seed: int = 0,
        hflip: float = 0.5,
        crop_scale: float = 0.08,
        auto_augment: str | None = None,
        random_erase: float = 0.0,
        buffer: int = 1000,
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.data_cfg = data_cfg
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.seed = seed
        self.augment = dict(hflip=hflip, crop_scale=crop_scale, auto_augment=auto_augment, random_erase=random_erase)
        self.buffer = buffer
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches done); set by faults.GracefulStop
        self.train_stream: ShardStream | None = None

    def _loader(self, stream: ShardStream, workers: int) -> DataLoader:
        return DataLoader(
            stream,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate_skip_bad,
            # Not persistent: workers hold a copy of the stream, and each epoch's copy must carry its epoch.
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals,
        )

    def _workers(self, split: str) -> int:
        # A worker reads its range from the front of a shard; more workers than shards would re-read prefixes.
        return min(self.num_workers, len(self.manifest.splits.get(split, [])))

    def set_epoch(self, epoch: int) -> None:
        if self.train_stream is not None:
            self.train_stream.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.train_stream = ShardStream(
            self.manifest.splits["train"],
            train_transform(self.data_cfg, **self.augment),
            seed=self.seed,
            shuffle=True,
            buffer=self.buffer,
            pad=world > 1,
            rank=rank,
            world=world,
            batch_size=self.batch_size,
        )
        # Lightning makes the first epoch's iterator before any epoch hook runs: start at the resumed epoch now.
        epoch, done = self.resume_at or ((trainer.current_epoch if trainer is not None else 0), 0)
        self.train_stream.set_epoch(epoch, start_batch=done)
        self.resume_at = None
        return self._loader(self.train_stream, self._workers("train"))

    def val_dataloader(self) -> DataLoader:
        stream = ShardStream(
            self.manifest.splits.get("val", []),
            eval_transform(self.data_cfg),
            rank=0,
            world=1,
            batch_size=self.batch_size,
        )
        return self._loader(stream, self._workers("val"))


class StreamEpochs(Callback):
    """Tells the shard stream each new epoch before Lightning starts that epoch's DataLoader workers."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, ShardDataModule):
            datamodule.set_epoch(trainer.current_epoch)
