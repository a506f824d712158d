"""Surviving faults in training: crash-safe checkpoints, a clean stop on SIGTERM/Ctrl+C, safe checkpoint loading.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file, fsyncs it and renames it over the old
  one, so a kill at any moment (SIGKILL included) leaves the previous good checkpoint; a full disk is a clear
  :class:`CheckpointError`, not a truncated file. It loads checkpoints with ``weights_only=True`` only: a checkpoint
  from elsewhere that holds pickled objects is refused, never unpickled.
- :class:`GracefulStop` turns SIGTERM and SIGINT (Ctrl+C) into "save a checkpoint after this step, then stop";
  :func:`~imgcls.training.train` then raises :class:`TrainingInterrupted`, whose message says how to resume.
  The exit status of `imgcls train` is then 128 + the signal number (130 for Ctrl+C, 143 for SIGTERM), as for any
  Unix program stopped by a signal, so that a job scheduler never mistakes a stopped run for a finished one.
"""

from __future__ import annotations

import io
import pickle
import signal
import sys
import threading
import zipfile
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from imgcls.atomic import WriteError, atomic_write_bytes

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "GracefulStop",
    "TrainingInterrupted",
    "ignore_stop_signals",
    "load_checkpoint",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written (disk full) or must not be read (not ours, or damaged)."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; the message says how to resume."""

    def __init__(self, run_dir: Path, signum: int) -> None:
        self.run_dir = run_dir
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped on {name}; the last checkpoint is {run_dir / 'checkpoints' / 'last.ckpt'}\n"
            f"resume with: imgcls train --resume {run_dir}"
        )


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint as tensors and plain values only; anything that would need unpickling code is refused."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused to load: the checkpoint holds pickled objects other than tensors, and unpickling them "
            f"could run code ({first}). Only resume from checkpoints that imgcls wrote."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO made crash-safe (temp file + fsync + rename) and pickle-safe (weights only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getbuffer())
        except (WriteError, OSError) as err:
            run_dir = path.parent.parent
            raise CheckpointError(
                f"{err}. Training stopped; free some disk space, then resume with: imgcls train --resume {run_dir}"
            ) from None

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is forced: a checkpoint is data, and --resume may point at a file from anywhere.
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGINT/SIGTERM and leave stopping to the main process.

    Ctrl+C reaches every process of the terminal's group; a worker that died of it would make the main process fail
    with "DataLoader worker exited unexpectedly" before it could save. Ignoring is safe: a worker still exits when the
    main process shuts the loader down, or dies.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class GracefulStop(Callback):
    """On SIGTERM or SIGINT: finish the current step, save `last.ckpt`, stop with :class:`TrainingInterrupted`.

    A second signal stops at once (KeyboardInterrupt), without saving. A signal in the last step of an epoch lets
    the epoch finish (validation and its checkpoint), then stops before the next one starts, so that resuming never
    skips a validation.

    Args:
        run_dir: the run folder; the checkpoint goes to `run_dir/checkpoints/last.ckpt`.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._pending_sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def state_key(self) -> str:
        return "GracefulStop"

    # -- signals --------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            self._restore_handlers()
            raise KeyboardInterrupt
        self.requested = signum
        print(
            f"\nimgcls train: {signal.Signals(signum).name} received; saving a checkpoint after this step "
            "(send it again to stop at once, without saving)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not earlier: Lightning installs its own SIGTERM handler just before training starts, and its handler
        # stops at the end of the batch without saving; ours replaces it for the length of training.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # -- stopping -------------------------------------------------------------------------------
    def _stop(self) -> None:
        assert self.requested is not None
        raise TrainingInterrupted(self.run_dir, self.requested)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._pending_sums:
            _add_epoch_sums(trainer, self._pending_sums)
        if self.requested is None or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        trainer.save_checkpoint(self.run_dir / "checkpoints" / "last.ckpt")
        self._stop()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The previous epoch's own checkpoint is the place to resume from; nothing of this epoch has run yet.
        _flush_loggers(trainer)
        if self.requested is not None:
            self._stop()

    # -- resuming in the middle of an epoch ---------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Rows logged before a checkpoint must be on disk with it, or a kill right after would lose them for good.
        _flush_loggers(trainer)

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        total = trainer.num_training_batches
        if isinstance(total, int) and 0 < done < total:
            return {"epoch": trainer.current_epoch, "batches_done": done, "epoch_sums": _epoch_sums(trainer)}
        # Saved at an epoch's end: the next epoch starts from its first batch.
        return {"epoch": trainer.current_epoch + (1 if done else 0), "batches_done": 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning reads the checkpoint before it first asks for the train loader (to count the steps of the LR
        # schedule). The data module then starts the sampler at the right epoch (Lightning sets it only after the
        # loader's workers have drawn their first indices) and, after a mid-epoch checkpoint, after the batches
        # already trained on, so that no image is seen twice or skipped.
        if "epoch" not in state_dict:
            return
        self._pending_sums = dict(state_dict.get("epoch_sums") or {})
        datamodule = getattr(getattr(self, "_trainer", None), "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "resume_at"):
            datamodule.resume_at = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer


def _epoch_sums(trainer: L.Trainer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The running sums behind this epoch's averages (train_loss_epoch, train_acc) so far.

    Lightning keeps them out of checkpoints; without them an epoch resumed in the middle would average only the
    batches after the resume. This reads Lightning's result collection (private, hence the defensive getattr).
    """
    sums = {}
    for key, metric in (getattr(trainer, "_results", None) or {}).items():
        meta = getattr(metric, "meta", None)
        if key.startswith("training_step.") and meta is not None and meta.on_epoch and meta.is_mean_reduction:
            sums[key] = (metric.value.detach().cpu().clone(), metric.cumulated_batch_size.detach().cpu().clone())
    return sums


def _add_epoch_sums(trainer: L.Trainer, pending: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Add the sums of the batches before a mid-epoch checkpoint to the resumed epoch's (once each metric exists)."""
    results = getattr(trainer, "_results", None) or {}
    for key in [k for k in pending if k in results]:
        value, count = pending.pop(key)
        metric = results[key]
        metric.value = metric.value + value.to(metric.value)
        metric.cumulated_batch_size = metric.cumulated_batch_size + count.to(metric.cumulated_batch_size)


def _flush_loggers(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        logger.save()
