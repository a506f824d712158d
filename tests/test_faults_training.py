"""Training survives what kills it: SIGKILL at random moments, SIGTERM, a full disk, images deleted mid-run."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from imgcls import train
from imgcls.faults import CheckpointError, TrainingInterrupted, load_checkpoint
from test_training import read_epochs

EPOCH_KEYS = ("val_top1", "val_loss", "train_loss_epoch", "train_acc")


def options(tiny_train_kwargs: dict, **extra) -> dict:
    # Small batches: many steps per epoch, so that a signal lands in the middle of one.
    return {**tiny_train_kwargs, "epochs": 3, "batch_size": 4, "drop_rate": 0.2, **extra}


def assert_same_run(a: Path, b: Path) -> None:
    """Same epoch-level metrics (bit for bit) and the same weights in the model package."""
    rows_a, rows_b = read_epochs(a), read_epochs(b)
    assert sorted(rows_b) == sorted(rows_a)
    for epoch, row in rows_a.items():
        for key in EPOCH_KEYS:
            assert rows_b[epoch][key] == row[key], (epoch, key)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)


class SignalAt(Callback):
    """Sends this process a signal at the start of its Nth training step, as `kill` or Ctrl+C would."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum, self.seen = step, signum, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_mid_epoch_and_resume_is_exact(
    image_folder: Path, tiny_train_kwargs: dict, signum: signal.Signals
) -> None:
    opts = options(tiny_train_kwargs, num_workers=1)
    full = train(data=str(image_folder), name="full", **opts)
    # 27 training images in batches of 4: 7 steps per epoch; step 11 is in the middle of epoch 1.
    with pytest.raises(TrainingInterrupted) as info:
        train(data=str(image_folder), name="cut", callbacks=[SignalAt(11, signum)], **opts)
    cut = Path(opts["runs_dir"]) / "cut"
    assert f"resume with: imgcls train --resume {cut}" in str(info.value)
    assert info.value.exit_code == 128 + signum
    state = load_checkpoint(cut / "checkpoints" / "last.ckpt")
    assert state["epoch"] == 1 and state["global_step"] == 11  # saved after the step the signal arrived in
    resumed = train(resume=cut)
    assert_same_run(full.run_dir, resumed.run_dir)


def test_signal_in_the_last_step_lets_the_epoch_finish(image_folder: Path, tiny_train_kwargs: dict) -> None:
    opts = options(tiny_train_kwargs)
    with pytest.raises(TrainingInterrupted):
        train(data=str(image_folder), name="cut", callbacks=[SignalAt(7)], **opts)
    cut = Path(opts["runs_dir"]) / "cut"
    # Epoch 0 ran to its end, validation included; nothing of epoch 1 ran.
    assert sorted(read_epochs(cut)) == [0]
    assert "val_top1" in read_epochs(cut)[0]
    assert load_checkpoint(cut / "checkpoints" / "last.ckpt")["global_step"] == 7


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgcls", "train", *args]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}


def _train_args(tiny_train_kwargs: dict, data: Path, epochs: int) -> list[str]:
    kw = tiny_train_kwargs
    return [
        str(data),
        *("--model", kw["model"], "--img-size", str(kw["img_size"]), "--epochs", str(epochs)),
        *("--batch-size", "2", "--lr", str(kw["lr"]), "--warmup-epochs", "0", "--num-workers", "1"),
        *("--runs-dir", kw["runs_dir"], "--val-fraction", str(kw["val_fraction"]), "--hflip", "0"),
        *("--crop-scale", str(kw["crop_scale"]), "--drop-rate", "0.2", "--no-progress"),
    ]


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(
    image_folder: Path, tiny_train_kwargs: dict
) -> None:
    epochs = 6
    args = _train_args(tiny_train_kwargs, image_folder, epochs)
    runs = Path(tiny_train_kwargs["runs_dir"])
    rng = random.Random(11)
    kills = 0
    command = _cli(*args, "--name", "killed")
    for _attempt in range(8):
        proc = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ckpt = runs / "killed" / "checkpoints" / "last.ckpt"
        # Wait for a checkpoint newer than the one this attempt started from, then kill at a random moment.
        start_mtime = ckpt.stat().st_mtime if ckpt.exists() else 0.0
        deadline = time.monotonic() + 120
        while proc.poll() is None and (not ckpt.exists() or ckpt.stat().st_mtime == start_mtime):
            assert time.monotonic() < deadline, "training made no checkpoint"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no handler, no cleanup, no last words
            kills += 1
        _, stderr = proc.communicate(timeout=60)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, stderr.decode()
        # A killed run leaves a readable checkpoint and no temporary files behind in the run folder's checkpoints.
        load_checkpoint(ckpt)
        command = _cli("--resume", str(runs / "killed"))
    else:
        pytest.fail("the run did not finish after 8 attempts")
    assert kills >= 2, "the kills came too late to interrupt anything; the test proved nothing"
    leftovers = [
        p.name for p in (runs / "killed" / "checkpoints").iterdir() if p.name not in ("last.ckpt", "best.ckpt")
    ]
    assert leftovers == []
    full = subprocess.run(_cli(*args, "--name", "full"), env=_env(), capture_output=True, timeout=300)
    assert full.returncode == 0, full.stderr.decode()
    assert_same_run(runs / "full", runs / "killed")


def test_cli_sigterm_exits_143_with_a_resume_hint_and_no_traceback(image_folder: Path, tiny_train_kwargs: dict) -> None:
    runs = Path(tiny_train_kwargs["runs_dir"])
    proc = subprocess.Popen(
        _cli(*_train_args(tiny_train_kwargs, image_folder, 50), "--name", "stopped"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ckpt = runs / "stopped" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, loader workers included (systemd, Ctrl+C)
    _, stderr = proc.communicate(timeout=60)
    text = stderr.decode()
    assert proc.returncode == 143, text
    assert f"resume with: imgcls train --resume {runs / 'stopped'}" in text
    assert "Traceback" not in text and "exited unexpectedly" not in text
    resumed = train(resume=runs / "stopped", epochs=3)
    assert sorted(read_epochs(resumed.run_dir)) == [0, 1, 2]


FULL_DISK_SCRIPT = """
import resource, signal, sys
from imgcls.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


def test_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(
    image_folder: Path, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    first = train(data=str(image_folder), name="run", **{**tiny_train_kwargs, "epochs": 1})
    ckpt = first.run_dir / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    best_before = (ckpt.parent / "best.ckpt").read_bytes()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT, encoding="utf-8")
    # Any file larger than half a checkpoint cannot be written: the next checkpoint fails part-way.
    limit = len(before) // 2
    result = subprocess.run(
        [sys.executable, str(script), str(limit), "train", "--resume", str(first.run_dir), "--epochs", "3"],
        env=_env(),
        capture_output=True,
        timeout=300,
    )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "imgcls train: error:" in err and "cannot write (File too large)" in err and ".ckpt" in err
    assert f"imgcls train --resume {first.run_dir}" in err
    assert "Traceback" not in err
    assert ckpt.read_bytes() == before  # the previous good checkpoints, untouched
    assert (ckpt.parent / "best.ckpt").read_bytes() == best_before
    assert [p.name for p in ckpt.parent.iterdir() if p.name.startswith(".")] == []  # no half-written temp file
    assert load_checkpoint(ckpt)["epoch"] == 0
    # With space again, the run goes on from where it was.
    resumed = train(resume=first.run_dir, epochs=2)
    assert sorted(read_epochs(resumed.run_dir)) == [0, 1]


class DeleteAfterEpoch(Callback):
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            for path in self.files:
                path.unlink()


def test_images_deleted_mid_run_are_reported_and_skipped(
    image_folder: Path, tiny_train_kwargs: dict, caplog: pytest.LogCaptureFixture
) -> None:
    gone = sorted((image_folder / "train" / "cat").glob("*.png"))[:3]
    result = train(data=str(image_folder), callbacks=[DeleteAfterEpoch(gone)], **{**tiny_train_kwargs, "epochs": 2})
    assert sorted(read_epochs(result.run_dir)) == [0, 1]
    warned = " ".join(r.getMessage() for r in caplog.records)
    # Each deleted file that was in the training split is named in a warning (the others were in validation).
    trained = [p for p in gone if f"{p}: file not found — skipped" in warned]
    assert trained, warned
    assert (result.run_dir / "model" / "model.safetensors").is_file()


class _Payload:
    """Unpickling this creates a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_not_unpickled(
    image_folder: Path, tiny_train_kwargs: dict, tmp_path: Path
) -> None:
    run = train(data=str(image_folder), name="run", **{**tiny_train_kwargs, "epochs": 1}).run_dir
    marker = tmp_path / "pwned"
    ckpt = run / "checkpoints" / "last.ckpt"
    good = torch.load(ckpt, weights_only=True)
    torch.save({**good, "extra": _Payload(marker)}, ckpt)  # a real checkpoint with a payload riding along
    with pytest.raises(CheckpointError, match="refused to load"):
        train(resume=run, epochs=2)
    assert not marker.exists()
    # The same through the CLI: a clear error, exit status 2, still no marker.
    ckpt.write_bytes(pickle.dumps(_Payload(marker)))
    result = subprocess.run(_cli("--resume", str(run), "--epochs", "2"), env=_env(), capture_output=True, timeout=300)
    assert result.returncode == 2 and "refused to load" in result.stderr.decode(), result.stderr.decode()
    assert not marker.exists()
